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


def _ipv4_transport(loop) -> tuple[SocketTransport, EdgeProtocol]:
    """A transport on a fresh 127.0.0.1 socket, connected to its protocol
    but not started: the test drives its callbacks."""
    sock = make_socket(Listener(host="127.0.0.1", port=0), 4 << 20)
    protocol = _protocol()
    transport = SocketTransport(loop, sock, protocol)
    protocol.connection_made(transport)
    return transport, protocol


def _keepalives(sender: socket.socket, transport: SocketTransport, count: int) -> None:
    """``count`` keepalives from ``sender`` waiting in the transport's socket."""
    for _ in range(count):
        sender.sendto(KEEPALIVE, transport.sock.getsockname())
    time.sleep(0.05)


def test_a_burst_is_read_in_bounded_batches(loop):
    transport, protocol = _ipv4_transport(loop)  # (readable() is driven by hand first)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    count = 2 * READ_BATCH + 10
    try:
        _keepalives(sender, transport, count)
        transport.readable()
        # One wake-up reads at most READ_BATCH datagrams, so that timers
        # and the API get the loop between batches.
        assert protocol.edge.stats.keepalives == READ_BATCH
        loop.add_reader(transport.fd, transport.readable)
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
    transport, protocol = _ipv4_transport(loop)  # (nothing reads but drain)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    count = 3 * READ_BATCH + 5
    try:
        _keepalives(sender, transport, count)
        assert transport.drain() == count
        assert protocol.edge.stats.keepalives == count
        assert transport.drain() == 0
    finally:
        transport.close()
        sender.close()
    assert transport.drain() == 0  # (closed: nothing to read)


# -- recvmmsg (sipgate/transport/_mmsg.c, the compiled build's) --------------

from sipgate import native  # noqa: E402
from sipgate.transport import udp  # noqa: E402

batched = pytest.mark.skipif(udp._recv_batch is None, reason="no recvmmsg extension: " + native.status()[1])


def test_transports_read_with_recvmmsg_exactly_when_compiled(loop):
    sock = make_socket(Listener(host="127.0.0.1", port=0), 1 << 20)
    sock6 = make_socket(Listener(host="::1", port=0), 1 << 20)
    t4, t6 = SocketTransport(loop, sock, _protocol()), SocketTransport(loop, sock6, _protocol())
    try:
        compiled = native.status()[0]
        assert (t4.batch, t6.batch) == ((udp._recv_batch,) * 2 if compiled else (None, None))
        assert (t4.send_batch, t6.send_batch) == ((udp._send_batch, udp._send_batch6) if compiled else (None, None))
        assert (udp._send_batch6 is not None) == compiled
    finally:
        sock.close()
        sock6.close()


@pytest.fixture
def receiver():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    senders = []
    for host in ("127.0.0.2", "127.0.0.3"):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((host, 0))
        senders.append(s)
    yield sock, senders
    for s in (sock, *senders):
        s.close()


@batched
def test_recv_batch_gives_what_recvfrom_gives_in_order(receiver):
    sock, (a, b) = receiver
    sent = [(a, b"first"), (b, b""), (a, b"x" * 65507), (b, b"\x00\r\n\xff last")]
    for sender, data in sent:
        sender.sendto(data, sock.getsockname())
    time.sleep(0.05)
    got = udp._recv_batch(sock.fileno(), 64)
    assert got == [(data, sender.getsockname()) for sender, data in sent]
    assert all(type(d) is bytes and type(h) is str and type(p) is int for d, (h, p) in got)
    assert udp._recv_batch(sock.fileno(), 64) == []  # (empty: no exception)


@batched
def test_recv_batch_takes_at_most_count_and_refuses_bad_arguments(receiver):
    sock, (a, _b) = receiver
    for i in range(10):
        a.sendto(b"%d" % i, sock.getsockname())
    time.sleep(0.05)
    first = udp._recv_batch(sock.fileno(), 4)
    rest = udp._recv_batch(sock.fileno(), 64)
    assert [d for d, _ in first + rest] == [b"%d" % i for i in range(10)] and len(first) == 4
    for bad in (0, 65, -1):
        with pytest.raises(ValueError):
            udp._recv_batch(sock.fileno(), bad)
    with pytest.raises(TypeError):
        udp._recv_batch("3", 1)
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fd = dead.fileno()
    dead.close()
    with pytest.raises(OSError):
        udp._recv_batch(fd, 1)  # (EBADF: an error other than "nothing waiting")


