"""SIPp harness for sipgate's end-to-end tests and load benchmarks.

Runs SIPp agents through pysipp (a test-only dependency, imported lazily by
:func:`load_pysipp`) and reads each agent's outcome from SIPp's own output
files, never from its exit code alone:

* ``-trace_stat -stf <name>.stat.csv -fd 1``: the statistics CSV.  Its last
  row holds the cumulative counters (``SuccessfulCall(C)``,
  ``FailedCall(C)``, ``TotalCallCreated`` ...).  This is the primary source.
* ``-trace_screen -screen_file <name>.screen.log``: the final screens, written
  when SIPp quits; used when the CSV has no row (e.g. an agent killed early).
* ``-trace_counts``: per-message counters (``<scen>_<pid>_counts.csv``, always
  in SIPp's working directory, which is the agent's log directory here).
* ``-trace_msg -message_file <name>.messages.log`` (optional): every message
  sent and received, parsed by :func:`parse_message_log`.

API::

    load_pysipp() -> module
    free_udp_port(host="127.0.0.1") -> int
    scenario_path(scenario) -> str | None
    start_agent(role, scenario, local, remote=None, **opts) -> SippProcess
    run_uas(local, scenario="uas", **opts) -> SippProcess      # background
    start_uac(local, remote, scenario="uac", **opts) -> SippProcess
    run_uac(local, remote, scenario="uac", **opts) -> SippResult  # blocking
    SippProcess.wait(timeout=None) / .stop(grace=...) -> SippResult
    parse_message_log(path) -> list[SipTrace]

Every process is bounded twice: SIPp's own ``-timeout`` and a Python-side
deadline after which it is stopped by PID (SIGUSR1, then SIGTERM, then
SIGKILL).  Only loopback addresses are meant to be used.
"""

from __future__ import annotations

import csv
import glob
import itertools
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "tests" / "scenarios"

#: Scenarios embedded in the SIPp binary (``-sn``).
BUILTIN_SCENARIOS = frozenset(
    {"uac", "uas", "regexp", "branchc", "branchs", "uac_pcap",
     "3pcc-C-A", "3pcc-C-B", "3pcc-A", "3pcc-B"}
)

# SIPp exit codes (sipp -h).
EXIT_OK = 0
EXIT_CALLS_FAILED = 1
EXIT_INTERNAL_COMMAND = 97
EXIT_NO_CALLS = 99

Addr = tuple[str, int]

_load_lock = threading.Lock()
_seq = itertools.count(1)


# --------------------------------------------------------------------------
# pysipp import shim
# --------------------------------------------------------------------------

def load_pysipp() -> types.ModuleType:
    """Import and return pysipp 0.1.0 under pluggy >= 1.0.

    pysipp/plugin.py runs ``pluggy.PluginManager('pysipp', implprefix='pysipp')``
    at import time; pluggy 1.0 removed ``implprefix`` (which made every
    ``pysipp*`` function of a registered plugin a hook implementation, marked
    or not, e.g. in a scenario dir's pysipp_conf.py).  For the duration of
    that one import we substitute a PluginManager subclass that accepts the
    argument and restores the old discovery rule in ``parse_hookimpl_opts``;
    the real class is put back right after, so nothing else is affected.
    """
    mod = sys.modules.get("pysipp")
    if mod is not None:
        return mod
    with _load_lock:
        mod = sys.modules.get("pysipp")
        if mod is not None:
            return mod
        import pluggy

        real = pluggy.PluginManager

        class _ImplPrefixPluginManager(pluggy.PluginManager):
            def __init__(self, project_name, implprefix=None):
                super().__init__(project_name)
                self._implprefix = implprefix

            def parse_hookimpl_opts(self, plugin, name):
                opts = super().parse_hookimpl_opts(plugin, name)
                if opts is None and self._implprefix and name.startswith(self._implprefix):
                    attr = _getattr_static(plugin, name)
                    if isinstance(attr, (types.FunctionType, types.MethodType,
                                         staticmethod, classmethod)):
                        opts = {}  # unmarked: default HookimplOpts
                return opts

        pluggy.PluginManager = _ImplPrefixPluginManager  # type: ignore[misc]
        try:
            with warnings.catch_warnings():
                # pysipp 0.1.0 uses imp, distutils and `is not` on literals.
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", SyntaxWarning)
                import pysipp
        finally:
            pluggy.PluginManager = real  # type: ignore[misc]
        return pysipp


