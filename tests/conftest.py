"""Fixtures: an edge on real loopback sockets, run in a background loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest

from helpers import DEMO_DOMAIN, DEMO_SEED, Serving, UdpPeer, demo_table, write_config
from sipgate import sippkit
from sipgate.config import Listener, SipConfig
from sipgate.transport import Edge, EdgeProtocol, open_listener


@dataclass
class RunningEdge:
    """An Edge serving one UDP listener in a background event loop thread."""

    edge: Edge
    protocol: EdgeProtocol
    loop: asyncio.AbstractEventLoop

    @property
    def address(self) -> tuple[str, int]:
        return (self.protocol.listener.host, self.protocol.listener.port)

    @property
    def stats(self):
        """The edge's stats, once every datagram already received is handled."""
        self.call(lambda: None)
        return self.edge.stats

    def call(self, fn, *args):
        """Run ``fn(*args)`` on the edge's loop and wait for it."""
        done = threading.Event()
        box: list = []

        def run() -> None:
            box.append(fn(*args))
            done.set()

        self.loop.call_soon_threadsafe(run)
        assert done.wait(5)
        return box[0]


def start_edge(sip: SipConfig) -> tuple[RunningEdge, threading.Thread]:
    """Start an Edge on its own loop thread; the table is the demo table."""
    ready = threading.Event()
    box: dict = {}

    def main() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        edge = Edge(sip)
        edge.install(demo_table())
        _transport, protocol = loop.run_until_complete(open_listener(edge, sip.listen[0]))
        box["running"] = RunningEdge(edge, protocol, loop)
        ready.set()
        loop.run_forever()
        _transport.close()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    assert ready.wait(5), "edge did not start"
    return box["running"], thread


@pytest.fixture
def pbx() -> Iterator[UdpPeer]:
    """A fake PBX: a plain UDP socket on 127.0.0.1."""
    with UdpPeer("127.0.0.1") as peer:
        yield peer


@pytest.fixture
def make_edge(pbx: UdpPeer):
    """Factory: an edge in front of ``pbx`` with optional SipConfig overrides."""
    started: list[tuple[RunningEdge, threading.Thread]] = []

    def factory(**overrides) -> RunningEdge:
        listener = Listener(host="127.0.0.1", port=0, default_trunk=DEMO_DOMAIN)
        sip = replace(SipConfig(listen=(listener,), pbx=pbx.address, secret="test-secret"), **overrides)
        running, thread = start_edge(sip)
        started.append((running, thread))
        return running

    yield factory
    for running, thread in started:
        running.loop.call_soon_threadsafe(running.loop.stop)
        thread.join(5)


@pytest.fixture
def edge(make_edge) -> RunningEdge:
    """The demo edge: trunk demo.sipgate.test admits 127.0.0.2/32."""
    return make_edge()


@pytest.fixture
def allowed() -> Iterator[UdpPeer]:
    with UdpPeer("127.0.0.2") as peer:
        yield peer


@pytest.fixture
def denied() -> Iterator[UdpPeer]:
    with UdpPeer("127.0.0.3") as peer:
        yield peer


@pytest.fixture
def pbx_port() -> int:
    """A free UDP port on 127.0.0.1 for a SIPp uas standing in for the PBX."""
    return sippkit.free_udp_port("127.0.0.1")


@pytest.fixture
def sipgate_edge(tmp_path, pbx_port) -> Iterator[Serving]:
    """A `sipgate serve` subprocess with the demo seed, relaying to ``pbx_port``."""
    server = Serving(["serve", "--config", str(write_config(tmp_path, pbx_port)), "--seed", str(DEMO_SEED)])
    try:
        yield server
    finally:
        assert server.stop() == 0
