#!/usr/bin/env python3
"""Coverage-guided fuzzing (atheris) of the SIP parser and the fast-path scanner.

    .venv/bin/pip install atheris        # not a project dependency
    .venv/bin/python benchmarks/fuzz_parser.py [SECONDS] [--corpus DIR] [--crashes DIR]

Each input goes through:

1. ``sipgate.sip.parse``: it may raise only SipParseError; a parsed
   message's lazily parsed fields (Vias, tags, Request-URI, ...) may raise
   only SipParseError too; a parsed message renders and parses again to
   the same headers;
2. ``sipgate.sip.fast.scan`` and ``relay_response_bytes``: they may only
   return None or their tuple;
3. the differential: whenever ``scan`` accepts, the full parser accepts too
   and reads the same method, Request-URI host, tags, top branch, Call-ID
   and CSeq number;
4. the whole receive path (``EdgeProtocol.datagram_received``, fast path
   on) from a denied and an admitted source: no internal error, nothing
   from the denied source towards the PBX.

The corpus is seeded from tests/torture/*.sip (RFC 4475) plus a few
carrier-shaped requests and responses; it runs for SECONDS (default 180)
and is not part of CI.  A failing input is written to the crashes
directory (atheris' default: the working directory) as crash-<sha1>.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import atheris  # noqa: E402

with atheris.instrument_imports():
    from sipgate.sip import Request, SipParseError, parse
    from sipgate.sip import fast
    from sipgate.sip import message as _message  # noqa: F401  (instrumented)
    from sipgate.sip import uri as _uri  # noqa: F401
    from sipgate.sip import proxy as _proxy  # noqa: F401
    from sipgate.sip import build as _build  # noqa: F401

_INSTRUMENTED = (_message, _uri, _proxy, _build)  # imported for their coverage

from helpers import ALLOWED, DEMO_DOMAIN, DENIED, demo_table, request  # noqa: E402
from sipgate.config import Listener, SipConfig  # noqa: E402
from sipgate.transport import Edge, EdgeProtocol  # noqa: E402

PBX = ("127.0.0.1", 5070)


class _Recorder:
    max_size = 65535

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple]] = []

    def sendto(self, data: bytes, addr: tuple) -> None:
        self.sent.append((data, addr))


def _edge() -> tuple[EdgeProtocol, _Recorder]:
    listener = Listener(host="127.0.0.1", port=5060, default_trunk=DEMO_DOMAIN)
    edge = Edge(SipConfig(listen=(listener,), pbx=PBX, secret="fuzz-secret"))
    edge.install(demo_table())
    proto = EdgeProtocol(edge, listener)
    rec = _Recorder()
    proto.connection_made(rec)  # type: ignore[arg-type]
    return proto, rec


PROTO, REC = _edge()


def _touch(msg) -> None:
    """Every lazily parsed field: each may raise only SipParseError."""
    for name in ("call_id", "cseq", "vias", "top_via", "from_tag", "to_tag", "max_forwards", "content_length",
                 "request_uri"):
        try:
            getattr(msg, name)
        except SipParseError:
            pass
        except AttributeError:
            if name != "request_uri":
                raise


def test_one_input(data: bytes) -> None:
    # 1. The reference parser.
    msg = None
    try:
        msg = parse(data)
    except SipParseError:
        pass
    if msg is not None:
        _touch(msg)
        again = parse(msg.render())
        assert again.headers == msg.headers, (msg.headers, again.headers)
    # 2. The scanner.
    s = fast.scan(data)
    fast.relay_response_bytes(data)
    # 3. The differential: what scan accepts, the parser accepts and reads alike.
    if s is not None:
        assert type(msg) is Request, f"scan accepted what parse refused: {data!r}"
        assert s[fast.METHOD].decode("utf-8", "surrogateescape") == msg.method
        assert s[fast.HOST] == msg.request_uri.host
        assert (s[fast.TO_TAG] or b"").decode("utf-8", "surrogateescape") == (msg.to_tag or "")
        assert (s[fast.FROM_TAG] or b"").decode("utf-8", "surrogateescape") == (msg.from_tag or "")
        assert (s[fast.BRANCH] or b"").decode("utf-8", "surrogateescape") == (msg.top_via.branch or "")
        assert s[fast.CALL_ID].decode("utf-8", "surrogateescape") == msg.call_id
        assert s[fast.CSEQ_NUMBER] == msg.cseq[0]
    # 4. The whole receive path.
    stats = PROTO.edge.stats
    for source in (DENIED, ALLOWED):
        REC.sent.clear()
        PROTO.datagram_received(data, (source, 5080))
        assert stats.internal_errors == 0, f"internal error on {data!r}"
        if source == DENIED:
            assert all(dest != PBX for _, dest in REC.sent), f"denied source reached the PBX: {data!r}"


def seeds() -> list[bytes]:
    out = [p.read_bytes() for p in sorted((ROOT / "tests" / "torture").glob("*.sip"))]
    out += [request(), request(rport=True), request("ACK", to_tag="t"), request("BYE", to_tag="t"),
            request("CANCEL"), request("OPTIONS", "sip:127.0.0.1"),
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKa\r\n"
            b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKb\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\n"
            b"Call-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("seconds", nargs="?", type=int, default=180)
    ap.add_argument("--corpus", help="corpus directory (default: a fresh temporary one, seeded)")
    ap.add_argument("--crashes", default=".", help="where crash-* files go")
    args = ap.parse_args()
    corpus = Path(args.corpus) if args.corpus else Path(tempfile.mkdtemp(prefix="sipgate-fuzz-"))
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(seeds()):
        (corpus / f"seed-{i:03d}").write_bytes(seed)
    for seed in seeds():
        test_one_input(seed)  # the seeds themselves must pass
    print(f"corpus {corpus}, {args.seconds} s", file=sys.stderr)
    started = time.monotonic()
    argv = [sys.argv[0], str(corpus), f"-max_total_time={args.seconds}", "-max_len=8192",
            f"-artifact_prefix={os.path.join(args.crashes, '')}", "-print_final_stats=1"]
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()
    print(f"done after {time.monotonic() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
