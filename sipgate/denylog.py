"""The deny log: one logfmt line per refused request, for fail2ban.

Every request the edge refuses (``403`` forbidden, ``404`` no_trunk, ``400``
bad_request, and the silent drop of an initial request for an unknown host)
is handed to :meth:`DenyLog.record` on the receive path.  ``record`` only
checks a per-source rate limit and queues the raw fields; the server calls
:meth:`DenyLog.flush` about every 0.5 s from the event loop, which formats
the queued entries (and only then reads Call-ID and User-Agent out of the
datagram) and appends them to the file with one ``write``.

Line format
-----------

One line per event, ``key=value`` pairs separated by one space, always in
this order, ending in ``\\n``; the file is pure ASCII::

    time=2026-11-29T07:01:02.345Z event=deny src=203.0.113.7 sport=5060 method=INVITE host=trunk.example.com trunk=TK0123456789abcdef0123456789abcdef reason=forbidden call_id=a84b4c76e66710@pc33 ua="friendly-scanner 1.0"
    time=2026-11-29T07:01:03.001Z event=deny src=2001:db8::7 sport=5062 method=OPTIONS host=- trunk=- reason=bad_request call_id=- ua=-
    time=2026-11-29T07:02:02.500Z event=suppressed src=203.0.113.7 count=1874 interval=60
    time=2026-11-29T07:01:04.120Z event=ban src=203.0.113.7 until=2026-11-29T07:02:04.120Z count=31
    time=2026-11-29T07:02:04.530Z event=unban src=203.0.113.7

- ``time``: when the event happened (``record``/``ban``/``unban`` was
  called; for ``suppressed``, when the summary was queued), UTC, ISO 8601
  with milliseconds (rounded) and ``Z``.
- ``event``: ``deny``, ``suppressed``, ``ban`` or ``unban``.  fail2ban's
  filter (``config/fail2ban/filter.d/sipgate.conf``) counts ``deny`` lines
  only.
- ``src``: the packet source address as the edge saw it (IPv4-mapped IPv6
  unwrapped by the caller; IPv6 written as-is, e.g. ``2001:db8::7``);
  ``sport``: the packet source port.
- ``method``: the request method; ``host``: the Request-URI host;
  ``trunk``: the SID of the trunk the request was judged by; ``reason``:
  ``forbidden`` (403), ``no_trunk`` (404 or silent drop), ``bad_request``
  (400 and other parse errors).
- ``call_id``, ``ua``: the first Call-ID (or compact ``i``) and User-Agent
  header of the datagram, names matched case-insensitively, CRLF or bare LF
  line ends, folded continuation lines joined with one space; only the
  first 4096 bytes of a datagram are kept and searched.
- ``suppressed``: ``count`` deny lines for ``src`` were not written because
  of the rate limit (at most ``burst`` lines per source per ``interval``
  seconds, a fixed window starting at the first line); written when the
  source's window has ended (at its next refusal or at the next flush), or
  when the source is forgotten to make room for another.
- ``ban``/``unban``: the flood defence started a ban until ``until`` (UTC)
  after ``count`` refusals, or ended one.  Never rate limited.

Values: a value made only of printable ASCII other than space, ``"``,
``=`` and ``\\`` is written bare.  Anything else is written in double
quotes with ``\\"``, ``\\\\``, ``\\n``, ``\\r``, ``\\t`` escaped, every other
control character and every byte that is not valid UTF-8 as ``\\xNN``, and
every non-ASCII character as ``\\uNNNN`` (``\\UNNNNNNNN`` above U+FFFF).  A
value is cut to 256 characters before escaping.  So a line never contains a
raw control character, a quote that ends a value early, or a line break:
a hostile User-Agent or Call-ID cannot start a second line or add a field.
A missing value (no Call-ID or User-Agent header, no Request-URI host, no
trunk) is a bare ``-`` (the receive path also passes ``-`` for a method
it could not read); an empty value is ``""``.

Limits: at most ``max_sources`` (10,000) sources are tracked for the rate
limit, the oldest window forgotten first; at most ``max_queue`` (4,096)
deny lines wait for a flush, more are dropped and counted (``suppressed``,
``overflowed``), so a flood of spoofed random sources costs constant memory
and bounds the work of one flush.  The file is opened ``O_APPEND`` (mode
0640) and each flush is one ``write`` of whole lines, so several worker
processes may share one file.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["DenyLog", "format_value", "header_values"]

MAX_VALUE = 256  # characters of a value kept (before escaping)
MAX_HEAD = 4096  # bytes of a datagram kept for the Call-ID / User-Agent
_MAX_RAW = 4 * MAX_VALUE  # bytes of a bytes value decoded (UTF-8 is at most 4 per character)

_DENY, _SUPPRESSED, _BAN, _UNBAN = range(4)

# Printable ASCII except space, '"', '=' and '\': safe to write bare.
_BARE = re.compile(r"[!#-<>-\[\]-~]+")
# Inside quotes: everything but printable ASCII other than '"' and '\'.
_ESCAPE = re.compile(r'[^ !#-\[\]-~]')
_bare = _BARE.fullmatch
_escape = _ESCAPE.sub
_NAMED = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(m: re.Match[str]) -> str:
    c = m.group()
    named = _NAMED.get(c)
    if named is not None:
        return named
    o = ord(c)
    if 0xDC80 <= o <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return "\\x%02x" % (o - 0xDC00)
    if o < 0x80:
        return "\\x%02x" % o
    if o <= 0xFFFF:
        return "\\u%04x" % o
    return "\\U%08x" % o


def format_value(value: str | bytes | int | None) -> str:
    """One logfmt value: bare, quoted and escaped, or ``-`` for None."""
    cls = value.__class__
    if cls is str:
        if len(value) <= MAX_VALUE and _bare(value) is not None:  # type: ignore[arg-type]
            return value  # type: ignore[return-value]
    elif cls is int:
        return str(value)
    elif value is None:
        return "-"
    elif isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value[:_MAX_RAW]).decode("utf-8", "surrogateescape")
    else:
        value = str(value)
    if len(value) > MAX_VALUE:  # type: ignore[arg-type]
        value = value[:MAX_VALUE]  # type: ignore[index]
    if _bare(value) is not None:  # type: ignore[arg-type]
        return value  # type: ignore[return-value]
    return '"' + _escape(_escape_char, value) + '"'  # type: ignore[arg-type]


# A Call-ID (or compact i) or User-Agent header name and its colon, at the
# start of a line of the lower-cased header section.
_NAME = re.compile(rb"\n(call-id|i|user-agent)[ \t]*:[ \t]*")
_FOLD = re.compile(rb"[ \t]*\r?\n[ \t]+")


def _value(head: bytes, start: int) -> bytes:
    """The header value from ``start`` to the end of its line, folded
    continuation lines (RFC 3261 §7.3.1) joined with one space."""
    end = head.find(b"\n", start)
    while end >= 0 and head[end + 1:end + 2] in (b" ", b"\t"):
        end = head.find(b"\n", end + 1)
    value = head[start:] if end < 0 else head[start:end]
    if b"\n" in value:
        value = _FOLD.sub(b" ", value)
    return value.rstrip(b" \t\r")


def header_values(data: bytes) -> tuple[bytes | None, bytes | None]:
    """(Call-ID, User-Agent) of a SIP message's header section, raw, each
    None when absent.  Case-insensitive names, compact ``i`` for Call-ID,
    CRLF or LF line ends, folded lines joined with one space; the first of
    each wins.  The first line (the request line) is never a header."""
    if not isinstance(data, (bytes, bytearray)):
        data = bytes(data)
    # The header section ends at the first empty line.
    end = len(data)
    for sep in (b"\n\r\n", b"\n\n"):
        i = data.find(sep)
        if 0 <= i < end:
            end = i
    head = data[:end]
    call_id: bytes | None = None
    ua: bytes | None = None
    for m in _NAME.finditer(head.lower()):
        if len(m.group(1)) == 10:  # user-agent
            if ua is None:
                ua = _value(head, m.end())
        elif call_id is None:
            call_id = _value(head, m.end())
        if call_id is not None and ua is not None:
            break
    return call_id, ua


class DenyLog:
    """Rate-limited, bounded, batched deny log (see the module docstring).

    ``record`` costs a dict probe and a tuple append; ``flush`` does the
    formatting and the one ``write``.  At most ``max_sources`` sources are
    tracked for the rate limit (the oldest window is forgotten first, so a
    flood of spoofed random sources costs constant memory and time) and at
    most ``max_queue`` deny lines wait for a flush (more are counted in
    ``suppressed`` and ``overflowed``).

    Counters (plain attributes, read by the metrics collector): ``lines``
    (lines written: deny, suppressed summaries, ban and unban), ``suppressed``
    (deny records not written: rate limit or full queue), ``overflowed``
    (the full-queue part of ``suppressed``), ``write_errors`` (flushes
    whose write failed; their lines are lost), ``errors`` (records or
    entries that could not be handled; never raised).
    """

    __slots__ = ("path", "burst", "interval", "max_sources", "max_queue", "clock", "wall", "_fd", "_queue",
                 "_sources", "_sec", "_sec_text", "lines", "suppressed", "overflowed", "write_errors", "errors")

    def __init__(self, path: str, *, burst: int = 5, interval: float = 60.0, max_sources: int = 10000,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 max_queue: int = 4096) -> None:
        if burst < 0 or interval <= 0 or max_sources < 1 or max_queue < 1:
            raise ValueError("deny log: burst >= 0, interval > 0, max_sources >= 1 and max_queue >= 1")
        self.path = path
        self.burst = burst
        self.interval = interval
        self.max_sources = max_sources
        self.max_queue = max_queue
        self.clock = clock
        self.wall = wall
        self._fd: int | None = self._open()
        self._queue: list[tuple] = []
        # source -> [window start (clock), lines in it, suppressed in it];
        # order = window start, oldest first (a restarted window moves to
        # the end).
        self._sources: OrderedDict[str, list] = OrderedDict()
        self._sec = -1
        self._sec_text = ""
        self.lines = 0
        self.suppressed = 0
        self.overflowed = 0
        self.write_errors = 0
        self.errors = 0

    @property
    def tracked(self) -> int:
        """Sources with a rate-limit window in memory."""
        return len(self._sources)

    @property
    def pending(self) -> int:
        """Entries queued for the next flush."""
        return len(self._queue)

    # -- the receive path ----------------------------------------------------
    def record(self, source: str, port: int, reason: str, method: str | bytes, host: str | bytes | None,
               trunk_sid: str | None, data: bytes) -> None:
        """One refused request from ``source``: queue a deny line unless the
        source is over its rate.  Never formats, never raises."""
        try:
            now = self.clock()
            sources = self._sources
            entry = sources.get(source)
            if entry is None:
                if len(sources) >= self.max_sources:
                    self._evict()
                if self.burst == 0:
                    sources[source] = [now, 0, 1]
                    self.suppressed += 1
                    return
                sources[source] = [now, 1, 0]
            elif now - entry[0] >= self.interval:
                if entry[2]:
                    self._queue.append((_SUPPRESSED, self.wall(), source, entry[2], self.interval))
                sources.move_to_end(source)
                entry[0] = now
                if self.burst == 0:
                    entry[1] = 0
                    entry[2] = 1
                    self.suppressed += 1
                    return
                entry[1] = 1
                entry[2] = 0
            elif entry[1] < self.burst:
                entry[1] += 1
            else:
                entry[2] += 1
                self.suppressed += 1
                return
            queue = self._queue
            if len(queue) >= self.max_queue:
                # Not written; not in the source's summary either (it was
                # allowed by the rate limit), only in the counters.
                self.suppressed += 1
                self.overflowed += 1
                return
            # Only the head of the datagram is kept (no copy for a datagram
            # shorter than that): Call-ID and User-Agent are read at flush.
            queue.append((_DENY, self.wall(), source, port, reason, method, host, trunk_sid, data[:MAX_HEAD]))
        except Exception:
            self.errors += 1

    def _evict(self) -> None:
        """Forget the oldest window (its suppressed count is reported now)."""
        source, entry = self._sources.popitem(last=False)
        if entry[2]:
            self._queue.append((_SUPPRESSED, self.wall(), source, entry[2], self.interval))

    # -- the flood defence's events ------------------------------------------
    def ban(self, source: str, until_wall: float, count: int) -> None:
        """Queue an ``event=ban`` line (never rate limited)."""
        try:
            self._queue.append((_BAN, self.wall(), source, until_wall, count))
        except Exception:
            self.errors += 1

    def unban(self, source: str) -> None:
        """Queue an ``event=unban`` line (never rate limited)."""
        try:
            self._queue.append((_UNBAN, self.wall(), source))
        except Exception:
            self.errors += 1

    # -- the event loop, every ~0.5 s ------------------------------------------
    def flush(self) -> int:
        """Write a summary for every ended window with suppressed lines, then
        every queued entry, with one write.  Returns the lines written."""
        try:
            self._sweep()
        except Exception:
            self.errors += 1
        queue = self._queue
        if not queue:
            return 0
        self._queue = []
        fmt = self._format
        parts = []
        for entry in queue:
            try:
                parts.append(fmt(entry))
            except Exception:
                self.errors += 1
        if not parts or self._fd is None:
            return 0
        try:
            self._write("".join(parts).encode("ascii", "backslashreplace"))
        except OSError:
            self.write_errors += 1
            return 0
        self.lines += len(parts)
        return len(parts)

    def _sweep(self) -> None:
        """Forget ended windows, oldest first, queueing their summaries."""
        sources = self._sources
        if not sources:
            return
        now = self.clock()
        interval = self.interval
        ended = []
        for source, entry in sources.items():
            if now - entry[0] < interval:
                break
            ended.append(source)
        if not ended:
            return
        queue = self._queue
        wall = self.wall()
        for source in ended:
            entry = sources.pop(source)
            if entry[2]:
                queue.append((_SUPPRESSED, wall, source, entry[2], interval))

    def _write(self, data: bytes) -> None:
        fd = self._fd
        view = memoryview(data)
        while view:
            n = os.write(fd, view)  # type: ignore[arg-type]
            view = view[n:]

    def _time(self, t: float) -> str:
        sec, ms = divmod(round(t * 1000), 1000)
        if sec != self._sec:
            self._sec_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
            self._sec = sec
        return "%s.%03dZ" % (self._sec_text, ms)

    def _format(self, entry: tuple) -> str:
        kind = entry[0]
        if kind == _DENY:
            _, t, source, port, reason, method, host, trunk_sid, data = entry
            call_id, ua = header_values(data)
            v = format_value
            return (f"time={self._time(t)} event=deny src={v(source)} sport={v(port)} method={v(method)} "
                    f"host={v(host)} trunk={v(trunk_sid)} reason={v(reason)} call_id={v(call_id)} ua={v(ua)}\n")
        if kind == _SUPPRESSED:
            _, t, source, count, interval = entry
            return (f"time={self._time(t)} event=suppressed src={format_value(source)} count={int(count)} "
                    f"interval={format(interval, 'g')}\n")
        if kind == _BAN:
            _, t, source, until, count = entry
            return (f"time={self._time(t)} event=ban src={format_value(source)} until={self._time(until)} "
                    f"count={int(count)}\n")
        _, t, source = entry
        return f"time={self._time(t)} event=unban src={format_value(source)}\n"

    # -- the file ----------------------------------------------------------------
    def _open(self) -> int:
        if self.path == "-":
            try:
                return sys.stderr.fileno()
            except (AttributeError, ValueError, OSError):
                return 2
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        return os.open(self.path, flags, 0o640)

    def reopen(self) -> None:
        """Close and reopen the path (logrotate, SIGHUP).  The new file is
        opened before the old one is closed: on OSError the old one stays."""
        fd = self._open()
        old, self._fd = self._fd, fd
        if old is not None and self.path != "-":
            os.close(old)

    def close(self) -> None:
        """Flush, then close the file (stderr stays open).  Later records
        are queued and dropped at the next flush."""
        try:
            self.flush()
        finally:
            fd, self._fd = self._fd, None
            if fd is not None and self.path != "-":
                os.close(fd)
