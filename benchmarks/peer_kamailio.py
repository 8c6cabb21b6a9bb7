"""Kamailio 5.6 as the peer filter of the SIP benchmarks: install, load, start, stop.

* :func:`ensure_installed` installs Debian's ``kamailio`` package when the
  binary is missing (``apt-get install -y kamailio``; with sudo when not root).
* :class:`Kamailio` writes the db_text ``address`` / ``version`` tables from a
  :class:`table.Table` (the same table the sipgate seed is made from), fills
  ``benchmarks/kamailio.cfg.tmpl`` (one address group per trunk, chosen by the
  Request-URI domain; ``max_result_rows`` / ``max_subnets`` sized to the
  table), checks it with ``kamailio -c``, starts it in the foreground
  (``-DD -E -P pidfile``) on a loopback port, waits until it answers an
  OPTIONS, and stops it and its children by PID.

Process helpers shared with ``bench_sip.py`` live here too: :func:`sip_ping`,
:func:`process_tree`, :func:`cpu_seconds`, :func:`stop_pid`.

Standalone, for poking at it by hand::

    .venv/bin/python benchmarks/peer_kamailio.py --size 10 --port 5090 --pbx 127.0.0.1:5070
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import table as tables  # noqa: E402

TEMPLATE = HERE / "kamailio.cfg.tmpl"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------
# process helpers
# --------------------------------------------------------------------------

def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm may contain spaces and parentheses: split after the last ')'
    return raw[raw.rindex(")") + 2:].split()


def process_tree(root: int) -> list[int]:
    """``root`` and all its live descendants (from /proc ppid links)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        f = _stat_fields(int(entry))
        if f is not None:
            children.setdefault(int(f[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes (all their threads), in seconds."""
    ticks = 0
    for pid in pids:
        f = _stat_fields(pid)
        if f is not None:
            # fields after comm start at index 0 = state; utime = 11, stime = 12
            ticks += int(f[11]) + int(f[12])
    return ticks / CLK_TCK


def pinned(cpus: set[int] | None):
    """A Popen preexec_fn putting the child, and all it starts, on ``cpus`` (None: no pinning)."""
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def stop_pid(proc: subprocess.Popen, pids: list[int] | None = None, timeout: float = 10.0) -> None:
    """SIGTERM ``proc`` (then SIGKILL), then any of ``pids`` still alive, by PID."""
    pids = [p for p in (pids or []) if p != proc.pid]
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    deadline = time.monotonic() + 5
    for pid in pids:
        while _stat_fields(pid) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        f = _stat_fields(pid)
        if f is not None and f[0] != "Z":
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def sip_ping(host: str, port: int, *, source: str = "127.0.0.1", timeout: float = 0.5) -> str | None:
    """Send one OPTIONS; the status line of the answer, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        lport = s.getsockname()[1]
        tag = uuid.uuid4().hex[:12]
        msg = (f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP {source}:{lport};branch=z9hG4bK{tag};rport\r\n"
               "Max-Forwards: 70\r\n"
               f"From: <sip:probe@{source}>;tag={tag}\r\n"
               f"To: <sip:{host}:{port}>\r\n"
               f"Call-ID: {tag}@{source}\r\n"
               "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()
        s.settimeout(timeout)
        s.sendto(msg, (host, port))
        try:
            data, _ = s.recvfrom(65535)
        except (TimeoutError, socket.timeout):
            return None
        return data.split(b"\r\n", 1)[0].decode(errors="replace")


def wait_answering(host: str, port: int, proc: subprocess.Popen, timeout: float,
                   source: str = "127.0.0.1") -> str:
    """Ping until an answer; raises when ``proc`` exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before answering")
        status = sip_ping(host, port, source=source)
        if status:
            return status
    raise RuntimeError(f"no answer to OPTIONS on {host}:{port} within {timeout:.0f} s")


# --------------------------------------------------------------------------
# Kamailio
# --------------------------------------------------------------------------

def ensure_installed() -> str:
    """Path of the kamailio binary, installing Debian's package when missing."""
    found = shutil.which("kamailio") or (os.path.exists("/usr/sbin/kamailio") and "/usr/sbin/kamailio")
    if found:
        return found
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # apt's output goes to stderr: a benchmark's stdout is its report
    # (benchmarks/run appends it to RESULTS.md).
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env, timeout=600, stdout=sys.stderr)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "kamailio"], check=True, env=env, timeout=900,
                   stdout=sys.stderr)
    found = shutil.which("kamailio") or "/usr/sbin/kamailio"
    if not os.path.exists(found):
        raise RuntimeError("apt-get install kamailio did not provide the kamailio binary")
    return found


def version() -> str:
    out = subprocess.run([ensure_installed(), "-v"], capture_output=True, text=True, timeout=30).stdout
    return out.splitlines()[0].replace("version: ", "").strip() if out else "kamailio ?"


def trunk_groups(domains: list[str]) -> str:
    """The generated switch cases: trunk i (its domain) -> address group i + 1."""
    return "\n".join(f'\t\tcase "{d.lower()}":\n\t\t\t$var(grp) = {i + 1};\n\t\t\tbreak;'
                     for i, d in enumerate(domains))


class ManagedProcess:
    """A filter process the benchmark started: ``proc`` and its log file.

    Subclasses set ``self.proc`` (subprocess.Popen), ``self._log`` (the open
    log file) and ``self.log_path`` when they start it.
    """

    proc: subprocess.Popen | None = None

    def pids(self) -> list[int]:
        return process_tree(self.proc.pid) if self.proc and self.proc.poll() is None else []

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except (AttributeError, FileNotFoundError):
            return ""

    def stop(self) -> None:
        """Stop the process tree by PID and close the log."""
        if self.proc is not None:
            stop_pid(self.proc, self.pids())
            self.proc = None
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None


class Kamailio(ManagedProcess):
    """One Kamailio process tree serving ``table`` on ``listen``."""

    def __init__(self, table: tables.Table, listen: tuple[str, int], pbx: tuple[str, int], *,
                 workdir: Path | None = None, children: int | None = None,
                 socket_buffer: int = 4194304, start_timeout: float = 900.0,
                 cpus: set[int] | None = None) -> None:
        self.table = table
        self.cpus = cpus  # CPU affinity of the whole process tree (None: any)
        self.listen = listen
        self.pbx = pbx
        self.children = children or max(os.cpu_count() or 1, 1)
        self.socket_buffer = socket_buffer
        self.start_timeout = start_timeout
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="bench-kamailio-"))
        self.proc: subprocess.Popen | None = None
        self.config_path = self.workdir / "kamailio.cfg"
        self.pid_file = self.workdir / "kamailio.pid"
        self.log_path = self.workdir / "kamailio.log"
        self.load_seconds = 0.0

    # memory: db_text caches the table and permissions copies it into shared
    # memory; the query result is built in the loading process's private heap.
    @property
    def shm_mb(self) -> int:
        return 256 + self.table.rows // 600

    @property
    def pkg_mb(self) -> int:
        return 64 + self.table.rows // 2000

    def render(self) -> str:
        rows = max(self.table.rows + 16, 1000)
        subnets = max(sum(1 for _, _, m in self.table.entries if m != 32) + 16, 512)
        values = {
            "CHILDREN": str(self.children),
            "LISTEN_IP": self.listen[0], "LISTEN_PORT": str(self.listen[1]),
            "PBX_IP": self.pbx[0], "PBX_PORT": str(self.pbx[1]),
            "DB_URL": f"text://{self.workdir / 'db'}",
            "MAX_ROWS": str(rows), "MAX_SUBNETS": str(subnets),
            "SOCKET_BUFFER": str(self.socket_buffer),
            "TRUNK_GROUPS": trunk_groups(self.table.domains),
        }
        text = TEMPLATE.read_text()
        for key, value in values.items():
            text = text.replace(f"@{key}@", value)
        leftover = re.findall(r"@[A-Z_]+@", text)
        if leftover:
            raise ValueError(f"unfilled placeholders in {TEMPLATE}: {sorted(set(leftover))}")
        return text

    def _cmd(self, *extra: str) -> list[str]:
        return [ensure_installed(), "-f", str(self.config_path), "-m", str(self.shm_mb),
                "-M", str(self.pkg_mb), "-Y", str(self.workdir), *extra]

    def prepare(self) -> None:
        tables.write_kamailio_tables(self.table, self.workdir / "db")
        self.config_path.write_text(self.render())
        check = subprocess.run(self._cmd("-c"), capture_output=True, text=True, timeout=120)
        if check.returncode != 0:
            raise RuntimeError(f"kamailio -c {self.config_path} failed:\n{check.stdout}{check.stderr}")

    def start(self) -> "Kamailio":
        self.prepare()
        t0 = time.monotonic()
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self._cmd("-DD", "-E", "-P", str(self.pid_file)),
                                     stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                     preexec_fn=pinned(self.cpus))
        try:
            wait_answering(*self.listen, self.proc, self.start_timeout)
        except Exception as exc:
            self.stop()
            raise RuntimeError(f"kamailio: {exc}; log:\n{self.log_tail()}") from exc
        self.load_seconds = time.monotonic() - t0
        return self

    def cleanup(self) -> None:
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "Kamailio":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=10, help="random table entries (benchmarks/table.py)")
    ap.add_argument("--port", type=int, default=5090)
    ap.add_argument("--pbx", default="127.0.0.1:5070")
    ap.add_argument("--children", type=int, default=None)
    a = ap.parse_args(argv)
    host, _, port = a.pbx.rpartition(":")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    k = Kamailio(tables.generate(a.size), ("127.0.0.1", a.port), (host, int(port)), children=a.children)
    try:
        k.start()
        print(f"{version()} on 127.0.0.1:{a.port} (pids {k.pids()}), {k.table.rows} rows loaded in "
              f"{k.load_seconds:.1f} s; config {k.config_path}; Ctrl-C stops it", file=sys.stderr)
        while k.proc and k.proc.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        k.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
