"""``sipgate serve --workers N``: N processes on one set of SIP sockets, and
a supervisor that replaces a worker that dies.

The process started (worker 0) binds the SIP sockets, applies the seed, then
forks the supervisor before any thread or event loop exists.  The
supervisor stays that way (one thread, no loop, signals taken synchronously
with ``sigtimedwait``), so forking from it is always safe: it forks workers
1..N-1 around the shared sockets, and when one exits for any reason
(a crash, an OOM kill, a stray SIGTERM) it forks a replacement, at once if
the worker had run 10 s or more, else after a back-off doubling from 1 s to
30 s (a worker that cannot start does not spin).  A replacement rereads the
config file first, so it runs what its siblings run after a SIGHUP.

Worker 0 serves the API and /metrics and stays the process systemd and
operators signal; it finds the other workers through ``Slots``, memory all
of them share (each worker's PID and table generation; the restart count).
The supervisor clears a worker's PID there before it reaps the process, so
a PID read from a slot is a running worker or a zombie, never a reused
number.
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import os
import signal
import struct
import time
from collections.abc import Callable
from dataclasses import replace

from sipgate.config import Config, ConfigError, load_config

__all__ = ["Slots", "run_workers", "runtime_config", "supervise"]

log = logging.getLogger("sipgate.workers")

# A worker that ran at least this long (s) is replaced at once; one that
# died sooner waits RESTART_FIRST, doubling each time up to RESTART_MAX.
RESTART_STABLE = 10.0
RESTART_FIRST = 1.0
RESTART_MAX = 30.0
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


class Slots:
    """Anonymous shared memory (zeroed at creation, inherited by fork):
    per worker an int64 table generation and an int64 PID (0: none running),
    then an int64 count of workers replaced."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._mem = mmap.mmap(-1, 16 * count + 8)

    def generation(self, n: int) -> int:
        return int(struct.unpack_from("q", self._mem, 16 * n)[0])

    def set_generation(self, n: int, generation: int) -> None:
        struct.pack_into("q", self._mem, 16 * n, generation)

    def pid(self, n: int) -> int:
        return int(struct.unpack_from("q", self._mem, 16 * n + 8)[0])

    def set_pid(self, n: int, pid: int) -> None:
        struct.pack_into("q", self._mem, 16 * n + 8, pid)

    @property
    def restarts(self) -> int:
        return int(struct.unpack_from("q", self._mem, 16 * self.count)[0])

    def count_restart(self) -> None:
        struct.pack_into("q", self._mem, 16 * self.count, self.restarts + 1)

    def running(self) -> list[tuple[int, int]]:
        """(number, PID) of workers 1..N-1 that are running now."""
        return [(n, pid) for n in range(1, self.count) if (pid := self.pid(n))]


def runtime_config(old: Config, new: Config) -> Config:
    """What a running edge applies from a reread config file: ``new``, but
    the keys that need a restart keep their running values (``old``)."""
    return replace(new, api=old.api, metrics=old.metrics, lifecycle=old.lifecycle,
                   store=replace(new.store, url=old.store.url),
                   sip=replace(new.sip, listen=old.sip.listen, socket_buffer=old.sip.socket_buffer))


