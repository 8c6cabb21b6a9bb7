"""Process lifecycle: open the store, compile the table, bind, serve, stop."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from dataclasses import replace
from functools import partial
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sipgate import native, sdnotify
from sipgate.config import Config, ConfigError, load_config, restart_required, store_limits
from sipgate.flood import FloodGuard
from sipgate.metrics import EdgeStats, make_registry
from sipgate.reload import Reloader
from sipgate.store import Unavailable, open_store
from sipgate.store.seed import load_seed
from sipgate.transport import Edge, EdgeProtocol, SocketTransport, open_listener

if TYPE_CHECKING:
    from sipgate.workers import Slots

__all__ = ["Server", "new_event_loop", "run"]

log = logging.getLogger("sipgate.server")

# --workers: how long an API write's 2xx waits, at most, for the other
# workers to have the change in force (they take milliseconds; this bounds
# a stopped or stuck one, and a full recompile of a large table).
WORKER_ACK_TIMEOUT = 5.0
# Every edge process (each worker of each node) says in the store which
# revision its table is at after each swap, and at least this often (s);
# an API write's 2xx waits, as long as WORKER_ACK_TIMEOUT at most, for the
# processes heard from within NODE_FRESH that are behind it.
NODE_HEARTBEAT = 2.0
NODE_FRESH = 10.0


def _prepare_store(store: Any, seed: str | None, config: Config) -> None:
    """Apply the seed file (if any) and make sure the config's accounts exist."""
    if seed:
        log.info("seed %s: %s", seed, load_seed(store, seed))
    for account in config.accounts:
        store.ensure_account(account.sid, account.friendly_name)


