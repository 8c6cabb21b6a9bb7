"""SocketTransport: the listener socket served from the loop's reader and
writer callbacks (batched reads, a bounded backlog when sends would block)."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from sipgate.config import Listener, SipConfig
from sipgate.transport.udp import READ_BATCH, SEND_BACKLOG, Edge, EdgeProtocol, SocketTransport, make_socket

KEEPALIVE = b"\r\n\r\n"


def _protocol() -> EdgeProtocol:
    listener = Listener(host="127.0.0.1", port=0)
    edge = Edge(SipConfig(listen=(listener,), pbx=("127.0.0.1", 9), secret="test-secret"))
    return EdgeProtocol(edge, listener)


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _spin(loop: asyncio.AbstractEventLoop, until, seconds: float = 5.0) -> None:
    """Run the loop until ``until()`` holds (bounded)."""
    deadline = time.monotonic() + seconds
    while not until():
        assert time.monotonic() < deadline, "condition not reached"
        loop.run_until_complete(asyncio.sleep(0.01))


@pytest.fixture
def unix_transport(loop, tmp_path):
    """A started transport on a non-blocking AF_UNIX datagram socket, a
    peer that does not read (its queue fills, and then sendto raises
    EAGAIN, which UDP on loopback never does), and the peer's address."""
    ours = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.bind(str(tmp_path / "ours"))
    ours.setblocking(False)
    peer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    peer.bind(str(tmp_path / "peer"))
    peer.setblocking(False)
    transport = SocketTransport(loop, ours, _protocol())
    transport.start()
    yield transport, peer, str(tmp_path / "peer")
    transport.close()
    peer.close()


def _fill(transport: SocketTransport, peer_path: str) -> int:
    """Send numbered datagrams until the transport holds one back."""
    sent = 0
    while not transport.backlog:
        transport.sendto(b"%d" % sent, peer_path)
        sent += 1
        assert sent < 1_000_000
    return sent


def _read_all(peer: socket.socket) -> list[bytes]:
    got = []
    while True:
        try:
            got.append(peer.recv(100))
        except BlockingIOError:
            return got


def test_sends_held_back_while_the_peer_is_full_go_out_in_order(loop, unix_transport):
    transport, peer, peer_path = unix_transport
    sent = _fill(transport, peer_path)
    for i in range(sent, sent + 100):
        transport.sendto(b"%d" % i, peer_path)
    assert len(transport.backlog) == 101
    got = _read_all(peer)
    # The writer callback flushes the backlog as the peer drains.
    _spin(loop, lambda: got.extend(_read_all(peer)) or not transport.backlog)
    got.extend(_read_all(peer))
    assert got == [b"%d" % i for i in range(sent + 100)]
    assert transport.protocol.edge.stats.send_errors == 0
    # Nothing held: the next datagram goes straight out again.
    transport.sendto(b"last", peer_path)
    assert not transport.backlog and peer.recv(100) == b"last"


def test_backlog_is_bounded_and_what_overflows_is_counted(unix_transport):
    transport, _peer, peer_path = unix_transport
    _fill(transport, peer_path)
    for i in range(SEND_BACKLOG + 4):
        transport.sendto(b"x", peer_path)
    assert len(transport.backlog) == SEND_BACKLOG
    assert transport.dropped == 5 and transport.protocol.edge.stats.send_errors == 5
    transport.close()
    assert transport.is_closing() and not transport.backlog


def test_a_burst_is_read_in_bounded_batches(loop):
    sock = make_socket(Listener(host="127.0.0.1", port=0), 4 << 20)
    protocol = _protocol()
    transport = SocketTransport(loop, sock, protocol)
    protocol.connection_made(transport)  # (not started: readable() is driven by hand first)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    count = 2 * READ_BATCH + 10
    try:
        for _ in range(count):
            sender.sendto(KEEPALIVE, sock.getsockname())
        time.sleep(0.05)
        transport.readable()
        # One wake-up reads at most READ_BATCH datagrams, so that timers
        # and the API get the loop between batches.
        assert protocol.edge.stats.keepalives == READ_BATCH
        loop.add_reader(sock.fileno(), transport.readable)
        _spin(loop, lambda: protocol.edge.stats.keepalives == count)
        assert protocol.edge.stats.datagrams_received == count
    finally:
        transport.close()
        sender.close()


def test_close_stops_reading_and_closes_the_socket(loop):
    sock = make_socket(Listener(host="127.0.0.1", port=0), 1 << 20)
    address = sock.getsockname()
    protocol = _protocol()
    transport = SocketTransport(loop, sock, protocol)
    transport.start()
    assert transport.get_extra_info("sockname") == address
    assert transport.get_extra_info("socket") is sock
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sender.sendto(KEEPALIVE, address)
        _spin(loop, lambda: protocol.edge.stats.keepalives == 1)
        transport.close()
        transport.close()  # (twice is harmless)
        assert transport.is_closing() and sock.fileno() == -1
        sender.sendto(KEEPALIVE, address)  # (to a closed port: nobody reads it)
        loop.run_until_complete(asyncio.sleep(0.05))
        assert protocol.edge.stats.keepalives == 1
    finally:
        sender.close()


def test_drain_handles_everything_waiting_beyond_one_batch(loop):
    """Shutdown: what arrived before the stop is answered, not only one
    wake-up's batch; drain says how many it handled."""
    sock = make_socket(Listener(host="127.0.0.1", port=0), 4 << 20)
    protocol = _protocol()
    transport = SocketTransport(loop, sock, protocol)
    protocol.connection_made(transport)  # (not started: nothing reads but drain)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    count = 3 * READ_BATCH + 5
    try:
        for _ in range(count):
            sender.sendto(KEEPALIVE, sock.getsockname())
        time.sleep(0.05)
        assert transport.drain() == count
        assert protocol.edge.stats.keepalives == count
        assert transport.drain() == 0
    finally:
        transport.close()
        sender.close()
    assert transport.drain() == 0  # (closed: nothing to read)
