"""Scanner flood defence: Kamailio's pike, built into the edge.

Every request sipgate rejects (403, 404, 400, or a silent drop of an
initial request) counts against its source address.  A source with more
than ``density`` rejections inside one ``window`` of seconds is banned for
``ban_seconds``: its datagrams are dropped unanswered and unparsed (a
scanner learns nothing and costs one dict probe), then it may try again.

What it never does:

- ban a source any trunk admits, or the PBX side: the edge asks the table in
  force before a ban starts and again before a banned datagram is dropped,
  so an address that becomes admitted through the API is heard at once;
- grow without bound: at most ``max_sources`` sources are tracked and at
  most ``max_sources`` banned; the oldest window is forgotten first (a
  source is re-inserted, so moved to the young end, each time its window
  restarts), so a flood of spoofed random sources costs constant memory and
  constant time per datagram.

Windows are fixed, not sliding, as in pike: a window starts at a source's
first rejection and the count restarts when it has passed.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["FloodGuard"]


class _Window:
    """One source's rejection window: when it started, rejections in it.

    (A class of its own, not a ``[start, count]`` list: compiled, its
    fields are a C double and a machine integer, not boxed objects.)
    """

    __slots__ = ("start", "count")

    def __init__(self, start: float) -> None:
        self.start = start
        self.count = 1


class FloodGuard:
    """Per-source rejection density -> temporary silent ban.

    ``exempt(source)`` is asked before a ban starts (True: never ban it);
    ``on_ban(source, until_wall, count)`` and ``on_unban(source)`` are
    called when a ban starts and when it ends (for the log); ``banned`` is
    the dict the receive path probes (source -> monotonic end of the ban).
    """

    __slots__ = ("density", "window", "ban_seconds", "max_sources", "clock", "wall", "on_ban", "on_unban",
                 "exempt", "banned", "_windows", "bans", "dropped")

    def __init__(self, density: int = 30, window: float = 2.0, ban_seconds: float = 60.0,
                 max_sources: int = 65536, *, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time,
                 on_ban: Callable[[str, float, int], None] | None = None,
                 on_unban: Callable[[str], None] | None = None,
                 exempt: Callable[[str], bool] | None = None) -> None:
        self.density = density
        self.window = window
        self.ban_seconds = ban_seconds
        self.max_sources = max_sources
        self.clock = clock
        self.wall = wall
        self.on_ban = on_ban
        self.on_unban = on_unban
        # Asked before a ban starts: True = never ban this source.
        self.exempt = exempt
        self.banned: dict[str, float] = {}
        # source -> its window, oldest window first.  An OrderedDict:
        # popping its oldest entry stays O(1) however many were deleted
        # before (a plain dict's first-item scan does not).
        self._windows: OrderedDict[str, _Window] = OrderedDict()
        self.bans = 0  # bans started (a counter)
        self.dropped = 0  # datagrams dropped because their source was banned

    @property
    def tracked(self) -> int:
        """Sources with a live rejection window."""
        return len(self._windows)

    def configure(self, density: int, window: float, ban_seconds: float, max_sources: int) -> None:
        """New settings (SIGHUP); windows and bans in progress carry on."""
        self.density = density
        self.window = window
        self.ban_seconds = ban_seconds
        self.max_sources = max_sources
        while len(self._windows) > max_sources:
            self._windows.popitem(last=False)

    def rejected(self, source: str) -> bool:
        """Count one rejection from ``source`` (never admitted by any trunk:
        the caller checks).  True when it starts a ban."""
        now = self.clock()
        windows = self._windows
        # (``in`` and ``[]`` rather than ``.get()``: on an OrderedDict the
        # compiled build calls a method by name, the operators are C slots.)
        if source not in windows:
            if len(windows) >= self.max_sources:
                windows.popitem(last=False)
            windows[source] = _Window(now)
            return False
        entry = windows[source]
        if now - entry.start >= self.window:
            entry.start = now  # a new window: to the young end
            entry.count = 1
            windows.move_to_end(source)
            return False
        entry.count += 1
        count = entry.count
        if count <= self.density:
            return False
        del windows[source]
        if self.exempt is not None and self.exempt(source):
            return False
        self._ban(source, now, count)
        return True

    def _ban(self, source: str, now: float, count: int) -> None:
        banned = self.banned
        if source not in banned and len(banned) >= self.max_sources:
            # Full: the ban that ends first goes early (its source may try again).
            oldest = min(banned, key=banned.__getitem__)
            del banned[oldest]
            if self.on_unban is not None:
                self.on_unban(oldest)
        banned[source] = now + self.ban_seconds
        self.bans += 1
        if self.on_ban is not None:
            self.on_ban(source, self.wall() + self.ban_seconds, count)

    def is_banned(self, source: str) -> bool:
        """Whether datagrams from ``source`` are to be dropped now (a ban
        that has run out ends here)."""
        until = self.banned.get(source)
        if until is None:
            return False
        if self.clock() < until:
            return True
        self.lift(source)
        return False

    def lift(self, source: str) -> None:
        """End ``source``'s ban now (it ran out, or a trunk admits it)."""
        if self.banned.pop(source, None) is not None and self.on_unban is not None:
            self.on_unban(source)

    def sweep(self) -> int:
        """End every ban that has run out and forget stale windows; returns
        the number of active bans.  Called about once a second."""
        now = self.clock()
        for source in [s for s, until in self.banned.items() if until <= now]:
            self.lift(source)
        windows = self._windows
        window = self.window
        # Oldest first: stop at the first window still running.
        while windows:
            source, entry = next(iter(windows.items()))
            if now - entry.start < window:
                break
            windows.popitem(last=False)
        return len(self.banned)
