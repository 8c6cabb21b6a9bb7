"""Shared test helpers: SIP request text, a UDP peer, a running edge."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from sipgate.admission import AdmissionTable, TrunkSource

DEMO_DOMAIN = "demo.sipgate.test"
ALLOWED = "127.0.0.2"
DENIED = "127.0.0.3"
SIPGATE = [sys.executable, "-m", "sipgate.cli"]
# The demo seed's account, and a second one that must never see its objects.
ACCOUNT_SID = "AC00000000000000000000000000000001"
AUTH_TOKEN = "test-token-1"
OTHER_ACCOUNT_SID = "AC00000000000000000000000000000002"
OTHER_AUTH_TOKEN = "test-token-2"

# test_native runs the receive path's differential tests a second time, on
# the interpreted sources, after the compiled run has generated the full
# number of examples against the same references: that re-run (and only it)
# sets SIPGATE_TEST_RERUN and takes a quarter of each test's examples.
RERUN = os.environ.get("SIPGATE_TEST_RERUN") == "1"


def examples(n: int) -> int:
    """``max_examples`` for a test that the pure-Python re-run repeats."""
    return max(n // 4, 25) if RERUN else n


def request(
    method: str = "INVITE",
    ruri: str = f"sip:+15551234567@{DEMO_DOMAIN}",
    *,
    via_host: str = "127.0.0.2:5080",
    branch: str = "z9hG4bK-test-1",
    call_id: str = "call-1@127.0.0.2",
    from_tag: str = "from-1",
    to_tag: str | None = None,
    cseq: int = 1,
    cseq_method: str | None = None,
    max_forwards: int | None = 70,
    routes: Iterable[str] = (),
    extra: Iterable[str] = (),
    body: bytes = b"",
    rport: bool = False,
) -> bytes:
    """A well-formed SIP request, in the shape carriers send."""
    via = f"Via: SIP/2.0/UDP {via_host};branch={branch}" + (";rport" if rport else "")
    to = f"To: <sip:+15551234567@{DEMO_DOMAIN}>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} {ruri} SIP/2.0",
        via,
        *(f"Route: {r}" for r in routes),
        *([f"Max-Forwards: {max_forwards}"] if max_forwards is not None else []),
        f"From: \"Carrier\" <sip:+15557654321@carrier.example>;tag={from_tag}",
        to,
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {cseq_method or method}",
        "Contact: <sip:+15557654321@127.0.0.2:5080>",
        "User-Agent: test-carrier",
        *extra,
        f"Content-Length: {len(body)}",
        "",
        "",
    ]
    return "\r\n".join(lines).encode() + body


def table(trunks: Iterable[tuple[str, str | None, Iterable[tuple[str, Iterable[str]]]]],
          generation: int = 1) -> AdmissionTable:
    """Compile a table from (trunk sid, domain, [(acl sid, [cidr, ...])])."""
    sources = []
    for sid, domain, acls in trunks:
        compiled_acls = []
        for acl_sid, cidrs in acls:
            entries = []
            for i, cidr in enumerate(cidrs):
                address, _, prefix = cidr.partition("/")
                entries.append((f"IP{acl_sid[2:]}{i:04d}", address, int(prefix) if prefix else None))
            compiled_acls.append((acl_sid, f"name-{acl_sid}", tuple(entries)))
        sources.append(TrunkSource(sid, "AC" + "0" * 32, domain, tuple(compiled_acls)))
    return AdmissionTable.compile(generation, sources)


TRUNK_SID = "TK" + "1" * 32
ACL_SID = "AL" + "1" * 32


def demo_table() -> AdmissionTable:
    """The demo trunk: its one list admits 127.0.0.2/32."""
    return table([(TRUNK_SID, DEMO_DOMAIN, [(ACL_SID, [f"{ALLOWED}/32"])])])


class UdpPeer:
    """A real UDP socket bound on a loopback address, with blocking helpers."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(2.0)
        self.address: tuple[str, int] = self.sock.getsockname()[:2]

    def send(self, data: bytes, dest: tuple[str, int]) -> None:
        self.sock.sendto(data, dest)

    def recv(self, timeout: float = 2.0) -> tuple[bytes, tuple[str, int]]:
        self.sock.settimeout(timeout)
        data, addr = self.sock.recvfrom(65535)
        return data, addr[:2]

    def nothing(self, timeout: float = 0.3) -> bool:
        """True when no datagram arrives within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            self.sock.recvfrom(65535)
        except (TimeoutError, socket.timeout):
            return True
        return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> UdpPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_config(tmp_path: Path, pbx_port: int, extra: str = "", flood: bool = False) -> Path:
    """A config for a `sipgate serve` on ephemeral loopback ports.  The
    flood ban is off unless ``flood`` (the load tests flood from one source
    on purpose); ``extra`` is appended TOML (more sections)."""
    path = tmp_path / "sipgate.toml"
    path.write_text(
        "[sip]\n"
        f'listen = [{{ address = "127.0.0.1:0", default_trunk = "{DEMO_DOMAIN}" }}]\n'
        f'pbx = "127.0.0.1:{pbx_port}"\n'
        "[store]\n"
        f'url = "sqlite:{tmp_path / "edge.db"}"\n'
        "poll_interval = 0.1\n"
        "[metrics]\n"
        'listen = "127.0.0.1:0"\n'
        "[api]\n"
        'listen = "127.0.0.1:0"\n'
        "[[accounts]]\n"
        f'sid = "{ACCOUNT_SID}"\n'
        f'auth_token = "{AUTH_TOKEN}"\n'
        "[[accounts]]\n"
        f'sid = "{OTHER_ACCOUNT_SID}"\n'
        f'auth_token = "{OTHER_AUTH_TOKEN}"\n'
        + ("" if flood else "[flood]\nenabled = false\n")
        + extra
    )
    return path


class Process:
    """A ``sipgate`` subprocess whose stderr a daemon thread reads into
    ``log`` line by line, so that no wait blocks on the pipe and a chatty
    process never stalls on a full one; stopped by its PID."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([*SIPGATE, *args], stderr=subprocess.PIPE, text=True, env=env)
        self.log: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.log.append(line)

    def wait_for(self, pattern: str, timeout: float = 20.0, start: int = 0) -> re.Match:
        """The first match of ``pattern`` in a log line from index ``start``
        on, waiting at most ``timeout`` seconds for it to be written."""
        deadline = time.monotonic() + timeout
        while True:
            reading = self._reader.is_alive()  # (before the scan: its last lines are in by then)
            for line in self.log[start:]:
                if m := re.search(pattern, line):
                    return m
            assert reading, "sipgate exited:\n" + "".join(self.log)
            assert time.monotonic() < deadline, f"no {pattern!r} in:\n" + "".join(self.log)
            time.sleep(0.02)

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM by PID; killed if it does not exit in time."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._reader.join(5)

    def output(self) -> str:
        """Everything it wrote to stderr (all of it once it is stopped)."""
        return "".join(self.log)