def _getattr_static(obj: Any, name: str) -> Any:
    import inspect

    try:
        return inspect.getattr_static(obj, name)
    except AttributeError:
        return None


# --------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------

@dataclass
class SippResult:
    """Outcome of one SIPp agent, parsed from its output files."""

    name: str
    cmd: str
    pid: int | None
    exit_code: int | None          # Popen returncode: negative = killed by signal
    successful_calls: int
    failed_calls: int
    total_calls: int               # TotalCallCreated
    source: str                    # "stat_csv", "screen" or "none"
    timed_out: bool
    logdir: Path
    stat_file: Path
    screen_file: Path
    error_file: Path | None
    message_file: Path | None
    counts_file: Path | None
    stats: dict[str, str] = field(default_factory=dict)   # last stat CSV row
    counts: dict[str, int] = field(default_factory=dict)  # last counts row
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return (self.exit_code == EXIT_OK and self.failed_calls == 0
                and not self.timed_out)

    def stat(self, column: str, default: int = 0) -> int:
        """Integer value of a stat CSV column, e.g. ``Retransmissions(C)``."""
        try:
            return int(float(self.stats[column]))
        except (KeyError, ValueError):
            return default

    def messages(self) -> list["SipTrace"]:
        if self.message_file is None:
            raise ValueError("agent ran without trace_msg=True")
        return parse_message_log(self.message_file)

    def received(self, method: str | None = None) -> list["SipTrace"]:
        """Received messages; with ``method``, only requests of that method."""
        return [m for m in self.messages() if m.direction == "received"
                and (method is None or m.method == method.upper())]

    def describe(self) -> str:
        """Short diagnostic for assertion messages."""
        parts = [f"{self.name}: exit={self.exit_code} ok={self.successful_calls} "
                 f"failed={self.failed_calls} total={self.total_calls} "
                 f"timed_out={self.timed_out} source={self.source} logs={self.logdir}"]
        if self.stderr.strip():
            parts.append("stderr: " + self.stderr.strip()[-800:])
        if self.error_file and self.error_file.exists():
            parts.append("errors: " + self.error_file.read_text(errors="replace")[-1500:])
        return "\n".join(parts)


_SCREEN_RE = {
    "successful_calls": re.compile(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)"),
    "failed_calls": re.compile(r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)"),
    "total_calls": re.compile(r"Total Calls created\s*\|\s*\|\s*(\d+)"),
}


def _last_csv_row(path: Path | None) -> dict[str, str]:
    if path is None or not path.exists():
        return {}
    with open(path, newline="", errors="replace") as fh:
        rows = [r for r in csv.reader(fh, delimiter=";") if r]
    if len(rows) < 2:
        return {}
    return {k: v for k, v in zip(rows[0], rows[-1]) if k}


def parse_outcome(stat_file: Path, screen_file: Path) -> tuple[dict[str, str], dict[str, int], str]:
    """Return (last stat row, call counters, source) from SIPp's files."""
    stats = _last_csv_row(stat_file)
    if "SuccessfulCall(C)" in stats:
        def num(col: str) -> int:
            try:
                return int(float(stats.get(col, "0") or 0))
            except ValueError:
                return 0
        return stats, {
            "successful_calls": num("SuccessfulCall(C)"),
            "failed_calls": num("FailedCall(C)"),
            "total_calls": num("TotalCallCreated"),
        }, "stat_csv"
    text = screen_file.read_text(errors="replace") if screen_file.exists() else ""
    calls = {}
    for key, rx in _SCREEN_RE.items():
        found = rx.findall(text)
        calls[key] = int(found[-1]) if found else 0
    return stats, calls, ("screen" if text else "none")


# --------------------------------------------------------------------------
# Message trace
# --------------------------------------------------------------------------

@dataclass
class SipTrace:
    """One message from a ``-trace_msg`` log."""

    direction: str       # "sent" or "received"
    start_line: str
    headers: list[tuple[str, str]]
    body: str

    @property
    def method(self) -> str | None:
        first = self.start_line.split(" ", 1)[0]
        return None if first.startswith("SIP/") else first

    @property
    def request_uri(self) -> str | None:
        parts = self.start_line.split()
        return parts[1] if self.method and len(parts) >= 2 else None

    @property
    def status(self) -> int | None:
        parts = self.start_line.split()
        if parts and parts[0].startswith("SIP/") and len(parts) > 1 and parts[1].isdigit():
            return int(parts[1])
        return None

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def header_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]