class Server:
    """One sipgate edge process: listeners, table reloader, API, metrics."""

    def __init__(self, config: Config, *, seed: str | None = None,
                 sockets: list[Any] | None = None, worker: int = 0, config_path: str | None = None,
                 slots: Slots | None = None, node: int | None = None, supervisor: int | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.seed = seed or config.seed
        # Pre-bound SIP sockets, one per listener (--workers shares them).
        self.sockets = sockets
        self.worker = worker
        self.stats = EdgeStats()
        self.edge = Edge(config.sip, self.stats)
        self.store: Any = None
        self.reloader: Reloader | None = None
        self.transports: list[SocketTransport] = []
        self.protocols: list[EdgeProtocol] = []
        self.http_runner: Any = None
        self.metrics_port: int | None = None
        self.api_runner: Any = None
        self.api_app: Any = None
        self.api_port: int | None = None
        self.started = False
        self.not_ready_reason = "starting"
        self._tasks: list[asyncio.Task[None]] = []
        self._unlisten: Callable[[], None] | None = None
        # --workers: memory the workers share (sipgate.workers.Slots): each
        # one's PID and the generation of the table it has in force (worker
        # 0 wakes them and waits on them before an API write's 2xx).
        self.slots = slots
        # --workers, in worker 0: the PID of the process that forks the
        # others (and replaces one that dies).
        self.supervisor = supervisor
        self._supervisor_gone = False
        # wait_enforced: who held a write for the whole bound, with what it
        # showed then (not waited for again until that changes).
        self._given_up: dict[str, object] = {}
        # This process in the store's nodes table (report_node): host, the
        # PID of worker 0 (the node), worker number.  The wait after a write
        # leaves out the node's own workers (the shared slots cover them).
        self.node_prefix = f"{socket.gethostname()}:{os.getpid() if node is None else node}:"
        self.node = f"{self.node_prefix}{worker}"
        self._configure_flood(config)
        self._configure_deny_log(config)

    def _install(self, table: Any, compile_seconds: float = 0.0) -> None:
        """Put ``table`` in force, and say so in this worker's slot."""
        self.edge.install(table, compile_seconds)
        if self.slots is not None:
            self.slots.set_generation(self.worker, table.generation)
        self._report(table.generation)

    def _report(self, generation: int) -> None:
        """Tell the store, from a thread, that this process enforces
        ``generation`` (a write elsewhere waits for that)."""
        store = self.store
        if store is None or not hasattr(store, "report_node"):
            return
        done = asyncio.get_running_loop().run_in_executor(None, store.report_node, self.node, generation)
        done.add_done_callback(self._reported)

    def _reported(self, done: asyncio.Future[None]) -> None:
        exc = None if done.cancelled() else done.exception()
        if exc is not None and self.edge.error_log.allow():
            log.warning("could not report table revision to the store: %s", exc)

    @property
    def sip_addresses(self) -> list[tuple[str, int]]:
        """(host, port) of every bound SIP listener."""
        return [(p.listener.host, p.listener.port) for p in self.protocols]

    # -- start ---------------------------------------------------------------
    async def start(self) -> None:
        """Serve /-/healthy and /metrics, open the store (waiting while it
        cannot be reached), apply the seed, compile the table, then bind.

        The listeners are bound only once a table is in force, so the first
        datagram is already judged by the stored lists; /-/ready says 200
        from then on.
        """
        loop = asyncio.get_running_loop()
        try:
            metrics = self.config.metrics
            if metrics.enabled:
                await self._start_http(metrics.host, metrics.port)
            self.not_ready_reason = "the store cannot be reached"
            self.store = await self._open_store()
            self.not_ready_reason = "compiling the admission table"
            # Seed and accounts before the first compile: a write right after
            # it would force the first API change into another compile.
            await loop.run_in_executor(None, _prepare_store, self.store, self.seed, self.config)
            self.reloader = Reloader(self.store, self._install, self.config.store.poll_interval,
                                     current=lambda: self.edge.table)
            await self.reloader.refresh(force=True)
            table = self.edge.table
            log.info("admission table generation %d: %d trunks, %d entries",
                     table.generation, len(table.by_sid), table.entries)
            log.info("receive path: %s", native.status()[1])
            self.not_ready_reason = "binding the listeners"
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
        except BaseException:
            await self.stop()
            raise
        self.reloader.start()
        self._tasks.append(loop.create_task(self._housekeeping()))
        listen = getattr(self.store, "listen", None)
        if listen is not None:
            # PostgreSQL: every node LISTENs; a write committed through any
            # node's API (or `sipgate seed`) wakes this node's reloader at
            # once; the revision poll stays as the safety net for a lost
            # notification or a dropped connection.
            reloader = self.reloader

            def changed(_revision: int) -> None:
                try:
                    loop.call_soon_threadsafe(reloader.wake)
                except RuntimeError:  # the loop is closing: nothing to wake
                    pass

            self._unlisten = listen(changed)
        if self.config.sip.pbx_probe_interval and self.worker == 0:
            from sipgate.pbxprobe import PbxProbe

            probe = PbxProbe(self.config.sip.pbx, self.stats, self.config.sip.pbx_probe_interval)
            self._tasks.append(loop.create_task(probe.run()))
        self.started = True
        self.stats.ready = 1
        self.not_ready_reason = ""
        if self.worker == 0:
            sdnotify.ready(f"serving {len(self.protocols)} SIP listener(s), table generation "
                           f"{self.edge.table.generation}")

    async def _open_store(self) -> Any:
        """Open the store; while it cannot be reached (locked, unwritable,
        a database server down) keep trying, and say so at most every 10 s."""
        loop = asyncio.get_running_loop()
        delay = 0.1
        said = 0.0
        while True:
            try:
                return await loop.run_in_executor(
                    None, partial(open_store, self.config.store.url, **store_limits(self.config.store)))
            except Unavailable as exc:
                now = loop.time()
                if now - said >= 10.0:
                    log.error("%s; not ready, retrying", exc)
                    said = now
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _start_http(self, host: str, port: int) -> None:
        """/metrics, /-/healthy and /-/ready on the metrics listener, in this
        event loop (a scrape sees the counters between two datagrams)."""
        from aiohttp import web
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        registry = make_registry(self.stats)

        async def metrics(_request: web.Request) -> web.Response:
            return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def healthy(_request: web.Request) -> web.Response:
            return web.Response(text="sipgate is healthy\n")

        async def ready(_request: web.Request) -> web.Response:
            if self.stats.ready:
                reloader = self.reloader
                if reloader is not None and reloader.failing:
                    # Still ready: the edge enforces its last good table, and
                    # taking every node out of service because the database
                    # is down would let nothing through.  Said, and in
                    # sipgate_store_up, for the operator.
                    return web.Response(text=f"sipgate is ready (degraded: the store cannot be reached; "
                                             f"enforcing table generation {self.edge.table.generation})\n")
                return web.Response(text="sipgate is ready\n")
            return web.Response(status=503, text=f"sipgate is not ready: {self.not_ready_reason}\n")

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/-/healthy", healthy)
        app.router.add_get("/-/ready", ready)
        self.http_runner = web.AppRunner(app, access_log=None)
        await self.http_runner.setup()
        site = web.TCPSite(self.http_runner, host, port)
        await site.start()
        self.metrics_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        log.info("metrics on http://%s:%d/metrics (health: /-/healthy, /-/ready)", host, self.metrics_port)

    async def _start_api(self) -> None:
        from aiohttp import web

        from sipgate.api import make_app

        reloader = self.reloader
        assert reloader is not None
        stats = self.stats

        async def enforce() -> None:
            # An API write committed: its 2xx waits for the table swap, here
            # and in every other worker.
            started = time.perf_counter()
            await reloader.refresh()
            self.wake_workers()
            await self.wait_enforced(reloader.generation)
            stats.enforcement.observe(time.perf_counter() - started)

        import ssl

        from sipgate.config import api_listen_problem

        api = self.config.api
        # Checked when the file is parsed too; a Config built in code must
        # not put auth tokens on the network in clear text either.
        if problem := api_listen_problem(api):
            raise ConfigError("api.listen", problem)
        context = None
        if api.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            try:
                context.load_cert_chain(api.tls_cert, api.tls_key)
            except (ssl.SSLError, OSError) as exc:
                raise ConfigError("api.tls_cert", f"cannot load certificate {api.tls_cert} "
                                  f"with key {api.tls_key}: {exc}") from None
        self.api_app = make_app(self.store, {a.sid: a.auth_token for a in self.config.accounts}, enforce, stats)
        self.api_runner = web.AppRunner(self.api_app, access_log=None,
                                        shutdown_timeout=self.config.lifecycle.shutdown_timeout)
        await self.api_runner.setup()
        site = web.TCPSite(self.api_runner, api.host, api.port, ssl_context=context)
        await site.start()
        self.api_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        log.info("API on %s://%s:%d (%d account(s))", "https" if context else "http", api.host, self.api_port,
                 len(self.config.accounts))

    async def _housekeeping(self) -> None:
        """Twice a second: write the deny log's queue, end bans that ran
        out, publish the store revision seen."""
        tick = 0
        while True:
            await asyncio.sleep(0.5)
            tick += 1
            try:
                if self.edge.deny_log is not None:
                    self.edge.deny_log.flush()
                if self.edge.flood is not None and tick % 2 == 0:
                    self.edge.flood.sweep()
                if self.reloader is not None:
                    self.stats.store_revision = self.reloader.revision_seen
                    self.stats.store_up = 0 if self.reloader.failing else 1
                    if tick % int(NODE_HEARTBEAT / 0.5) == 0:
                        self._report(self.edge.table.generation)
                if self.slots is not None and self.worker == 0:
                    self.stats.worker_restarts = self.slots.restarts
            except Exception:  # noqa: BLE001  (a full disk must not stop the edge)
                if self.edge.error_log.allow():
                    log.exception("housekeeping failed")

    def wake_workers(self) -> None:
        """--workers: tell the other workers a write committed (SIGUSR1 wakes
        their reloader) instead of leaving them to their next poll."""
        self._signal_workers(signal.SIGUSR1)

    async def wait_enforced(self, generation: int, timeout: float = WORKER_ACK_TIMEOUT) -> bool:
        """Wait until every process that must enforce ``generation`` does,
        at most ``timeout`` for all of them; False, counted, when one has
        not.  First this node's other workers (--workers: their ``slots``;
        one that has exited has nothing to enforce), then the processes of
        the other nodes sharing the store heard from within NODE_FRESH (they
        report after each swap; a node that stops says so, forget_node).
        They take milliseconds; a stopped or stuck one must not hold the API
        forever: it is waited for ``timeout`` once (and logged), then not
        again until it shows a sign of life (a worker's slot changes, a node
        reports), so a node that died holds one write, not every write
        until NODE_FRESH has passed."""
        store = self.store
        nodes = store is not None and hasattr(store, "nodes_behind")
        if not nodes and self.slots is None:
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        pause = 0.0005
        given_up = self._given_up
        while True:
            # Who is behind, each with what it last showed (a worker: PID and
            # table generation; a node: when it last reported); the nodes
            # once no worker is waited for.
            behind: dict[str, object] = {f"worker {n} (pid {pid})": (pid, at)
                                         for n, pid, at in self._workers_behind(generation)}
            kinds = ["worker "]
            if nodes and all(given_up.get(who) == mark for who, mark in behind.items()):
                try:
                    behind.update((f"node {node}", seen) for node, seen in await loop.run_in_executor(
                        None, store.nodes_behind, generation, NODE_FRESH, self.node_prefix))
                except Unavailable as exc:
                    log.warning("cannot tell whether the other nodes enforce revision %d: %s", generation, exc)
                    return False
                kinds.append("node ")
            for who in [who for who in given_up if who.startswith(tuple(kinds)) and behind.get(who) != given_up[who]]:
                del given_up[who]  # (caught up, or heard from again)
            waiting = [who for who in behind if who not in given_up]
            if not waiting:
                if behind:  # (answered before they have it, as the last time)
                    self.stats.enforce_timeouts += 1
                return not behind
            if loop.time() >= deadline:
                self.stats.enforce_timeouts += 1
                given_up.update((who, behind[who]) for who in waiting)
                log.warning("%s not yet enforcing revision %d after %g s: the API answers anyway, and "
                            "does not wait for them again until they are heard from (they apply it when "
                            "they run again)", ", ".join(waiting), generation, timeout)
                return False
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.01)

    def _workers_behind(self, generation: int) -> list[tuple[int, int, int]]:
        """(number, PID, table generation) of this node's other workers
        running now whose table is older than ``generation``."""
        slots = self.slots
        if slots is None or not self._supervisor_running():
            return []
        return [(n, pid, at) for n, pid in slots.running() if (at := slots.generation(n)) < generation]

    def _supervisor_running(self) -> bool:
        """--workers, worker 0: the supervisor (sipgate.workers) has not
        exited (reaped here if it has; logged once).  Without it the slots
        say nothing: its workers stop with it."""
        if self.supervisor is None or self._supervisor_gone:
            return False
        try:
            done, status = os.waitpid(self.supervisor, os.WNOHANG)
        except ChildProcessError:
            done, status = self.supervisor, 0
        if not done:
            return True
        self._supervisor_gone = True
        log.error("the worker supervisor (pid %d) exited (status %d): the other workers stop with it; "
                  "worker 0 serves alone until sipgate is restarted", self.supervisor, status)
        return False

    def _signal_workers(self, sig: signal.Signals) -> None:
        """--workers (worker 0): send ``sig`` to every other worker running."""
        if self.slots is None or not self._supervisor_running():
            return
        for _n, pid in self.slots.running():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def _configure_flood(self, config: Config) -> None:
        flood = config.flood
        guard = self.edge.flood
        if not flood.enabled:
            self.edge.flood = self.stats.flood = None
            return
        if guard is None:
            guard = FloodGuard(flood.density, flood.window, flood.ban_seconds, flood.max_sources,
                               on_ban=self._on_ban, on_unban=self._on_unban, exempt=self.edge.exempt)
            self.edge.flood = self.stats.flood = guard
        else:
            guard.configure(flood.density, flood.window, flood.ban_seconds, flood.max_sources)

    def _on_ban(self, source: str, until: float, count: int) -> None:
        log.warning("flood: %s banned for %g s after %d rejected requests in %g s", source,
                    self.config.flood.ban_seconds, count, self.config.flood.window)
        if self.edge.deny_log is not None:
            self.edge.deny_log.ban(source, until, count)

    def _on_unban(self, source: str) -> None:
        log.info("flood: ban of %s ended", source)
        if self.edge.deny_log is not None:
            self.edge.deny_log.unban(source)

    def _configure_deny_log(self, config: Config) -> None:
        settings = config.log
        current = self.edge.deny_log
        if current is not None and (not settings.deny_log or settings.deny_log != current.path):
            current.close()
            current = None
        if settings.deny_log and current is None:
            from sipgate.denylog import DenyLog

            try:
                current = DenyLog(settings.deny_log, burst=settings.deny_log_burst,
                                  interval=settings.deny_log_interval)
            except OSError as exc:
                if not self.started:
                    raise  # at start: a config problem, said and fatal
                log.error("SIGHUP: cannot open the deny log %s (%s); deny log off", settings.deny_log, exc)
                current = None
            else:
                log.info("deny log: %s", settings.deny_log)
        elif current is not None:
            current.burst = settings.deny_log_burst
            current.interval = settings.deny_log_interval
            try:
                current.reopen()
            except OSError as exc:
                log.error("SIGHUP: cannot reopen the deny log %s (%s); still writing to the old file",
                          settings.deny_log, exc)
        self.edge.deny_log = self.stats.deny_log = current

    # -- SIGHUP ----------------------------------------------------------------
    async def reload_config(self) -> bool:
        """Reread the config file and apply what can change at run time.

        A file with problems changes nothing (the log says why); a changed
        key that needs a restart is named in the log and keeps its running
        value.  Returns whether a new config was applied.
        """
        if self.worker == 0:  # (systemd hears from the main process only)
            sdnotify.reloading()
        try:
            return await self._reload_config()
        except Exception:  # noqa: BLE001  (a reload must never take the edge down)
            log.exception("SIGHUP: reload failed part way; the settings applied so far stay")
            return False
        finally:
            # --workers: worker 0 (the process systemd and operators
            # signal) passes it on, after its own reload has written the
            # seed and accounts; each worker rereads the file itself.
            self._signal_workers(signal.SIGHUP)
            if self.worker == 0:
                sdnotify.ready("reloaded")

    async def _reload_config(self) -> bool:
        from sipgate.workers import runtime_config

        loop = asyncio.get_running_loop()
        if self.config_path is None:
            if self.edge.deny_log is not None:
                self.edge.deny_log.reopen()
            log.info("SIGHUP: no config file (embedded defaults); logs reopened")
            return False
        try:
            new = await loop.run_in_executor(None, load_config, self.config_path)
        except ConfigError as exc:
            for problem in getattr(exc, "errors", None) or [exc]:
                log.error("SIGHUP: keeping the running config: %s", problem)
            return False
        old = self.config
        if self.worker:
            # (a worker runs without the API and /metrics, worker 0's)
            new = replace(new, api=old.api, metrics=old.metrics)
        pending = restart_required(old, new)
        for key in pending:
            log.warning("SIGHUP: %s changed; it takes effect at the next restart", key)
        applied = runtime_config(old, new)  # (what needs a restart keeps its running value)
        logging.getLogger().setLevel(applied.log.level)
        self.edge.reconfigure(applied.sip)
        for protocol in self.protocols:
            protocol.reconfigure()
        self._configure_flood(applied)
        self._configure_deny_log(applied)
        if self.store is not None:
            self.store.max_ips_per_list = applied.store.max_ips_per_list or None
            self.store.max_lists_per_account = applied.store.max_lists_per_account or None
        if self.reloader is not None:
            self.reloader.poll_interval = applied.store.poll_interval
        self.config = applied
        if self.store is not None and self.worker == 0:  # (the seed and accounts: written once, by worker 0)
            try:
                await loop.run_in_executor(None, _prepare_store, self.store, applied.seed, applied)
            except Exception as exc:  # noqa: BLE001  (a bad seed must not stop the edge)
                log.error("SIGHUP: seed/accounts not applied: %s", exc)
            if self.api_app is not None:
                from sipgate.api.app import ACCOUNTS_KEY

                accounts = self.api_app[ACCOUNTS_KEY]
                accounts.clear()
                accounts.update({a.sid: a.auth_token for a in applied.accounts})
            if self.reloader is not None:
                await self.reloader.refresh()
        log.info("SIGHUP: config %s applied%s", self.config_path, f" (worker {self.worker})" if self.sockets else "")
        return True

    # -- stop ----------------------------------------------------------------
    async def stop(self) -> None:
        """Stop receiving, answer what already arrived, finish API requests
        in flight, write the logs, release everything."""
        self.stats.ready = 0
        self.not_ready_reason = "stopping"
        answered = 0
        for transport in self.transports:
            answered += transport.drain()
        for transport in self.transports:
            transport.close()
        self.transports.clear()
        if answered:
            log.info("answered %d datagram(s) already received", answered)
        if self.api_runner is not None:
            await self.api_runner.cleanup()
            self.api_runner = None
        if self._unlisten is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._unlisten)
            self._unlisten = None
        if self.reloader is not None:
            await self.reloader.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks.clear()
        if self.edge.deny_log is not None:
            self.edge.deny_log.close()
        if self.http_runner is not None:
            await self.http_runner.cleanup()
            self.http_runner = None
        if self.store is not None:
            forget = getattr(self.store, "forget_node", None)
            if forget is not None:
                try:
                    await asyncio.get_running_loop().run_in_executor(None, forget, self.node)
                except Unavailable:
                    pass  # (then the others wait for it until NODE_FRESH has passed)
            self.store.close()
            self.store = None


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (about 30 % more datagrams/s here), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def serve(config: Config, *, seed: str | None = None,
                on_ready: Callable[[Server], None] | None = None,
                sockets: list[Any] | None = None, worker: int = 0, config_path: str | None = None,
                slots: Slots | None = None, node: int | None = None, supervisor: int | None = None) -> None:
    """Run until SIGINT or SIGTERM; SIGHUP rereads the config file; SIGUSR1
    checks the store now (worker 0 sends it to the others after a write)."""
    server = Server(config, seed=seed, sockets=sockets, worker=worker, config_path=config_path, slots=slots,
                    node=node, supervisor=supervisor)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reloads: list[asyncio.Task[bool]] = []

    def hangup() -> None:
        if server.started and not stop.is_set():
            reloads.append(loop.create_task(server.reload_config()))

    loop.add_signal_handler(signal.SIGHUP, hangup)

    def woken() -> None:
        if server.reloader is not None:
            server.reloader.wake()

    loop.add_signal_handler(signal.SIGUSR1, woken)
    starting = loop.create_task(server.start())
    stopping = loop.create_task(stop.wait())
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()  # a failed start raises here
            if on_ready:
                on_ready(server)
            await stopping
        else:
            starting.cancel()  # SIGTERM while waiting for the store
            try:
                await starting
            except asyncio.CancelledError:
                pass
    finally:
        stopping.cancel()
        if worker == 0:
            sdnotify.stopping()
        log.info("stopping")
        for task in reloads:
            task.cancel()
        try:
            await asyncio.wait_for(server.stop(), config.lifecycle.shutdown_timeout)
        except asyncio.TimeoutError:
            log.error("shutdown took longer than %g s; exiting anyway", config.lifecycle.shutdown_timeout)


def run(config: Config, *, seed: str | None = None, workers: int = 1, config_path: str | None = None) -> int:
    """Blocking entry point for ``sipgate serve``."""
    if workers <= 1:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(serve(config, seed=seed, config_path=config_path))
        return 0
    from sipgate.workers import run_workers

    return run_workers(config, seed, workers, config_path)