class Serving(Process):
    """A `sipgate serve` subprocess; learns its ports from its log, and is
    stopped if it does not start."""

    def __init__(self, args: list[str], timeout: float = 20.0) -> None:
        super().__init__(args)
        self.sip_port = self.metrics_port = self.api_port = 0
        try:
            self.started(timeout)
        except BaseException:
            self.stop()
            raise

    def started(self, timeout: float) -> None:
        """Wait for the lines naming the SIP, metrics and API ports."""
        deadline = time.monotonic() + timeout
        self.sip_port = int(self.wait_for(r"SIP/UDP listening on 127\.0\.0\.1:(\d+)", timeout).group(1))
        self.metrics_port = int(self.wait_for(r"metrics on http://127\.0\.0\.1:(\d+)",
                                              max(deadline - time.monotonic(), 0)).group(1))
        self.api_port = int(self.wait_for(r"API on http://127\.0\.0\.1:(\d+)",
                                          max(deadline - time.monotonic(), 0)).group(1))


DEMO_SEED = Path(__file__).resolve().parent.parent / "config" / "demo-seed.toml"


def metric(server: Serving, name: str, labels: str = "") -> float:
    """One sample of a running ``sipgate serve``'s /metrics (0 when absent)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
    m = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def pg_node_config(directory: Path, pbx_port: int, url: str) -> Path:
    """write_config in a new ``directory`` for a node on the PostgreSQL
    store ``url``, its revision poll at 60 s (only NOTIFY carries changes)."""
    directory.mkdir()
    path = write_config(directory, pbx_port)
    text = path.read_text()
    text = text.replace(f'url = "sqlite:{directory / "edge.db"}"', f'url = "{url}"')
    text = text.replace("poll_interval = 0.1", "poll_interval = 60")
    assert url in text and "poll_interval = 60" in text
    path.write_text(text)
    return path


def basic(user: str = ACCOUNT_SID, token: str = AUTH_TOKEN) -> str:
    """An HTTP Basic Authorization header value (the demo account's by default)."""
    import base64

    return "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()


# Twilio's body for a request without valid credentials.
UNAUTHORIZED = {"code": 20003, "message": "Authentication Error - invalid username",
                "more_info": "https://www.twilio.com/docs/errors/20003", "status": 401}


def api_json(node: Serving, method: str, path: str, form: dict | None = None) -> dict:
    """One API call to a running node as the demo account; the JSON body ({} when empty)."""
    import json
    import urllib.parse

    auth = basic()
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{node.api_port}{path}", data=data, method=method,
                                 headers={"Authorization": auth})
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = resp.read()
        return json.loads(body) if body else {}


T = TypeVar("T")


def held_while_stopped(pid: int, write: Callable[[], T]) -> T:
    """Run ``write`` (an API call) in a thread with process ``pid`` stopped
    (SIGSTOP): it must not finish in the second the process stays stopped,
    and must finish after SIGCONT.  What ``write`` returned."""
    done: list = []
    writer = threading.Thread(target=lambda: done.append((write(), time.monotonic())))
    os.kill(pid, signal.SIGSTOP)
    try:
        writer.start()
        time.sleep(1.0)
        assert done == [], "answered while the stopped process could not have the change"
    finally:
        continued = time.monotonic()
        os.kill(pid, signal.SIGCONT)
        writer.join(10)
    assert done and done[0][1] >= continued
    return done[0][0]
