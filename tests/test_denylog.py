"""The deny log (sipgate.denylog) and its fail2ban filter and jail.

Real files in tmp_path, the real ``fail2ban-regex`` / ``fail2ban-client``
(Debian's fail2ban) run as subprocesses on copies of the repository's
filter and jail, with a fake clock where time matters.  fail2ban only reads
here: fail2ban-regex bans nothing, and ``fail2ban-client -t`` only parses a
configuration directory (a copy in tmp_path) without talking to a server.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipgate import denylog
from sipgate.denylog import MAX_HEAD, MAX_VALUE, DenyLog, format_value, header_values

ROOT = Path(__file__).resolve().parent.parent
FILTER = ROOT / "config" / "fail2ban" / "filter.d" / "sipgate.conf"
JAIL = ROOT / "config" / "fail2ban" / "jail.d" / "sipgate.conf"

# 2026-11-29T07:01:02.345Z
WALL = 1795935662.345
KEYS = ["time", "event", "src", "sport", "method", "host", "trunk", "reason", "call_id", "ua"]


class Clock:
    """A settable clock (for both ``clock`` and ``wall``)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def sip(method: str = "INVITE", host: str = "trunk.example.com", call_id: bytes | None = b"a84b4c76e66710@pc33",
        ua: bytes | None = b"friendly-scanner", eol: bytes = b"\r\n", call_id_name: bytes = b"Call-ID",
        ua_name: bytes = b"User-Agent", body: bytes = b"") -> bytes:
    """A plausible SIP request, with the Call-ID and User-Agent as given."""
    lines = [f"{method} sip:100@{host} SIP/2.0".encode(),
             b"Via: SIP/2.0/UDP 203.0.113.7:5060;branch=z9hG4bK776asdhds",
             b"Max-Forwards: 70",
             b"To: <sip:100@" + host.encode() + b">",
             b"From: <sip:scanner@203.0.113.7>;tag=1928301774"]
    if call_id is not None:
        lines.append(call_id_name + b": " + call_id)
    lines.append(b"CSeq: 1 " + method.encode())
    if ua is not None:
        lines.append(ua_name + b": " + ua)
    lines.append(b"Content-Length: %d" % len(body))
    return eol.join(lines) + eol + eol + body


# -- a small logfmt reader (the test's own, to check the writer) -------------

_PAIR = re.compile(r'([a-z_]+)=("(?:[^"\\]|\\.)*"|[^ "]*)(?: |$)')
_ESC = re.compile(r'\\(x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8}|.)')


def _unescape_one(m: re.Match[str]) -> str:
    e = m.group(1)
    if e[0] == "x":
        o = int(e[1:], 16)
        return chr(0xDC00 + o) if o >= 0x80 else chr(o)  # a raw byte, as surrogateescape decodes it
    if e[0] in "uU" and len(e) > 1:
        return chr(int(e[1:], 16))
    return {"n": "\n", "r": "\r", "t": "\t"}.get(e, e)


def parse_line(line: str) -> list[tuple[str, str | None]]:
    """key/value pairs of one line, values unescaped; a bare ``-`` is None.
    Raises unless the whole line is pairs."""
    assert line.endswith("\n") and "\n" not in line[:-1]
    text = line[:-1]
    pairs = []
    pos = 0
    while pos < len(text):
        m = _PAIR.match(text, pos)
        assert m is not None, f"not logfmt at {pos}: {text!r}"
        key, raw = m.groups()
        if raw.startswith('"'):
            value: str | None = _ESC.sub(_unescape_one, raw[1:-1])
        else:
            assert "\\" not in raw and "=" not in raw
            value = None if raw == "-" else raw
        pairs.append((key, value))
        pos = m.end()
    return pairs


def expected(value: str | bytes | None) -> str | None:
    """What a value reads back as: decoded (bytes that are not UTF-8 as
    surrogate escapes) and cut to MAX_VALUE characters."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "surrogateescape")
    value = value[:MAX_VALUE]
    return None if value == "-" else value


# -- fail2ban -------------------------------------------------------------------

@pytest.fixture
def f2b_filter(tmp_path: Path) -> Path:
    """The repository's filter, byte for byte, alone in a fail2ban config
    directory of the test's own (so no distribution .local file applies)."""
    target = tmp_path / "fail2ban" / "filter.d" / "sipgate.conf"
    target.parent.mkdir(parents=True)
    shutil.copyfile(FILTER, target)
    return target


