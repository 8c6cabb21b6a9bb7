"""Process lifecycle: open the store, compile the table, bind, serve, stop."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import replace
from functools import partial
from collections.abc import Callable
from typing import Any

from sipgate.config import Config, store_limits
from sipgate.metrics import EdgeStats, serve_metrics
from sipgate.reload import Reloader
from sipgate.store import open_store
from sipgate.store.seed import load_seed
from sipgate.transport import Edge, EdgeProtocol, open_listener

__all__ = ["Server", "new_event_loop", "run"]

log = logging.getLogger("sipgate.server")


def _prepare_store(store: Any, seed: str | None, config: Config) -> None:
    """Apply the seed file (if any) and make sure the config's accounts exist."""
    if seed:
        log.info("seed %s: %s", seed, load_seed(store, seed))
    for account in config.accounts:
        store.ensure_account(account.sid, account.friendly_name)


class Server:
    """One sipgate edge process: listeners, table reloader, metrics."""

    def __init__(self, config: Config, *, seed: str | None = None,
                 sockets: list[Any] | None = None, worker: int = 0) -> None:
        self.config = config
        self.seed = seed or config.seed
        # Pre-bound SIP sockets, one per listener (--workers shares them).
        self.sockets = sockets
        self.worker = worker
        self.stats = EdgeStats()
        self.edge = Edge(config.sip, self.stats)
        self.store: Any = None
        self.reloader: Reloader | None = None
        self.transports: list[asyncio.DatagramTransport] = []
        self.protocols: list[EdgeProtocol] = []
        self.metrics_server: Any = None
        self.metrics_port: int | None = None
        self.api_runner: Any = None
        self.api_port: int | None = None

    @property
    def sip_addresses(self) -> list[tuple[str, int]]:
        """(host, port) of every bound SIP listener."""
        return [(p.listener.host, p.listener.port) for p in self.protocols]

    async def start(self) -> None:
        """Open the store, apply the seed, compile the table, then bind.

        The listeners are bound only once a table is in force, so the first
        datagram is already judged by the stored lists.
        """
        loop = asyncio.get_running_loop()
        self.store = await loop.run_in_executor(
            None, partial(open_store, self.config.store.url, **store_limits(self.config.store)))
        # Seed and accounts before the first compile: a write right after
        # it would force the first API change into another compile.
        await loop.run_in_executor(None, _prepare_store, self.store, self.seed, self.config)
        self.reloader = Reloader(self.store, self.edge.install, self.config.store.poll_interval,
                                 current=lambda: self.edge.table)
        await self.reloader.refresh(force=True)
        table = self.edge.table
        log.info("admission table generation %d: %d trunks, %d entries",
                 table.generation, len(table.by_sid), table.entries)
        try:
            for i, listener in enumerate(self.config.sip.listen):
                sock = self.sockets[i] if self.sockets else None
                transport, protocol = await open_listener(self.edge, listener, sock=sock)
                self.transports.append(transport)
                self.protocols.append(protocol)
                log.info("SIP/UDP listening on %s:%d, relaying admitted calls to %s:%d%s",
                         protocol.listener.host, protocol.listener.port, *self.config.sip.pbx,
                         f" (worker {self.worker})" if self.sockets else "")
            if self.config.api.enabled:
                await self._start_api()
            metrics = self.config.metrics
            if metrics.enabled:
                self.metrics_server = await loop.run_in_executor(
                    None, _start_metrics, self.stats, metrics.host, metrics.port)
                self.metrics_port = self.metrics_server.server_port
                log.info("metrics on http://%s:%d/metrics", metrics.host, self.metrics_port)
        except BaseException:
            await self.stop()
            raise
        self.reloader.start()

    async def _start_api(self) -> None:
        from aiohttp import web

        from sipgate.api import make_app

        reloader = self.reloader
        assert reloader is not None
        app = make_app(self.store, {a.sid: a.auth_token for a in self.config.accounts},
                       lambda: reloader.refresh())
        self.api_runner = web.AppRunner(app, access_log=None)
        await self.api_runner.setup()
        site = web.TCPSite(self.api_runner, self.config.api.host, self.config.api.port)
        await site.start()
        self.api_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        log.info("API on http://%s:%d (%d account(s))", self.config.api.host, self.api_port,
                 len(self.config.accounts))

    async def stop(self) -> None:
        """Stop receiving, then release everything."""
        for transport in self.transports:
            transport.close()
        self.transports.clear()
        if self.api_runner is not None:
            await self.api_runner.cleanup()
            self.api_runner = None
        if self.reloader is not None:
            await self.reloader.stop()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server.server_close()
            self.metrics_server = None
        if self.store is not None:
            self.store.close()
            self.store = None


def _start_metrics(stats: EdgeStats, host: str, port: int) -> Any:
    _registry, server = serve_metrics(stats, host, port)
    return server


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (about 30 % more datagrams/s here), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def serve(config: Config, *, seed: str | None = None,
                on_ready: Callable[[Server], None] | None = None,
                sockets: list[Any] | None = None, worker: int = 0) -> None:
    """Run until SIGINT or SIGTERM."""
    server = Server(config, seed=seed, sockets=sockets, worker=worker)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    if on_ready:
        on_ready(server)
    try:
        await stop.wait()
    finally:
        log.info("stopping")
        await server.stop()


def run(config: Config, *, seed: str | None = None, workers: int = 1) -> int:
    """Blocking entry point for ``sipgate serve``."""
    if workers <= 1:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(serve(config, seed=seed))
        return 0
    return _run_workers(config, seed, workers)


def _run_workers(config: Config, seed: str | None, workers: int) -> int:
    """``serve --workers N``: N processes reading one set of SIP sockets.

    The sockets are bound here, before any thread or event loop exists, and
    the workers are forked around them: the kernel hands each datagram to
    one of the processes waiting on a socket, so even traffic from a single
    source address and port spreads over the workers (with SO_REUSEPORT it
    would not).  Each worker has its own store connection, reloader and
    table.  Worker 0 (this process) applies the seed first and serves the
    API and /metrics; a write through the API is in force in worker 0 when
    its 2xx is sent and in the others after their next revision check
    (``store.poll_interval``), and /metrics counts worker 0's traffic only.
    """
    import os

    from sipgate.transport.udp import make_socket

    # Migrations, the seed and the accounts once, here, before the workers
    # open the store side by side.
    store = open_store(config.store.url, **store_limits(config.store))
    try:
        _prepare_store(store, seed or config.seed, config)
    finally:
        store.close()
    # (open_listener takes each worker's port from the shared socket.)
    sockets = [make_socket(listener, config.sip.socket_buffer) for listener in config.sip.listen]
    config = replace(config, seed=None)
    quiet = replace(config, api=replace(config.api, enabled=False), metrics=replace(config.metrics, enabled=False))
    children = []
    for worker in range(1, workers):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _die_with_parent()
                with asyncio.Runner(loop_factory=new_event_loop) as runner:
                    runner.run(serve(quiet, sockets=sockets, worker=worker))
            except BaseException:  # noqa: BLE001  (a worker reports and exits, never returns)
                log.exception("worker %d failed", worker)
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        children.append(pid)
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(serve(config, sockets=sockets, worker=0))
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in children:
            os.waitpid(pid, 0)
    return 0


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when worker 0 dies, however it dies."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

