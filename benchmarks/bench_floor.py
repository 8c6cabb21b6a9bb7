"""The floor under any Python UDP filter on this machine: CPU per datagram
for an event loop that does no SIP work at all.

A responder on 127.0.0.1 answers every datagram with a 400-byte reply and
does nothing else; a forked sender on 127.0.0.2 sends N INVITE-sized
datagrams, keeping at most ``--window`` of them unanswered in flight and
counting the replies.  UDP may drop datagrams (a full receive buffer), so
the sender never waits for a particular reply: after a short silence it
writes off what is outstanding as lost and goes on, and it finishes once
every datagram is sent and either every reply arrived or ``--idle`` seconds
passed without one.  Lost datagrams are reported under the table.  The
responder's own CPU time (getrusage, user + system) divided by the
datagrams it answered is the cost of receive + send through the loop and
the kernel, before any parsing.
Three responders, side by side in one run:

- uvloop ``DatagramProtocol`` (what sipgate used up to 2026-11-29),
- asyncio's selector loop ``DatagramProtocol``,
- uvloop ``add_reader`` with a drain loop of ``recvfrom``/``sendto`` (what
  sipgate's ``SocketTransport`` does since, in batches of 64).

A denied call through a filter is two datagrams in (INVITE, ACK) and one
out (403), so twice this figure is a lower bound on CPU per denied call,
and 1 / that bound the most calls one core can take.

    .venv/bin/python benchmarks/bench_floor.py [--count 100000] [--repeat 3]
        [--window 128] [--idle 0.5] [--drop-every N]

``--drop-every N`` makes the responder ignore every Nth datagram (to test
the loss handling; off by default and then not on the measured path).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import select
import signal
import socket
import statistics
import sys
import time
import traceback

REPLY = b"x" * 400
REQUEST = b"y" * 700


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# Longest a run may take, sender and responder alike (the old fixed bound).
DEADLINE = 60.0
# Silence (no reply at all) mid-run after which the outstanding datagrams are
# written off as lost, so that lost datagrams cannot shrink the window to 0.
STALL = 0.05


def sender(port: int, count: int, window: int, idle: float, deadline: float) -> tuple[int, int]:
    """Child: send ``count`` datagrams from 127.0.0.2 with at most ``window``
    unanswered, counting replies; return (sent, replies).

    Finishes when all are sent and all replies are in, or ``idle`` s passed
    without a reply after the last send, or at ``deadline`` (monotonic).
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.2", 0))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.setblocking(False)
        poller = select.poll()
        poller.register(s, select.POLLIN)
        dest = ("127.0.0.1", port)
        sendto, recv = s.sendto, s.recv
        sent = replies = written_off = 0
        stall_ms = int(min(idle, STALL) * 1000)
        idle_ms = max(int(idle * 1000), 1)
        # Each pass sends, receives or waits (at most idle s): bounded by the
        # deadline in time, and in count by the sends, replies and timeouts.
        while time.monotonic() < deadline:
            outstanding = sent - replies - written_off
            while sent < count and outstanding < window:
                try:
                    sendto(REQUEST, dest)
                except (BlockingIOError, InterruptedError):  # send buffer full
                    break
                sent += 1
                outstanding += 1
            if outstanding <= 0:
                if sent >= count:
                    break  # every datagram sent and answered (or written off)
                time.sleep(0.001)  # send buffer full with nothing in flight
                continue
            if not poller.poll(stall_ms if sent < count else idle_ms):
                # Silence: what is outstanding is lost (a late reply is still
                # counted below); after the last send this ends the run.
                written_off += outstanding
                if sent >= count:
                    break
                continue
            for _ in range(outstanding + window):  # drain what is queued
                try:
                    recv(2048)
                except (BlockingIOError, InterruptedError):
                    break
                replies += 1
            written_off = min(written_off, sent - replies)  # late replies
        return sent, replies
    finally:
        s.close()


