"""The floor under any Python UDP filter on this machine: CPU per datagram
for an event loop that does no SIP work at all.

A responder on 127.0.0.1 answers every datagram with a 400-byte reply and
does nothing else; a forked sender on 127.0.0.2 sends N INVITE-sized
datagrams (paced, draining its replies).  The responder's own CPU time
(getrusage, user + system) divided by the datagrams it answered is the cost
of receive + send through the loop and the kernel, before any parsing.
Three responders, side by side in one run:

- uvloop ``DatagramProtocol`` (what sipgate uses),
- asyncio's selector loop ``DatagramProtocol``,
- uvloop ``add_reader`` with a drain loop of ``recvfrom``/``sendto`` (what
  a hand-rolled batching transport would save).

A denied call through a filter is two datagrams in (INVITE, ACK) and one
out (403), so twice this figure is a lower bound on CPU per denied call,
and 1 / that bound the most calls one core can take.

    .venv/bin/python benchmarks/bench_floor.py [--count 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import socket
import statistics
import sys
import time

REPLY = b"x" * 400
REQUEST = b"y" * 700


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def sender(port: int, count: int) -> None:
    """Child: send ``count`` datagrams from 127.0.0.2, draining replies."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.2", 0))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    for i in range(count):
        s.sendto(REQUEST, ("127.0.0.1", port))
        if i % 64 == 63:
            time.sleep(0.0003)
            s.setblocking(False)
            try:
                while True:
                    s.recv(2048)
            except BlockingIOError:
                pass
            s.setblocking(True)


async def respond(mode: str, count: int) -> float:
    """Serve until ``count`` datagrams are answered (or 60 s); µs CPU each."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        sock.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    done = loop.create_future()
    answered = [0]

    def one_more() -> None:
        answered[0] += 1
        if answered[0] >= count and not done.done():
            done.set_result(None)

    transport = None
    if mode == "drain":
        recv, send = sock.recvfrom, sock.sendto

        def readable() -> None:
            for _ in range(256):
                try:
                    _data, addr = recv(65535)
                except BlockingIOError:
                    return
                send(REPLY, addr)
                one_more()

        loop.add_reader(sock.fileno(), readable)
    else:
        class Echo(asyncio.DatagramProtocol):
            def connection_made(self, t: asyncio.BaseTransport) -> None:
                self.t = t

            def datagram_received(self, data: bytes, addr: tuple) -> None:
                self.t.sendto(REPLY, addr)  # type: ignore[attr-defined]
                one_more()

        transport, _ = await loop.create_datagram_endpoint(Echo, sock=sock)
    pid = os.fork()
    if pid == 0:
        try:
            sender(sock.getsockname()[1], count)
        finally:
            os._exit(0)
    started = cpu()
    try:
        await asyncio.wait_for(done, 60)
    except asyncio.TimeoutError:
        pass
    used = cpu() - started
    os.waitpid(pid, 0)
    if transport is not None:
        transport.close()
    else:
        loop.remove_reader(sock.fileno())
        sock.close()
    return used / max(answered[0], 1) * 1e6


def run(mode: str, count: int) -> float:
    if mode == "asyncio":
        return asyncio.run(respond("protocol", count))
    import uvloop

    return uvloop.run(respond("protocol" if mode == "uvloop" else "drain", count))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    modes = ("uvloop", "asyncio", "drain")
    results: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(args.repeat):
        for mode in modes:  # interleaved: the machine's noise hits all alike
            results[mode].append(run(mode, args.count))
    print(f"# Python UDP floor — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} — "
          f"Python {platform.python_version()}, {os.cpu_count()} CPU(s)\n")
    print(f"Responder CPU per datagram answered (receive + send, no SIP work), {args.count:,} datagrams, "
          f"median of {args.repeat} interleaved runs.\n")
    print("| responder | µs CPU per datagram | lower bound per denied call (2 in, 1 out) | max denied calls/s per core |")
    print("| --- | ---: | ---: | ---: |")
    labels = {"uvloop": "uvloop DatagramProtocol (sipgate)", "asyncio": "asyncio DatagramProtocol",
              "drain": "uvloop add_reader + recvfrom/sendto drain"}
    for mode in modes:
        per = statistics.median(results[mode])
        # Per datagram answered = one in + one out; a denied call adds the
        # ACK's receive (about half of a pair).
        call = per * 1.5
        print(f"| {labels[mode]} | {per:.1f} | {call:.1f} µs | {1e6 / call:,.0f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