@batched
def test_recv_batch_source_texts_are_right_and_reused(receiver):
    """recv_batch writes a source address as text itself and keeps the str
    of each recent source (direct-mapped, 64 slots) for the next datagram
    from it: every octet width, sources that share a slot, and a slot taken
    over by another source, each as recvfrom would give it."""
    sock, _senders = receiver
    # 127.0.0.1 and 127.0.0.65 share a slot; so do 127.0.0.2 and 127.0.0.66.
    hosts = ["127.0.0.1", "127.0.0.65", "127.0.0.1", "127.9.10.99", "127.100.255.0", "127.0.0.2", "127.0.0.66",
             "127.0.0.2", "127.255.255.254"]
    senders = {}
    try:
        for host in hosts:
            if host not in senders:
                s = senders[host] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind((host, 0))
        got = []
        for host in hosts:
            senders[host].sendto(host.encode(), sock.getsockname())
            time.sleep(0.002)
            got += udp._recv_batch(sock.fileno(), 64)
        assert [(d, a) for d, a in got] == [(h.encode(), senders[h].getsockname()) for h in hosts]
        # Two datagrams from one source in a row: the same str, not a copy.
        for _ in range(2):
            senders["127.0.0.1"].sendto(b"again", sock.getsockname())
        time.sleep(0.05)
        again = udp._recv_batch(sock.fileno(), 64)
        assert len(again) == 2 and again[0][1][0] is again[1][1][0] == "127.0.0.1"
    finally:
        for s in senders.values():
            s.close()


@batched
def test_send_batch_to_received_sources_and_to_lookalikes(receiver):
    """send_batch finds the address of a str recv_batch made by its
    identity; any other str (equal text, or one whose slot was taken over)
    is read as text: the datagram reaches the same place either way."""
    sock, (a, b) = receiver
    sinks = []
    try:
        for host in ("127.0.0.4", "127.0.0.68"):  # (one slot)
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((host, 0))
            s.setblocking(False)
            sinks.append(s)
        items = []
        for s in sinks:
            s.sendto(b"hi", sock.getsockname())
            time.sleep(0.01)
            ((_, source),) = udp._recv_batch(sock.fileno(), 64)
            items.append((b"to " + source[0].encode(), source))
        # items[0]'s str lost its slot to items[1]'s; a copy of the text too.
        copy = ("".join(["127.0.0.", "4"]), sinks[0].getsockname()[1])
        items.append((b"copy", copy))
        assert udp._send_batch(sock.fileno(), items) == 3
        assert [d for d, _ in _received(sinks[0], 2)] == [b"to 127.0.0.4", b"copy"]
        assert [d for d, _ in _received(sinks[1], 1)] == [b"to 127.0.0.68"]
    finally:
        for s in sinks:
            s.close()


def _received(sock: socket.socket, count: int, seconds: float = 5.0) -> list[tuple[bytes, tuple]]:
    """Up to ``count`` datagrams waiting on non-blocking ``sock`` (bounded)."""
    got: list[tuple[bytes, tuple]] = []
    deadline = time.monotonic() + seconds
    while len(got) < count and time.monotonic() < deadline:
        try:
            got.append(sock.recvfrom(65535))
        except BlockingIOError:
            time.sleep(0.01)
    return got


@batched
def test_send_batch_sends_the_leading_dotted_quads_in_order(receiver):
    sock, (a, _b) = receiver
    dest = sock.getsockname()
    items = [(b"one", dest), (b"", dest), (b"y" * 65507, dest), (b"name", ("localhost", dest[1])), (b"after", dest)]
    assert udp._send_batch(a.fileno(), items) == 3  # (stops before the name)
    assert udp._send_batch(a.fileno(), items[3:]) == 0  # (a name first: nothing sent)
    assert [d for d, _ in _received(sock, 3)] == [b"one", b"", b"y" * 65507]
    assert udp._send_batch(a.fileno(), []) == 0
    for bad in ([b"x"], [(b"x", dest, 1)], [("text", dest)], [(b"x", ("127.0.0.1",))], [(b"x", (1, 2))]):
        with pytest.raises(TypeError):
            udp._send_batch(a.fileno(), bad)
    with pytest.raises(OverflowError):
        udp._send_batch(a.fileno(), [(b"x", ("127.0.0.1", 70000))])
    with pytest.raises(OSError):  # (port 0: EINVAL for the first, nothing sent)
        udp._send_batch(a.fileno(), [(b"x", ("127.0.0.1", 0)), (b"y", dest)])
    assert _received(sock, 1, 0.2) == []


# IPv6: a socket on ::1 (native IPv6 sources, all on ::1, told apart by
# port) and a dual-stack one on ::ffff:127.0.0.1, whose IPv4 sources (any
# 127.x.y.z) arrive IPv4-mapped: both loopback only.