def fail2ban_regex(log: Path, filter_file: Path, *extra: str) -> str:
    proc = subprocess.run(
        ["fail2ban-regex", "--raw", "--usedns=no", *extra, str(log), str(filter_file)],
        capture_output=True, text=True, timeout=120, cwd=log.parent,
        env={**os.environ, "HOME": str(log.parent), "LC_ALL": "C.UTF-8"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def banned_rows(log: Path, filter_file: Path) -> list[tuple[str, int]]:
    """(host, epoch second) of every line fail2ban counts as a failure."""
    out = fail2ban_regex(log, filter_file, "--out=row")
    rows = []
    for line in out.splitlines():
        if line.strip():
            row = ast.literal_eval(line.rstrip().rstrip(","))
            rows.append((row[0], int(row[1])))
    return rows


def summary(log: Path, filter_file: Path) -> tuple[int, int, int]:
    """(lines, matched, missed) as fail2ban-regex reports them."""
    out = fail2ban_regex(log, filter_file)
    assert f"basedir: {filter_file.parent.parent}" in out  # our copy, not /etc/fail2ban
    m = re.search(r"^Lines: (\d+) lines, (\d+) ignored, (\d+) matched, (\d+) missed", out, re.M)
    assert m is not None, out
    lines, ignored, matched, missed = map(int, m.groups())
    assert ignored == 0
    return lines, matched, missed


def conf_value(path: Path, key: str) -> str:
    """One key of a fail2ban .conf, continuation lines joined (as fail2ban
    reads it: ``%%`` is a literal ``%``)."""
    text = path.read_text()
    m = re.search(rf"^{re.escape(key)}\s*=\s*(.*(?:\n[ \t]+\S.*)*)", text, re.M)
    assert m is not None, key
    return m.group(1).strip().replace("%%", "%")


def filter_regexes() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """(date pattern, failregex) of the filter file, turned into Python
    regexes: strftime fields as digits, <HOST> as a simple IP group."""
    date = conf_value(FILTER, "datepattern")
    for field, rx in (("%Y", r"\d{4}"), ("%m", r"\d{2}"), ("%d", r"\d{2}"), ("%H", r"\d{2}"),
                      ("%M", r"\d{2}"), ("%S", r"\d{2}"), ("%f", r"\d{1,6}"), ("%z", r"(?:Z|[+-]\d{2}:?\d{2})")):
        date = date.replace(field, rx)
    fail = conf_value(FILTER, "failregex")
    assert "\n" not in fail and fail.count("<HOST>") == 1
    fail = fail.replace("<HOST>", r"(?P<host>[0-9A-Fa-f.:]+)")
    return re.compile(date), re.compile(fail)


DATE_RE, FAIL_RE = filter_regexes()


def fail2ban_host(line: str) -> str | None:
    """The host the filter finds in ``line``, matching as fail2ban does: the
    date (the datepattern's group) is cut out of the line first."""
    d = DATE_RE.search(line)
    assert d is not None, line
    cut = line[:d.start(1)] + line[d.end(1):]
    m = FAIL_RE.search(cut.rstrip("\n"))
    return m.group("host") if m is not None else None


def written(path: Path) -> list[str]:
    return path.read_text(encoding="ascii").splitlines(keepends=True)


# -- (1) deny lines -> fail2ban, with the right host --------------------------------

SOURCES = ["203.0.113.7", "198.51.100.23", "192.0.2.200", "10.20.30.40", "2001:db8::7"]


def test_fail2ban_counts_each_deny_line_for_its_source_and_nothing_else(tmp_path, f2b_filter):
    clock = Clock(1000.0)
    wall = Clock(WALL)
    path = tmp_path / "deny.log"
    log = DenyLog(str(path), burst=2, interval=60.0, clock=clock, wall=wall)
    reasons = ["forbidden", "no_trunk", "bad_request"]
    expected_rows = []
    for i, source in enumerate(SOURCES):
        for k in range(2):
            wall.now = WALL + 10 * i + k
            log.record(source, 5060 + i, reasons[(i + k) % 3], b"INVITE" if k else "OPTIONS",
                       "trunk.example.com" if i % 2 else None, "TK" + "0" * 32 if i % 2 else None,
                       sip(ua=b"UA %d" % i, call_id=b"call-%d-%d@x" % (i, k)))
            expected_rows.append((source, int(wall.now)))
    # Suppressed: a third refusal from the first source within its window.
    log.record(SOURCES[0], 5060, "forbidden", b"INVITE", "trunk.example.com", None, sip())
    log.ban("198.51.100.23", WALL + 3600, 31)
    log.unban("198.51.100.23")
    assert log.flush() == 2 * len(SOURCES) + 2
    clock.now += 60.0
    assert log.flush() == 1  # the first source's summary
    log.close()

    lines = written(path)
    assert len(lines) == 2 * len(SOURCES) + 3
    assert sum(" event=deny " in line for line in lines) == 2 * len(SOURCES)
    assert lines[-1].startswith("time=") and " event=suppressed src=203.0.113.7 count=1 interval=60\n" in lines[-1]
    assert any(" event=ban src=198.51.100.23 until=2026-11-29T08:" in line and line.endswith(" count=31\n")
               for line in lines)

    # Every deny line, and only those, is a failure, for its own source, at its time.
    assert banned_rows(path, f2b_filter) == expected_rows
    assert summary(path, f2b_filter) == (len(lines), 2 * len(SOURCES), 3)
    assert log.lines == len(lines)
    assert log.suppressed == 1


def test_the_line_format_exactly(tmp_path):
    path = tmp_path / "deny.log"
    log = DenyLog(str(path), clock=Clock(5.0), wall=Clock(WALL))
    log.record("203.0.113.7", 5060, "forbidden", b"INVITE", "trunk.example.com",
               "TK0123456789abcdef0123456789abcdef", sip(ua=b"friendly-scanner 1.0"))
    log.record("2001:db8::7", 5062, "bad_request", "-", None, None, b"garbage\r\n\r\n")
    log.record("192.0.2.1", 5060, "no_trunk", "INVITE", "", None, sip(call_id=b"", ua=b"-"))
    log.ban("203.0.113.7", WALL + 60.0, 31)
    log.unban("203.0.113.7")
    log.close()
    assert path.read_text() == (
        "time=2026-11-29T07:01:02.345Z event=deny src=203.0.113.7 sport=5060 method=INVITE "
        "host=trunk.example.com trunk=TK0123456789abcdef0123456789abcdef reason=forbidden "
        'call_id=a84b4c76e66710@pc33 ua="friendly-scanner 1.0"\n'
        "time=2026-11-29T07:01:02.345Z event=deny src=2001:db8::7 sport=5062 method=- host=- trunk=- "
        "reason=bad_request call_id=- ua=-\n"
        'time=2026-11-29T07:01:02.345Z event=deny src=192.0.2.1 sport=5060 method=INVITE host="" trunk=- '
        'reason=no_trunk call_id="" ua=-\n'
        "time=2026-11-29T07:01:02.345Z event=ban src=203.0.113.7 until=2026-11-29T07:02:02.345Z count=31\n"
        "time=2026-11-29T07:01:02.345Z event=unban src=203.0.113.7\n")


@pytest.mark.parametrize("wall, text", [
    (0.0, "1970-01-01T00:00:00.000Z"),
    (WALL, "2026-11-29T07:01:02.345Z"),
    (1795935662.9996, "2026-11-29T07:01:03.000Z"),  # rounded, into the next second
    (1795935662.0004, "2026-11-29T07:01:02.000Z"),
    (1798761599.001, "2026-12-31T23:59:59.001Z"),
])
def test_time_is_utc_iso8601_with_milliseconds(tmp_path, wall, text):
    path = tmp_path / "deny.log"
    log = DenyLog(str(path), clock=Clock(0.0), wall=Clock(wall))
    log.unban("192.0.2.1")
    log.close()
    assert path.read_text() == f"time={text} event=unban src=192.0.2.1\n"


# -- (2) hostile values -----------------------------------------------------------

HOSTILE_UA = (b'sipvicious" src=9.9.9.9 ua="x\rtime=2026-11-29T07:01:02.345Z event=deny src=9.9.9.9 sport=1 '
              b'\x00\x07\x1b[2J\x7f \xff\xfe\xc3\x28 \xe2\x80\xa8\xc2\x85 \\" =\t\x0b\x0c end')
HOSTILE_CALL_ID = b'"\r src=9.9.9.9 \x00\xe9\xff'


def test_a_hostile_user_agent_and_call_id_stay_in_one_line_for_the_real_source(tmp_path, f2b_filter):
    path = tmp_path / "deny.log"
    log = DenyLog(str(path), clock=Clock(0.0), wall=Clock(WALL))
    data = sip(ua=HOSTILE_UA, call_id=HOSTILE_CALL_ID)
    # A folded User-Agent whose continuation line looks like a log line.
    folded = sip(ua=b"x\r\n time=2026-11-29T07:01:02.345Z event=deny src=9.9.9.9 sport=1 method=INVITE",
                 call_id=b"c\n\tsrc=9.9.9.9", eol=b"\r\n")
    log.record("198.51.100.23", 5060, "forbidden", b"INVITE", "trunk.example.com", "TK1", data)
    log.record("198.51.100.23", 5061, "no_trunk", 'INV"ITE\r\nsrc=9.9.9.9', 'h src=9.9.9.9\n', 'T"K', folded)
    log.close()

    raw = path.read_bytes()
    assert raw.count(b"\n") == 2 and raw.endswith(b"\n")
    assert all(0x20 <= b <= 0x7E for b in raw.replace(b"\n", b""))  # ASCII, no control character
    lines = written(path)
    assert all(line.startswith("time=2026-11-29T07:01:02.345Z event=deny src=198.51.100.23 ") for line in lines)
    assert all("9.9.9.9" in line for line in lines)  # it is there, escaped, in a value

    first = dict(parse_line(lines[0]))
    assert list(first) == KEYS
    assert first["ua"] == HOSTILE_UA.decode("utf-8", "surrogateescape")
    assert first["call_id"] == HOSTILE_CALL_ID.decode("utf-8", "surrogateescape")
    assert first["src"] == "198.51.100.23"
    second = dict(parse_line(lines[1]))
    assert list(second) == KEYS
    assert second["ua"] == "x time=2026-11-29T07:01:02.345Z event=deny src=9.9.9.9 sport=1 method=INVITE"
    assert second["call_id"] == "c src=9.9.9.9"
    assert second["method"] == 'INV"ITE\r\nsrc=9.9.9.9'
    assert second["host"] == "h src=9.9.9.9\n"
    assert second["trunk"] == 'T"K'

    assert banned_rows(path, f2b_filter) == [("198.51.100.23", int(WALL))] * 2
    assert summary(path, f2b_filter) == (2, 2, 0)


def test_escaping_rules():
    assert format_value("INVITE") == "INVITE"
    assert format_value(b"INVITE") == "INVITE"
    assert format_value(5060) == "5060"
    assert format_value(None) == "-"
    assert format_value("") == '""'
    assert format_value("a b") == '"a b"'
    assert format_value("a=b") == '"a=b"'
    assert format_value('say "hi"') == r'"say \"hi\""'
    assert format_value("back\\slash") == r'"back\\slash"'
    assert format_value("l1\r\nl2\tx") == r'"l1\r\nl2\tx"'
    assert format_value("\x00\x1f\x7f") == r'"\x00\x1f\x7f"'
    assert format_value(b"\xff\xfe") == r'"\xff\xfe"'
    assert format_value("é\u2028😀") == r'"\u00e9\u2028\U0001f600"'
    assert format_value(b"caf\xc3\xa9") == r'"caf\u00e9"'
    assert format_value("x" * 10_000) == "x" * MAX_VALUE
    assert format_value(b"y " * 100_000) == '"' + ("y " * 10_000)[:MAX_VALUE] + '"'


# -- (3) the rate limit -------------------------------------------------------------

def events(path: Path) -> list[tuple[str, str, str | None]]:
    """(event, src, count) of each line."""
    out = []
    for line in written(path):
        d = dict(parse_line(line))
        out.append((d["event"], d["src"], d.get("count")))
    return out


def test_at_most_burst_lines_per_source_per_interval_and_a_summary_of_the_rest(tmp_path):
    clock = Clock(1000.0)
    path = tmp_path / "deny.log"
    log = DenyLog(str(path), burst=3, interval=60.0, clock=clock, wall=Clock(WALL))
    a, b = "203.0.113.7", "2001:db8::7"
    for _ in range(10):
        log.record(a, 5060, "forbidden", b"INVITE", "t.example.com", "TK1", sip())
        clock.now += 1.0
    for _ in range(2):
        log.record(b, 5060, "forbidden", b"INVITE", "t.example.com", "TK1", sip())
    assert (log.suppressed, log.pending) == (7, 5)
    log.flush()
    assert events(path) == [("deny", a, None)] * 3 + [("deny", b, None)] * 2
    assert (log.lines, log.suppressed) == (5, 7)

    # Still inside a's window (started at 1000): suppressed, no summary yet.
    clock.now = 1059.9
    log.record(a, 5060, "forbidden", b"INVITE", "t.example.com", "TK1", sip())
    log.flush()
    assert len(written(path)) == 5 and log.suppressed == 8

    # a's next refusal after its window: the summary first, then the line.
    clock.now = 1060.0
    log.record(a, 5060, "forbidden", b"INVITE", "t.example.com", "TK1", sip())
    log.flush()
    assert events(path)[5:] == [("suppressed", a, "8"), ("deny", a, None)]

    # b was never over its limit: no summary when its window ends.
    # a floods again in its new window (1060..1120), then stops.
    for _ in range(5):
        log.record(a, 5060, "forbidden", b"INVITE", "t.example.com", "TK1", sip())
    log.flush()
    assert events(path)[7:] == [("deny", a, None)] * 2
    clock.now = 1119.0
    log.flush()
    assert len(written(path)) == 9
    # The flood ended with the window: the summary comes at a later flush.
    clock.now = 1120.0
    log.flush()
    assert events(path)[9:] == [("suppressed", a, "3")]
    clock.now = 2000.0
    log.flush()
    assert len(written(path)) == 10  # reported once
    assert (log.lines, log.suppressed) == (10, 11)
    assert log.tracked == 0  # ended windows are forgotten at flush

    # A fresh window for both.
    log.record(a, 5060, "forbidden", b"INVITE", "t.example.com", "TK1", sip())
    log.record(b, 5060, "forbidden", b"INVITE", "t.example.com", "TK1", sip())
    log.close()
    assert events(path)[10:] == [("deny", a, None), ("deny", b, None)]


def test_sources_are_limited_independently(tmp_path):
    clock = Clock(0.0)
    path = tmp_path / "deny.log"
    log = DenyLog(str(path), burst=2, interval=10.0, clock=clock, wall=Clock(WALL))
    sources = [f"192.0.2.{i}" for i in range(1, 6)]
    for _ in range(4):
        for s in sources:
            log.record(s, 5060, "forbidden", b"INVITE", "t", None, sip())
    clock.now = 10.0
    log.close()
    counts: dict[tuple[str, str], int] = {}
    for event, src, count in events(path):
        counts[(event, src)] = counts.get((event, src), 0) + (int(count) if count else 1)
    for s in sources:
        assert counts[("deny", s)] == 2
        assert counts[("suppressed", s)] == 2
    assert log.suppressed == 10 and log.lines == 15


def test_bans_are_never_rate_limited(tmp_path):
    path = tmp_path / "deny.log"
    log = DenyLog(str(path), burst=1, clock=Clock(0.0), wall=Clock(WALL))
    for i in range(20):
        log.ban("203.0.113.7", WALL + 60, 31 + i)
        log.unban("203.0.113.7")
    log.close()
    assert [e[0] for e in events(path)] == ["ban", "unban"] * 20
    assert log.suppressed == 0 and log.lines == 40


# -- (4) bounded memory -------------------------------------------------------------

def test_a_flood_of_spoofed_sources_keeps_memory_flat(tmp_path):
    clock = Clock(0.0)
    log = DenyLog(os.devnull, max_sources=1000, max_queue=500, clock=clock, wall=Clock(WALL))
    data = sip()

    def flood(start: int, n: int) -> None:
        for i in range(start, start + n):
            log.record(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 5060, "forbidden", b"INVITE", "t", None, data)
            clock.now += 1e-5

    tracemalloc.start()
    try:
        # Warm up: every structure at its bound, and every tracked source
        # allocated while tracing (the frees of older blocks are not seen).
        flood(0, 20_000)
        before = tracemalloc.get_traced_memory()[0]
        flood(20_000, 180_000)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert log.tracked == 1000
    assert log.pending == 500
    assert grown < 20_000, grown  # 180,000 more sources, the same memory
    assert log.overflowed == 200_000 - 500 and log.suppressed == log.overflowed
    log.close()
    assert log.pending == 0


def test_a_forgotten_source_still_gets_its_summary(tmp_path):
    clock = Clock(0.0)
    path = tmp_path / "deny.log"
    log = DenyLog(str(path), burst=1, max_sources=3, clock=clock, wall=Clock(WALL))
    for _ in range(4):
        log.record("203.0.113.7", 5060, "forbidden", b"INVITE", "t", None, sip())
    for i in range(3):  # pushes 203.0.113.7 out
        log.record(f"192.0.2.{i}", 5060, "forbidden", b"INVITE", "t", None, sip())
    assert log.tracked == 3
    log.close()
    assert ("suppressed", "203.0.113.7", "3") in events(path)


# -- (5) any values: one line, parses back, the filter finds exactly the source ----------

field = st.one_of(st.text(max_size=300), st.binary(max_size=1200))
header_value = st.binary(max_size=600).filter(lambda b: b"\n" not in b).map(lambda b: b.strip(b" \t\r"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(source=st.ip_addresses().map(str), port=st.integers(0, 65535), reason=st.text(max_size=300),
       method=field, host=st.one_of(st.none(), field), trunk=st.one_of(st.none(), st.text(max_size=300)),
       call_id=st.one_of(st.none(), header_value), ua=st.one_of(st.none(), header_value),
       junk=st.binary(max_size=200))
def test_any_values_make_one_parsable_line_attributed_to_the_source(tmp_path, source, port, reason, method, host,
                                                                     trunk, call_id, ua, junk):
    path = tmp_path / "prop.log"
    path.unlink(missing_ok=True)
    log = DenyLog(str(path), clock=Clock(0.0), wall=Clock(WALL))
    data = sip(call_id=call_id, ua=ua, body=junk, call_id_name=b"i")
    log.record(source, port, reason, method, host, trunk, data)
    log.ban(source, WALL + 60, 7)
    log.unban(source)
    log.close()
    raw = path.read_bytes()
    assert raw.count(b"\n") == 3
    assert all(0x20 <= b <= 0x7E for b in raw.replace(b"\n", b""))
    deny, ban, unban = written(path)

    pairs = parse_line(deny)
    assert [k for k, _ in pairs] == KEYS
    d = dict(pairs)
    assert d["event"] == "deny"
    assert d["src"] == source
    assert d["sport"] == str(port)
    assert d["reason"] == expected(reason)
    assert d["method"] == expected(method)
    assert d["host"] == expected(host)
    assert d["trunk"] == expected(trunk)
    assert d["call_id"] == expected(call_id)
    assert d["ua"] == expected(ua)

    assert fail2ban_host(deny) == source
    assert fail2ban_host(ban) is None and fail2ban_host(unban) is None
    assert dict(parse_line(ban))["src"] == source


# -- (6) record() does no formatting --------------------------------------------------

class Blob(bytes):
    """A datagram that counts every method called on it."""

    calls: list[str] = []

    def __getattribute__(self, name):
        if not name.startswith("__") or name in ("__getitem__", "__iter__", "__contains__", "__len__"):
            Blob.calls.append(name)
        return super().__getattribute__(name)


def test_record_only_queues_formatting_and_parsing_happen_at_flush(tmp_path, monkeypatch):
    calls = {"header_values": 0, "format_value": 0}

    def counting(name, fn):
        def wrapper(*args):
            calls[name] += 1
            return fn(*args)
        return wrapper

    monkeypatch.setattr(denylog, "header_values", counting("header_values", header_values))
    monkeypatch.setattr(denylog, "format_value", counting("format_value", format_value))
    path = tmp_path / "deny.log"
    log = DenyLog(str(path), burst=1000, clock=Clock(0.0), wall=Clock(WALL))
    big = Blob(sip(ua=b"big-ua", body=b"x" * 60_000))
    Blob.calls = []
    for _ in range(100):
        log.record("203.0.113.7", 5060, "forbidden", b"INVITE", "t.example.com", "TK1", big)
    assert calls == {"header_values": 0, "format_value": 0}
    assert Blob.calls == []  # (slicing goes through the C slot, not a method)
    assert path.read_bytes() == b""
    assert log.flush() == 100
    assert calls["header_values"] == 100
    assert calls["format_value"] == 100 * 8  # src sport method host trunk reason call_id ua
    assert Blob.calls == []
    assert written(path)[0].endswith(" call_id=a84b4c76e66710@pc33 ua=big-ua\n")


def test_only_the_head_of_a_datagram_is_kept(tmp_path):
    path = tmp_path / "deny.log"
    log = DenyLog(str(path), clock=Clock(0.0), wall=Clock(WALL))
    padding = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 60) for i in range(80))
    late = sip(call_id=b"early", ua=None).replace(b"Content-Length", padding + b"User-Agent: late\r\nContent-Length")
    assert late.index(b"User-Agent: late") > MAX_HEAD
    log.record("203.0.113.7", 5060, "forbidden", b"INVITE", "t", None, late)
    log.close()
    d = dict(parse_line(written(path)[0]))
    assert (d["call_id"], d["ua"]) == ("early", None)


# -- Call-ID / User-Agent extraction ------------------------------------------------------

@pytest.mark.parametrize("data, call_id, ua", [
    (sip(), b"a84b4c76e66710@pc33", b"friendly-scanner"),
    (sip(call_id_name=b"i", ua_name=b"user-agent"), b"a84b4c76e66710@pc33", b"friendly-scanner"),
    (sip(call_id_name=b"I", ua_name=b"USER-AGENT"), b"a84b4c76e66710@pc33", b"friendly-scanner"),
    (sip(call_id_name=b"call-id"), b"a84b4c76e66710@pc33", b"friendly-scanner"),
    (sip(eol=b"\n"), b"a84b4c76e66710@pc33", b"friendly-scanner"),
    (sip(call_id=None, ua=None), None, None),
    (sip(call_id=None), None, b"friendly-scanner"),
    (sip(ua=None), b"a84b4c76e66710@pc33", None),
    (sip(ua=b"  padded ua \t"), b"a84b4c76e66710@pc33", b"padded ua"),
    (sip(ua=b"\xff\xfe\x00bin"), b"a84b4c76e66710@pc33", b"\xff\xfe\x00bin"),
    (sip(ua=b"folded\r\n  over\r\n\tthree"), b"a84b4c76e66710@pc33", b"folded over three"),
    (sip(call_id_name=b"Call-ID   "), b"a84b4c76e66710@pc33", b"friendly-scanner"),
    # Headers in the body, or header names that only start alike, do not count.
    (sip(call_id=None, ua=None, body=b"Call-ID: body\r\nUser-Agent: body\r\n"), None, None),
    (sip(call_id=None, ua=None, eol=b"\n", body=b"i: body\n"), None, None),
    (b"INVITE sip:x SIP/2.0\r\nIf-Match: 1\r\nUser-Agents: no\r\nCall-IDs: no\r\n\r\n", None, None),
    # The first of each wins; the request line is not a header.
    (b"i: not a header\r\nCall-ID: one\r\ni: two\r\nUser-Agent: a\r\nUser-Agent: b\r\n\r\n", b"one", b"a"),
    (b"INVITE sip:x SIP/2.0\ni: short\nCall-ID: long\n\n", b"short", None),
    (b"", None, None),
    (b"\xff\xfe", None, None),
])
def test_call_id_and_user_agent_extraction(data, call_id, ua):
    assert header_values(data) == (call_id, ua)


def test_huge_header_values_are_capped(tmp_path):
    path = tmp_path / "deny.log"
    log = DenyLog(str(path), clock=Clock(0.0), wall=Clock(WALL))
    log.record("203.0.113.7", 5060, "forbidden", "INVITE" * 1000, "h" * 3000, "TK" * 1000,
               sip(ua=b"\x01" * 3000, call_id=b"c" * 3000))
    log.close()
    line = written(path)[0]
    d = dict(parse_line(line))
    assert d["ua"] == "\x01" * MAX_VALUE and d["call_id"] == "c" * MAX_VALUE
    assert d["method"] == ("INVITE" * 1000)[:MAX_VALUE] and len(d["host"]) == MAX_VALUE
    assert len(line) < 3000  # 256 escaped characters are at most 4 bytes each here


# -- the file ------------------------------------------------------------------------------

def test_reopen_follows_logrotate(tmp_path):
    path = tmp_path / "deny.log"
    log = DenyLog(str(path), burst=100, clock=Clock(0.0), wall=Clock(WALL))
    log.record("192.0.2.1", 5060, "forbidden", b"INVITE", "t", None, sip())
    log.flush()
    rotated = tmp_path / "deny.log.1"
    path.rename(rotated)
    log.record("192.0.2.2", 5060, "forbidden", b"INVITE", "t", None, sip())
    log.flush()  # still the old file until the reopen
    log.reopen()
    log.record("192.0.2.3", 5060, "forbidden", b"INVITE", "t", None, sip())
    log.close()
    assert [dict(parse_line(x))["src"] for x in written(rotated)] == ["192.0.2.1", "192.0.2.2"]
    assert [dict(parse_line(x))["src"] for x in written(path)] == ["192.0.2.3"]
    assert path.stat().st_mode & 0o777 == 0o640 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_appends_to_an_existing_file(tmp_path):
    path = tmp_path / "deny.log"
    path.write_text("earlier line\n")
    log = DenyLog(str(path), clock=Clock(0.0), wall=Clock(WALL))
    log.unban("192.0.2.1")
    log.close()
    assert written(path) == ["earlier line\n", "time=2026-11-29T07:01:02.345Z event=unban src=192.0.2.1\n"]


def test_dash_is_stderr(capfd):
    log = DenyLog("-", clock=Clock(0.0), wall=Clock(WALL))
    log.unban("192.0.2.1")
    log.close()
    assert capfd.readouterr().err == "time=2026-11-29T07:01:02.345Z event=unban src=192.0.2.1\n"
    os.fstat(2)  # stderr is still open


def test_failures_are_counted_never_raised(tmp_path):
    log = DenyLog("/dev/full", clock=Clock(0.0), wall=Clock(WALL))
    log.record("192.0.2.1", 5060, "forbidden", b"INVITE", "t", None, sip())
    assert log.flush() == 0  # ENOSPC
    assert (log.write_errors, log.lines) == (1, 0)
    log.record("192.0.2.2", 5060, "forbidden", b"INVITE", "t", None, None)  # type: ignore[arg-type]
    assert log.errors == 1

    def broken() -> float:
        raise RuntimeError("clock")

    log.clock = broken
    log.record("192.0.2.3", 5060, "forbidden", b"INVITE", "t", None, sip())
    assert log.errors == 2
    log.close()

    with pytest.raises(OSError):
        DenyLog(str(tmp_path / "no" / "such" / "dir.log"))
    (tmp_path / "d").mkdir()
    ok = DenyLog(str(tmp_path / "d" / "x.log"), clock=Clock(0.0), wall=Clock(WALL))
    (tmp_path / "d").rename(tmp_path / "moved")
    with pytest.raises(OSError):
        ok.reopen()  # cannot open d/x.log: the old file stays in use
    ok.unban("192.0.2.1")
    ok.close()
    assert written(tmp_path / "moved" / "x.log") == ["time=2026-11-29T07:01:02.345Z event=unban src=192.0.2.1\n"]


# -- the jail ---------------------------------------------------------------------------------

def test_the_jail_is_a_valid_fail2ban_configuration(tmp_path):
    """The distribution's fail2ban configuration (copied) with only our jail
    enabled, its log path pointed at a file here: fail2ban-client -t accepts
    it and resolves the jail to our filter, UDP port 5060 and a ban action."""
    conf = tmp_path / "fail2ban"
    shutil.copytree("/etc/fail2ban", conf, symlinks=True)
    for f in (conf / "jail.d").iterdir():
        f.unlink()
    shutil.copyfile(JAIL, conf / "jail.d" / "sipgate.conf")
    shutil.copyfile(FILTER, conf / "filter.d" / "sipgate.conf")
    deny = tmp_path / "deny.log"
    deny.write_text("")
    (conf / "jail.d" / "sipgate.local").write_text(f"[sipgate]\nlogpath = {deny}\n")
    env = {**os.environ, "HOME": str(tmp_path)}
    test = subprocess.run(["fail2ban-client", "-c", str(conf), "-t"], capture_output=True, text=True,
                          timeout=120, env=env)
    assert test.returncode == 0, test.stdout + test.stderr
    assert "OK: configuration test is successful" in test.stdout
    dump = subprocess.run(["fail2ban-client", "-c", str(conf), "-d"], capture_output=True, text=True,
                          timeout=120, env=env)
    assert dump.returncode == 0, dump.stdout + dump.stderr
    out = dump.stdout
    assert "['add', 'sipgate', 'auto']" in out
    assert f"['set', 'sipgate', 'addlogpath', '{deny}', 'head']" in out
    assert "['set', 'sipgate', 'addfailregex', '^time=\\\\S* event=deny src=<HOST> " in out
    assert "['set', 'sipgate', 'datepattern', '^time=(%Y-%m-%dT%H:%M:%S\\\\.%f%z)']" in out
    assert "['set', 'sipgate', 'usedns', 'no']" in out
    assert "['port', '5060'], ['protocol', 'udp']" in out
    assert "['set', 'sipgate', 'addaction', 'iptables-multiport']" in out
    assert "['start', 'sipgate']" in out
    assert "'sshd'" not in out  # nothing but our jail was started


# -- a real `sipgate serve` writes the lines fail2ban reads ---------------------------

def test_lines_written_by_a_running_sipgate_ban_exactly_the_refused_sources(tmp_path, f2b_filter):
    """403 (a denied source), 404 (an unknown domain) and 400 (a malformed
    request) from three sources through a real edge: fail2ban-regex, with the
    repository's filter, counts each refusal for its source, and the admitted
    call from 127.0.0.2 for no one."""
    from helpers import DEMO_SEED, Serving, UdpPeer, request, write_config
    from sipgate.sip import parse

    log = tmp_path / "deny.log"
    with UdpPeer("127.0.0.1") as pbx, UdpPeer("127.0.0.3") as denied, UdpPeer("127.0.0.6") as lost, \
            UdpPeer("127.0.0.7") as broken, UdpPeer("127.0.0.2") as allowed:
        config = write_config(tmp_path, pbx.address[1], extra=f'[log]\ndeny_log = "{log}"\n')
        server = Serving(["serve", "--config", str(config), "--seed", str(DEMO_SEED)])
        edge = ("127.0.0.1", server.sip_port)
        try:
            for i in range(3):
                denied.send(request(via_host=f"127.0.0.3:{denied.address[1]}", call_id=f"d{i}",
                                    branch=f"z9hG4bK-d{i}", extra=['User-Agent: "evil" src=9.9.9.9']), edge)
                assert parse(denied.recv()[0]).status == 403
            lost.send(request(ruri="sip:1@nobody.example", via_host=f"127.0.0.6:{lost.address[1]}"), edge)
            assert parse(lost.recv()[0]).status == 404
            bad = request(via_host=f"127.0.0.7:{broken.address[1]}").replace(b"Max-Forwards: 70", b"Max-Forwards: abc")
            broken.send(bad, edge)
            assert parse(broken.recv()[0]).status == 400
            allowed.send(request(via_host=f"127.0.0.2:{allowed.address[1]}"), edge)
            assert parse(pbx.recv()[0]).method == "INVITE"
        finally:
            assert server.stop() == 0
    rows = banned_rows(log, f2b_filter)
    assert sorted(host for host, _ in rows) == ["127.0.0.3"] * 3 + ["127.0.0.6", "127.0.0.7"]
    text = log.read_text()
    assert "reason=forbidden" in text and "reason=no_trunk" in text and "reason=bad_request" in text
    assert "trunk=TK" in text and "host=demo.sipgate.test" in text