async def respond(mode: str, count: int, window: int, idle: float, drop_every: int) -> tuple[float, int]:
    """Serve until ``count`` datagrams are answered or the sender is done
    (bounded by DEADLINE); return (µs CPU per datagram answered, lost)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        sock.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    done = loop.create_future()  # all answered, or the sender finished
    sender_done = loop.create_future()
    answered = [0]
    seen = [0]

    def one_more() -> None:
        answered[0] += 1
        if answered[0] >= count and not done.done():
            done.set_result(None)

    def drop() -> bool:  # only called with --drop-every
        seen[0] += 1
        return seen[0] % drop_every == 0

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

        def readable_dropping() -> None:
            for _ in range(256):
                try:
                    _data, addr = recv(65535)
                except BlockingIOError:
                    return
                if drop():
                    continue
                send(REPLY, addr)
                one_more()

        loop.add_reader(sock.fileno(), readable_dropping if drop_every else readable)
    else:
        class Echo(asyncio.DatagramProtocol):
            def connection_made(self, t: asyncio.BaseTransport) -> None:
                self.t = t

            def datagram_received(self, data: bytes, addr: tuple) -> None:
                self.t.sendto(REPLY, addr)  # type: ignore[attr-defined]
                one_more()

        class DroppingEcho(Echo):
            def datagram_received(self, data: bytes, addr: tuple) -> None:
                if not drop():
                    super().datagram_received(data, addr)

        transport, _ = await loop.create_datagram_endpoint(
            DroppingEcho if drop_every else Echo, sock=sock)
    # The sender reports "sent replies" on a pipe; EOF means it has exited.
    rfd, wfd = os.pipe()
    deadline = time.monotonic() + DEADLINE
    port = sock.getsockname()[1]
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(rfd)
            sent, replies = sender(port, count, window, idle, deadline)
            os.write(wfd, f"{sent} {replies}\n".encode())
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(wfd)
    os.set_blocking(rfd, False)
    report = bytearray()

    def on_report() -> None:
        try:
            chunk = os.read(rfd, 256)
        except (BlockingIOError, InterruptedError):
            return
        report.extend(chunk)
        if not chunk:  # EOF: the sender is done
            loop.remove_reader(rfd)
            for fut in (sender_done, done):
                if not fut.done():
                    fut.set_result(None)

    loop.add_reader(rfd, on_report)
    try:
        started = cpu()
        try:
            await asyncio.wait_for(done, deadline + idle + 5 - time.monotonic())
        except asyncio.TimeoutError:
            pass
        used = cpu() - started
        # Not measured: let the sender collect its last replies and report.
        try:
            await asyncio.wait_for(sender_done, max(deadline - time.monotonic(), 0) + idle + 5)
        except asyncio.TimeoutError:
            print(f"bench_floor: {mode}: sender did not finish, killing it", file=sys.stderr)
    finally:
        loop.remove_reader(rfd)
        os.close(rfd)
        reap(pid)
        if transport is not None:
            transport.close()
        else:
            loop.remove_reader(sock.fileno())
            sock.close()
    try:
        sent, replies = map(int, report.split())
    except ValueError:
        print(f"bench_floor: {mode}: no report from the sender", file=sys.stderr)
        sent, replies = count, 0
    if sent < count:
        print(f"bench_floor: {mode}: sender stopped at the {DEADLINE:.0f} s deadline "
              f"after {sent:,} of {count:,} datagrams", file=sys.stderr)
    return used / max(answered[0], 1) * 1e6, count - replies


def reap(pid: int, grace: float = 5.0) -> None:
    """Wait (at most ``grace`` s) for the child to exit, then kill it."""
    end = time.monotonic() + grace
    while time.monotonic() < end:
        if os.waitpid(pid, os.WNOHANG)[0]:
            return
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def run(mode: str, count: int, window: int, idle: float, drop_every: int) -> tuple[float, int]:
    args = (count, window, idle, drop_every)
    if mode == "asyncio":
        return asyncio.run(respond("protocol", *args))
    import uvloop

    return uvloop.run(respond("protocol" if mode == "uvloop" else "drain", *args))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--window", type=int, default=128,
                        help="most datagrams in flight without a reply (default 128)")
    parser.add_argument("--idle", type=float, default=0.5,
                        help="s without a reply after which the rest count as lost (default 0.5)")
    parser.add_argument("--drop-every", type=int, default=0, metavar="N",
                        help="responder ignores every Nth datagram (tests loss handling)")
    args = parser.parse_args()
    if args.count < 1 or args.repeat < 1 or args.window < 1 or not 0 < args.idle <= 10 or args.drop_every < 0:
        parser.error("need --count, --repeat, --window >= 1, 0 < --idle <= 10, --drop-every >= 0")
    modes = ("uvloop", "asyncio", "drain")
    results: dict[str, list[float]] = {m: [] for m in modes}
    lost: dict[str, list[int]] = {m: [] for m in modes}
    for _ in range(args.repeat):
        for mode in modes:  # interleaved: the machine's noise hits all alike
            per, gone = run(mode, args.count, args.window, args.idle, args.drop_every)
            results[mode].append(per)
            lost[mode].append(gone)
    print(f"# Python UDP floor — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} — "
          f"Python {platform.python_version()}, {os.cpu_count()} CPU(s)\n")
    print(f"Responder CPU per datagram answered (receive + send, no SIP work), {args.count:,} datagrams, "
          f"median of {args.repeat} interleaved runs.\n")
    print("| responder | µs CPU per datagram | lower bound per denied call (2 in, 1 out) | max denied calls/s per core |")
    print("| --- | ---: | ---: | ---: |")
    labels = {"uvloop": "uvloop DatagramProtocol", "asyncio": "asyncio DatagramProtocol",
              "drain": "uvloop add_reader + recvfrom/sendto drain (sipgate)"}
    for mode in modes:
        per = statistics.median(results[mode])
        # Per datagram answered = one in + one out; a denied call adds the
        # ACK's receive (about half of a pair).
        call = per * 1.5
        print(f"| {labels[mode]} | {per:.1f} | {call:.1f} µs | {1e6 / call:,.0f} |")
    print("\nDatagrams lost (no reply to the sender) per run: "
          + "; ".join(f"{mode} {', '.join(f'{n:,}' for n in lost[mode])}" for mode in modes)
          + (f" (the responder ignored 1 datagram in {args.drop_every:,})." if args.drop_every else "."))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
