"""Store snapshot -> AdmissionTable, compiled aside and swapped in whole.

Like Kamailio's ``reload_address_table``: the new table is built next to the
one in force and replaces it with one reference assignment only when the
build succeeded; a failed build leaves the old table enforcing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from sipgate.admission import AdmissionTable, TrunkSource

__all__ = ["Reloader", "compile_snapshot", "compile_store"]

log = logging.getLogger("sipgate.reload")


def compile_snapshot(snapshot: Any) -> AdmissionTable:
    """Compile a store ``Snapshot`` into an AdmissionTable."""
    acls = snapshot.acls
    names = snapshot.acl_names
    sources = [
        TrunkSource(
            sid=t.sid,
            account_sid=t.account_sid,
            domain_name=t.domain_name,
            acls=tuple(
                (acl_sid, names.get(acl_sid, ""),
                 tuple((e.ip_sid, e.ip_address, e.cidr_prefix_length) for e in acls.get(acl_sid, ())))
                for acl_sid in t.acl_sids
            ),
        )
        for t in snapshot.trunks
    ]
    return AdmissionTable.compile(snapshot.revision, sources)


def compile_store(store: Any) -> AdmissionTable:
    """Read one consistent snapshot from ``store`` and compile it."""
    return compile_snapshot(store.snapshot())


class Reloader:
    """Keeps the edge's table in step with the store's revision.

    ``refresh()`` compiles in a worker thread (a million entries take
    seconds, which must not stall the receive path) and calls ``install``
    with the new table on the event loop.  Concurrent refresh requests are
    coalesced: at most one compile runs, and one more follows if a change
    arrived meanwhile.  A periodic revision check catches changes made by
    other processes.
    """

    LOG_EVERY = 10.0

    def __init__(self, store: Any, install: Callable[[AdmissionTable, float], None],
                 poll_interval: float = 0.5, current: Callable[[], AdmissionTable] | None = None) -> None:
        self.store = store
        self.install = install
        # The table in force, for incremental updates (None: always full).
        self.current = current
        self.incremental = 0
        self.full = 0
        self.poll_interval = poll_interval
        self.generation = -1
        # The latest revision read from the store (the table may lag it
        # while a compile runs): sipgate_store_revision.
        self.revision_seen = 0
        self.failures = 0
        # Failures in a row; only the first, then one every LOG_EVERY
        # seconds, is logged (the store may be down for minutes and the
        # poll runs every poll_interval), and the recovery is logged.
        self.failing = 0
        self._logged_at = 0.0
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None

    async def refresh(self, force: bool = False) -> bool:
        """Compile and install the store's state if its revision moved."""
        async with self._lock:
            loop = asyncio.get_running_loop()
            try:
                revision = await loop.run_in_executor(None, self.store.revision)
                self.revision_seen = revision
                if not force and revision == self.generation:
                    self._recovered()
                    return False
                started = time.perf_counter()
                table = None
                if not force and self.current is not None and self.generation >= 0:
                    # Patch the trunks the changes affect (None: recompile).
                    table = await loop.run_in_executor(None, self._patch, self.current(), self.generation)
                if table is None:
                    table = await loop.run_in_executor(None, compile_store, self.store)
                    self.full += 1
                else:
                    self.incremental += 1
            except Exception as exc:  # keep the table in force; say why
                self.failures += 1
                self.failing += 1
                now = time.monotonic()
                if self.failing == 1 or now - self._logged_at >= self.LOG_EVERY:
                    self._logged_at = now
                    log.error("table reload failed (%d time(s) in a row), keeping generation %s: %s",
                              self.failing, self.generation, exc)
                return False
            self._recovered()
            self.generation = table.generation
            self.install(table, time.perf_counter() - started)
            return True

    def _recovered(self) -> None:
        if self.failing:
            log.warning("the store answers again after %d failed reload(s)", self.failing)
            self.failing = 0

    def _patch(self, table: AdmissionTable, generation: int) -> AdmissionTable | None:
        if table.generation != generation:
            return None
        delta = self.store.changes_since(generation)
        if delta is None:
            return None
        try:
            return table.apply_changes(delta.revision, delta.changes, {
                sid: (name, tuple((e.ip_sid, e.ip_address, e.cidr_prefix_length) for e in entries))
                for sid, (name, entries) in delta.lists.items()}, delta.trunks)
        except ValueError as exc:  # the log and the table disagree: rebuild
            log.warning("incremental update failed (%s); recompiling the whole table", exc)
            return None

    def wake(self) -> None:
        """Check the store now rather than at the next poll (a PostgreSQL
        NOTIFY said another node or process committed a change).  Call on
        the event loop."""
        if self._wakeup is not None:
            self._wakeup.set()

    async def _poll(self) -> None:
        self._wakeup = asyncio.Event()
        while True:
            try:
                await asyncio.wait_for(self._wakeup.wait(), self.poll_interval)
            except asyncio.TimeoutError:
                pass
            self._wakeup.clear()
            await self.refresh()

    def start(self) -> None:
        """Start the periodic revision check."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._poll())

    async def stop(self) -> None:
        """Stop the periodic check."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