@pytest.fixture
def receivers6():
    native6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    mapped = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    mapped.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    for sock, host in ((native6, "::1"), (mapped, "::ffff:127.0.0.1")):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        sock.bind((host, 0))
        sock.setblocking(False)
    sockets = [native6, mapped]
    try:
        yield native6, mapped, sockets
    finally:
        for sock in sockets:
            sock.close()


def _sender(sockets: list, host: str) -> socket.socket:
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.setblocking(False)
    sockets.append(s)
    return s


def _mapped_slot(host: str) -> int:
    """recv_batch's cache slot of an IPv4-mapped source (its host6_text)."""
    b = socket.inet_pton(socket.AF_INET6, "::ffff:" + host)
    return (b[15] ^ b[14] ^ b[13] ^ b[11] ^ (b[7] << 1) ^ (b[3] << 2)) & 63


@batched
def test_recv_batch_on_ipv6_sockets_gives_what_recvfrom_gives(receivers6):
    """The same datagrams twice, read once with recv_batch and once with
    socket.recvfrom: the same bytes and the same (host, port, flowinfo,
    scope_id) tuples, native IPv6 and IPv4-mapped sources alike."""
    native6, mapped, sockets = receivers6
    a, b = _sender(sockets, "::1"), _sender(sockets, "::1")
    c, d = _sender(sockets, "127.0.0.2"), _sender(sockets, "127.9.10.99")
    plan = [(native6, [(a, b"first"), (b, b""), (a, b"x" * 65527), (b, b"\x00\r\n\xff last")]),
            (mapped, [(c, b"one"), (d, b""), (c, b"y" * 65507), (d, b"last")])]
    for receiver, sends in plan:
        batched_read = []
        for round_ in range(2):
            for sender, data in sends:
                sender.sendto(data, receiver.getsockname()[:2])
            time.sleep(0.05)
            if round_ == 0:
                batched_read = udp._recv_batch(receiver.fileno(), 64)
            else:
                plain = _received(receiver, len(sends))
        assert batched_read == plain and len(plain) == len(sends)
        assert [data for data, _ in plain] == [data for _, data in sends]
        assert all(len(addr) == 4 and type(addr[0]) is str for _, addr in batched_read)
        assert udp._recv_batch(receiver.fileno(), 64) == []
    assert batched_read[0][1][0] == "::ffff:127.0.0.2"


@batched
def test_recv_batch_ipv6_source_texts_are_right_and_reused(receivers6):
    """IPv4-mapped sources through recv_batch's 64-slot IPv6 text cache:
    sources sharing a slot, a slot taken over and taken back, each text as
    recvfrom would give it, and the same str for a source seen just before."""
    _native6, mapped, sockets = receivers6
    first = "127.0.0.2"
    same_slot = next(f"127.0.{i}.{j}" for i in range(256) for j in range(1, 255)
                     if f"127.0.{i}.{j}" != first and _mapped_slot(f"127.0.{i}.{j}") == _mapped_slot(first))
    hosts = [first, same_slot, first, "127.100.255.0", "127.255.255.254", same_slot]
    senders = {h: _sender(sockets, h) for h in dict.fromkeys(hosts)}
    got = []
    for host in hosts:
        senders[host].sendto(host.encode(), mapped.getsockname()[:2])
        time.sleep(0.002)
        got += udp._recv_batch(mapped.fileno(), 64)
    assert got == [(h.encode(), ("::ffff:" + h, senders[h].getsockname()[1], 0, 0)) for h in hosts]
    for _ in range(2):
        senders[first].sendto(b"again", mapped.getsockname()[:2])
    time.sleep(0.05)
    again = udp._recv_batch(mapped.fileno(), 64)
    assert len(again) == 2 and again[0][1][0] is again[1][1][0] == "::ffff:" + first