_TRACE_SPLIT = re.compile(r"^-{20,} .*$", re.M)
_TRACE_HEAD = re.compile(r"^\w+ message (sent|received)\b.*$", re.M)


def parse_message_log(path: str | os.PathLike) -> list[SipTrace]:
    """Parse SIPp's ``-trace_msg`` file into messages, in log order."""
    text = Path(path).read_text(errors="replace")
    out = []
    for chunk in _TRACE_SPLIT.split(text):
        head = _TRACE_HEAD.search(chunk)
        if not head:
            continue
        msg = chunk[head.end():].lstrip("\r\n")
        lines = msg.replace("\r\n", "\n").split("\n")
        if not lines or not lines[0].strip():
            continue
        headers: list[tuple[str, str]] = []
        i = 1
        while i < len(lines) and lines[i].strip():
            if ":" in lines[i]:
                k, v = lines[i].split(":", 1)
                headers.append((k.strip(), v.strip()))
            i += 1
        out.append(SipTrace(head.group(1), lines[0].strip(), headers,
                            "\n".join(lines[i + 1:]).strip()))
    return out


# --------------------------------------------------------------------------
# Running agents
# --------------------------------------------------------------------------

def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def scenario_path(scenario: str | os.PathLike) -> str | None:
    """None for a SIPp built-in scenario name, else the XML file path.

    Accepts a path, or a bare name of a file in :data:`SCENARIO_DIR`
    (``"uac_trunk"`` or ``"uac_trunk.xml"``).
    """
    s = os.fspath(scenario)
    if s in BUILTIN_SCENARIOS:
        return None
    p = Path(s)
    if p.is_file():
        return str(p.resolve())
    for cand in (SCENARIO_DIR / s, SCENARIO_DIR / f"{s}.xml"):
        if cand.is_file():
            return str(cand)
    raise FileNotFoundError(f"no SIPp scenario {s!r} (not built in, not in {SCENARIO_DIR})")


_runner_cls = None


def _runner_class():
    """pysipp's PopenRunner, extended to append extra SIPp args.

    pysipp 0.1.0's command model has no fields for -trace_stat/-stf/-fd,
    -trace_counts, -nostdin or -buff_size, and renders -bind_local with a
    value although SIPp 3.6 takes it as a flag; so the rendered command is
    extended here.  Processes get stdin=/dev/null and cwd=logdir (where SIPp
    writes its counts CSV).
    """
    global _runner_cls
    if _runner_cls is None:
        pysipp = load_pysipp()

        class ExtraArgsRunner(pysipp.launch.PopenRunner):
            def __init__(self, extra: Sequence[str], cwd: str):
                popen = _popen_in(cwd)
                super().__init__(subprocmod=types.SimpleNamespace(Popen=popen, PIPE=subprocess.PIPE))
                self.extra = list(extra)

            def __call__(self, cmds, **kwargs):
                tail = " " + shlex.join(self.extra) if self.extra else ""
                return super().__call__([c.strip() + tail for c in cmds], **kwargs)

        _runner_cls = ExtraArgsRunner
    return _runner_cls


def _popen_in(cwd: str):
    def popen(args, **kw):
        return subprocess.Popen(args, cwd=cwd, stdin=subprocess.DEVNULL, **kw)
    return popen