def supervise(slots: Slots, start: Callable[[int, bool], int], *, stop_timeout: float = 10.0,
              stable: float = RESTART_STABLE, first: float = RESTART_FIRST, longest: float = RESTART_MAX) -> int:
    """Run workers 1..N-1 (``start(n, again)`` runs worker ``n`` in a forked
    child and returns its exit status) until SIGTERM or SIGINT, replacing
    each one that exits; then stop them (SIGTERM, SIGKILL after
    ``stop_timeout``) and return 0.  Call it in a process with one thread."""
    watched = {signal.SIGCHLD, *_STOP_SIGNALS}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    started: dict[int, tuple[int, float]] = {}  # pid -> (worker, when)
    due: dict[int, float] = {}  # worker -> when to start it again
    delay: dict[int, float] = {}

    def fork(n: int, again: bool) -> None:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)
                code = start(n, again)
            except BaseException:  # noqa: BLE001  (a worker reports and exits, never returns here)
                log.exception("worker %d failed", n)
            finally:
                logging.shutdown()
                os._exit(code)
        started[pid] = (n, time.monotonic())
        slots.set_pid(n, pid)
        if again:
            slots.count_restart()
            log.info("worker %d started again (pid %d)", n, pid)

    def reap() -> None:
        while True:
            # WNOWAIT: the PID stays a zombie's, so not reusable, until its
            # slot says no worker runs there.
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:  # (no child left: each one is due to start again)
                return
            if info is None or info.si_pid == 0:
                return
            pid = info.si_pid
            n, since = started.pop(pid, (0, 0.0))
            if n:
                slots.set_pid(n, 0)
                slots.set_generation(n, 0)
            os.waitpid(pid, 0)
            if not n:
                continue
            ran = time.monotonic() - since
            delay[n] = 0.0 if ran >= stable else min(max(2 * delay.get(n, 0.0), first), longest)
            due[n] = time.monotonic() + delay[n]
            how = (f"killed by {_signal_name(info.si_status)}" if info.si_code in (os.CLD_KILLED, os.CLD_DUMPED)
                   else f"exited with status {info.si_status}")
            log.error("worker %d (pid %d) %s after %.1f s; starting it again %s", n, pid, how, ran,
                      f"in {delay[n]:g} s" if delay[n] else "now")

    def start_due(again: bool) -> None:
        now = time.monotonic()
        for n in [n for n, when in due.items() if when <= now]:
            del due[n]
            try:
                fork(n, again)
            except OSError as exc:  # (EAGAIN, ENOMEM: the next try backs off as a crash does)
                delay[n] = min(max(2 * delay.get(n, 0.0), first), longest)
                due[n] = time.monotonic() + delay[n]
                log.error("cannot start worker %d (%s); trying again in %g s", n, exc, delay[n])

    try:
        due.update((n, 0.0) for n in range(1, slots.count))
        start_due(False)
        while True:
            start_due(True)
            timeout = max(0.0, min(due.values()) - time.monotonic()) if due else 3600.0
            got = signal.sigtimedwait(watched, timeout)
            if got is not None and got.si_signo in _STOP_SIGNALS:
                break
            reap()
        for pid in started:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + stop_timeout
        while started:
            if time.monotonic() >= deadline:
                for pid, (n, _) in started.items():
                    log.error("worker %d (pid %d) still running %g s after SIGTERM: SIGKILL", n, pid, stop_timeout)
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                deadline = float("inf")
            signal.sigtimedwait({signal.SIGCHLD}, 0.1)
            for pid in list(started):
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done:
                    n, _ = started.pop(pid)
                    slots.set_pid(n, 0)
        return 0
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def die_with_parent(parent: int) -> None:
    """Linux: SIGTERM this process when its parent dies, however it dies
    (and at once if that happened before this call)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


def run_workers(config: Config, seed: str | None, workers: int, config_path: str | None = None) -> int:
    """``serve --workers N``: bind, fork the supervisor, serve as worker 0."""
    from sipgate.config import store_limits
    from sipgate.server import _prepare_store, new_event_loop, serve
    from sipgate.store import open_store
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
    slots = Slots(workers)
    config = replace(config, seed=None)
    quiet = replace(config, api=replace(config.api, enabled=False), metrics=replace(config.metrics, enabled=False))
    node = os.getpid()
    # Until a worker's loop handles them, SIGUSR1 (worker 0's "a write
    # committed") and SIGHUP (passed on by worker 0) must not kill it:
    # ignored from the fork on.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def start(n: int, again: bool) -> int:
        die_with_parent(supervisor_pid)
        settings = quiet
        if again and config_path is not None:
            # (a SIGHUP may have changed the file since the others started)
            try:
                settings = replace(runtime_config(quiet, load_config(config_path)), seed=None)
                logging.getLogger().setLevel(settings.log.level)
            except ConfigError as exc:
                log.error("worker %d keeps the config it started with: %s", n, exc)
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(serve(settings, sockets=sockets, worker=n, config_path=config_path, slots=slots, node=node))
        return 0

    supervisor = os.fork()
    if supervisor == 0:
        code = 1
        try:
            supervisor_pid = os.getpid()
            die_with_parent(node)
            code = supervise(slots, start, stop_timeout=config.lifecycle.shutdown_timeout + 5.0)
        except BaseException:  # noqa: BLE001
            log.exception("worker supervisor failed")
        finally:
            logging.shutdown()
            os._exit(code)
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(serve(config, sockets=sockets, worker=0, config_path=config_path, slots=slots, node=node,
                             supervisor=supervisor))
    finally:
        try:
            os.kill(supervisor, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(supervisor, 0)
        except ChildProcessError:  # (reaped already: see Server._supervisor_running)
            pass
    return 0