@batched
def test_send_batch6_to_received_sources_copies_and_plain_literals(receivers6):
    """send_batch6 sends to what recv_batch gave (found by identity), to
    copies of the text, to (host, port) pairs and 4-tuples; the first item
    it cannot take (a name, an IPv4 literal, a %scope, a flowinfo over 20
    bits) ends the run for sendto, and a malformed item is a TypeError."""
    native6, mapped, sockets = receivers6
    sink6, sink4 = _sender(sockets, "::1"), _sender(sockets, "127.0.0.4")
    sink6.sendto(b"hi", native6.getsockname()[:2])
    sink4.sendto(b"hi", mapped.getsockname()[:2])
    time.sleep(0.05)
    ((_, from6),) = udp._recv_batch(native6.fileno(), 64)
    ((_, from4),) = udp._recv_batch(mapped.fileno(), 64)
    port6, port4 = sink6.getsockname()[1], sink4.getsockname()[1]
    assert udp._send_batch6(native6.fileno(), [(b"back", from6), (b"copy", ("".join([":", ":1"]), port6)),
                                              (b"four", ("::1", port6, 0, 0))]) == 3
    assert [d for d, _ in _received(sink6, 3)] == [b"back", b"copy", b"four"]
    assert udp._send_batch6(mapped.fileno(), [(b"mapped", from4), (b"text", ("::ffff:127.0.0.4", port4))]) == 2
    assert [d for d, _ in _received(sink4, 2)] == [b"mapped", b"text"]
    dest = ("::1", port6)
    for stop in (("localhost", port6), ("127.0.0.1", port6), ("::1%lo", port6), ("::1", port6, 1 << 20, 0),
                 ("::1", port6, -1, 0), ("::1", port6, 0, 1 << 32), ("::1", port6, "0", 0)):
        assert udp._send_batch6(native6.fileno(), [(b"ok", dest), (b"stop", stop), (b"after", dest)]) == 1, stop
        assert [d for d, _ in _received(sink6, 1)] == [b"ok"]
    assert _received(sink6, 1, 0.2) == []
    for bad in ([(b"x", ("::1", port6, 0, 0, 0))], [(b"x", ("::1",))], [(b"x", (1, port6))], [("text", dest)]):
        with pytest.raises(TypeError):
            udp._send_batch6(native6.fileno(), bad)
    with pytest.raises(TypeError):  # (a 4-tuple is an IPv6 address: send_batch takes pairs)
        udp._send_batch(mapped.fileno(), [(b"x", ("127.0.0.1", port4, 0, 0))])
    with pytest.raises(OverflowError):
        udp._send_batch6(native6.fileno(), [(b"x", ("::1", 70000))])


@batched
def test_sends_during_a_batch_leave_in_order_names_and_errors_included(loop, receiver):
    sink, _ = receiver
    dest = sink.getsockname()
    transport, protocol = _ipv4_transport(loop)
    try:
        transport.collecting = True
        for item in [(b"1", dest), (b"2", ("localhost", dest[1])), (b"3", ("127.0.0.1", 0)), (b"4", dest)]:
            transport.sendto(*item)
        assert not _received(sink, 1, 0.2)  # (held until the flush)
        transport.collecting = False
        transport._flush()
        assert [d for d, _ in _received(sink, 3)] == [b"1", b"2", b"4"]
        assert protocol.edge.stats.send_errors == 1  # (port 0, reported, the rest still sent)
        transport.collecting = True
        for i in range(udp.SEND_FLUSH):
            transport.sendto(b"%d" % i, dest)
        # The SEND_FLUSH-th send flushes the lot: a reply waits for at most
        # SEND_FLUSH - 1 others.
        assert [d for d, _ in _received(sink, udp.SEND_FLUSH)] == [b"%d" % i for i in range(udp.SEND_FLUSH)]
        assert transport.pending == []
    finally:
        transport.close()


@batched
def test_a_full_send_buffer_moves_the_rest_of_a_batch_to_the_backlog(loop, receiver):
    """EAGAIN from sendmmsg (its buffer full): what was not sent goes to the
    backlog, in order, for the writer callback.  A loopback UDP socket does
    not fill its send buffer, so send_batch is replaced here by one that
    sends the first item and then reports EAGAIN."""
    sink, _ = receiver
    dest = sink.getsockname()
    transport, _protocol_ = _ipv4_transport(loop)
    real = transport.send_batch
    calls = []

    def full_after_one(fd, items):
        calls.append(len(items))
        if len(calls) == 1:
            return real(fd, items[:1])
        raise BlockingIOError(11, "Resource temporarily unavailable")
    transport.send_batch = full_after_one
    try:
        transport.collecting = True
        for i in range(5):
            transport.sendto(b"%d" % i, dest)
        transport._flush()
        assert calls == [5, 4]
        assert [d for d, _ in transport.backlog] == [b"1", b"2", b"3", b"4"]
        transport.sendto(b"5", dest)  # (behind the backlog, also in order)
        transport._flush()
        assert [d for d, _ in transport.backlog] == [b"1", b"2", b"3", b"4", b"5"]
        transport.writable()  # (the real socket takes them now)
        assert not transport.backlog
        assert [d for d, _ in _received(sink, 6)] == [b"0", b"1", b"2", b"3", b"4", b"5"]
    finally:
        transport.close()