class SippProcess:
    """A running SIPp agent.  Use :meth:`wait` or :meth:`stop` (or ``with``)."""

    def __init__(self, *, name, cmd, proc, runner, logdir, stat_file, screen_file,
                 error_file, message_file, deadline):
        self.name = name
        self.cmd = cmd
        self.proc = proc
        self.pid = proc.pid
        self._runner = runner
        self.logdir = logdir
        self.stat_file = stat_file
        self.screen_file = screen_file
        self.error_file = error_file
        self.message_file = message_file
        self.deadline = deadline
        self._timed_out = False
        self._result: SippResult | None = None

    def __enter__(self) -> "SippProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def poll(self) -> int | None:
        return self.proc.poll()

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float | None = None, grace: float = 6.0) -> SippResult:
        """Wait for SIPp to exit by itself (at most ``timeout`` seconds, and
        never past the start-time deadline); then stop it and return the result."""
        limit = self.deadline - time.monotonic()
        if timeout is not None:
            limit = min(limit, timeout)
        try:
            self.proc.wait(timeout=max(limit, 0.0))
        except subprocess.TimeoutExpired:
            self._timed_out = True
        return self.stop(grace=grace)

    def stop(self, grace: float = 6.0) -> SippResult:
        """Stop SIPp by PID: SIGUSR1 (soft exit: ongoing calls finish; stats
        and screens are written), SIGTERM after ``grace`` s, SIGKILL 2 s later."""
        for sig, wait_s in ((signal.SIGUSR1, grace), (signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is not None:
                break
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                continue
        self.proc.wait(timeout=5.0)
        return self.result()

    def result(self) -> SippResult:
        """Parse the agent's output files (final once the process exited)."""
        if self._result is not None:
            return self._result
        exited = self.proc.poll() is not None
        stderr = ""
        if exited:
            waiter = getattr(self._runner, "_waiter", None)
            if waiter is not None:
                waiter.join(timeout=5.0)  # pysipp's collector reads stderr
            streams = getattr(self.proc, "streams", None)
            if streams is not None and streams.stderr:
                stderr = streams.stderr.decode(errors="replace")
        stats, calls, source = parse_outcome(self.stat_file, self.screen_file)
        counts_file = self._counts_file()
        counts = {}
        for k, v in _last_csv_row(counts_file).items():
            try:
                counts[k] = int(v)
            except ValueError:
                pass
        res = SippResult(
            name=self.name, cmd=self.cmd, pid=self.pid, exit_code=self.proc.poll(),
            successful_calls=calls["successful_calls"], failed_calls=calls["failed_calls"],
            total_calls=calls["total_calls"], source=source, timed_out=self._timed_out,
            logdir=self.logdir, stat_file=self.stat_file, screen_file=self.screen_file,
            error_file=self.error_file, message_file=self.message_file,
            counts_file=counts_file, stats=stats, counts=counts, stderr=stderr,
        )
        if exited:
            self._result = res
        return res

    def _counts_file(self) -> Path | None:
        found = glob.glob(str(self.logdir / f"*_{self.pid}_counts.csv"))
        return Path(found[0]) if found else None


def start_agent(
    role: str,
    scenario: str | os.PathLike,
    local: Addr,
    remote: Addr | None = None,
    *,
    call_count: int | None = None,
    rate: float | None = None,
    limit: int | None = None,
    keys: Mapping[str, str] | None = None,
    extra_args: Iterable[str] = (),
    timeout: float = 30.0,
    recv_timeout_ms: int | None = 5000,
    pause_ms: int | None = None,
    logdir: str | os.PathLike | None = None,
    name: str | None = None,
    trace_msg: bool = False,
    trace_err: bool = True,
    sipp_bin: str | None = None,
) -> SippProcess:
    """Start one SIPp agent via pysipp; returns immediately.

    role: "uac" or "uas" (selects pysipp's client/server factory).
    scenario: built-in name (``uac``/``uas``), XML path or name in SCENARIO_DIR.
    call_count: ``-m`` (None: unlimited, for a uas stopped by stop()).
    rate: ``-r`` calls/s; limit: ``-l`` max simultaneous calls.
    keys: ``-key name value`` pairs for ``[name]`` in the XML.
    timeout: seconds; SIPp's own ``-timeout`` and the Python deadline
    (+5 s) after which wait() stops the process.
    extra_args: appended to the SIPp command line, e.g.
    ``["-buff_size", "4194304"]``.
    """
    if role not in ("uac", "uas"):
        raise ValueError("role must be 'uac' or 'uas'")
    pysipp = load_pysipp()
    scen_file = scenario_path(scenario)
    stem = Path(scen_file).stem if scen_file else os.fspath(scenario)
    name = name or f"{stem}-{local[0]}-{local[1]}-{next(_seq)}"
    if logdir is None:
        logdir = tempfile.mkdtemp(prefix=f"sipp-{name}-")
    logdir = Path(logdir).resolve()
    logdir.mkdir(parents=True, exist_ok=True)

    stat_file = logdir / f"{name}.stat.csv"
    screen_file = logdir / f"{name}.screen.log"
    error_file = logdir / f"{name}.errors.log" if trace_err else None
    message_file = logdir / f"{name}.messages.log" if trace_msg else None
    for f in (stat_file, screen_file, error_file, message_file):
        if f is not None and f.exists():
            f.unlink()

    bin_path = sipp_bin or shutil.which("sipp")
    if not bin_path:
        raise FileNotFoundError("sipp binary not found (Debian package sip-tester)")
    kwargs: dict[str, Any] = dict(
        bin_path=bin_path,
        local_host=local[0], local_port=int(local[1]),
        # no logdir= here: pysipp's ua(logdir=...) assigns it after
        # construction, which its `key[0] is not '_'` guard rejects on 3.11.
        screen_file=str(screen_file),
        log_file=str(logdir / f"{name}.actions.log"),
        timeout=str(int(math.ceil(timeout))),
        key_vals=dict(keys or {}),
    )
    if scen_file:
        kwargs["scen_file"] = scen_file
    else:
        kwargs["scen_name"] = os.fspath(scenario)
    if remote is not None:
        kwargs.update(remote_host=remote[0], remote_port=int(remote[1]))
    if call_count:
        kwargs["call_count"] = str(int(call_count))
    if rate:
        kwargs["rate"] = str(rate)
    if limit:
        kwargs["limit"] = str(int(limit))
    if recv_timeout_ms:
        kwargs["recv_timeout"] = str(int(recv_timeout_ms))
    if pause_ms:
        kwargs["pause_duration"] = str(int(pause_ms))
    if error_file is not None:
        kwargs.update(error_file=str(error_file), trace_error=True)
    if message_file is not None:
        kwargs.update(message_file=str(message_file), trace_message=True)

    factory = pysipp.agent.client if role == "uac" else pysipp.agent.server
    ua = factory(**kwargs)

    extra = ["-nostdin", "-trace_stat", "-stf", str(stat_file), "-fd", "1",
             "-trace_counts", *[str(a) for a in extra_args]]
    runner = _runner_class()(extra, str(logdir))
    # pysipp's scenario defaults would add -m 1 -r 1 -l 1 -recv_timeout 5000
    # to anything not set above; None leaves SIPp's own default.
    scen = pysipp.plugin.mng.hook.pysipp_conf_scen_protocol(
        agents=[ua], confpy=None,
        scenkwargs={"defaults": {"call_count": None, "rate": None, "limit": None,
                                 "recv_timeout": None, "logdir": str(logdir)}},
    )
    scen(block=False, timeout=timeout, runner=runner, raise_exc=False)
    (cmd, proc), = runner._procs.items()
    return SippProcess(
        name=name, cmd=cmd, proc=proc, runner=runner, logdir=logdir,
        stat_file=stat_file, screen_file=screen_file, error_file=error_file,
        message_file=message_file, deadline=time.monotonic() + timeout + 5.0,
    )


def run_uas(local: Addr, scenario: str | os.PathLike = "uas", *,
            call_count: int | None = None, limit: int = 5000,
            timeout: float = 60.0, ready_s: float = 0.3, **opts) -> SippProcess:
    """Start a SIPp UAS in the background; ``stop()`` it when the callers are
    done (or let ``call_count`` calls end it; then use ``wait()``).

    ``limit`` is set because pysipp would otherwise pass ``-l 1``.  Waits
    ``ready_s`` for the socket to be bound and fails if SIPp already exited.
    """
    p = start_agent("uas", scenario, local, None, call_count=call_count,
                    limit=limit, timeout=timeout, **opts)
    if ready_s:
        time.sleep(ready_s)
        if not p.running:
            raise RuntimeError("SIPp uas exited at start:\n" + p.stop().describe())
    return p


def start_uac(local: Addr, remote: Addr, scenario: str | os.PathLike = "uac", *,
              call_count: int = 1, rate: float = 10.0, limit: int | None = None,
              timeout: float = 30.0, **opts) -> SippProcess:
    """Start a SIPp UAC without waiting (e.g. several callers at once)."""
    return start_agent("uac", scenario, local, remote, call_count=call_count, rate=rate,
                       limit=limit or max(int(call_count), 1), timeout=timeout, **opts)


def run_uac(local: Addr, remote: Addr, scenario: str | os.PathLike = "uac", *,
            call_count: int = 1, rate: float = 10.0, limit: int | None = None,
            timeout: float = 30.0, **opts) -> SippResult:
    """Run a SIPp UAC to completion (bounded by ``timeout``) and return its result."""
    p = start_uac(local, remote, scenario, call_count=call_count, rate=rate,
                  limit=limit, timeout=timeout, **opts)
    try:
        return p.wait()
    finally:
        if p.running:
            p.stop()
