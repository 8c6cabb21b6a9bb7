"""Is the PBX there?  SIP OPTIONS pings from a connected UDP socket.

Relayed requests leave through the listener's unconnected socket, where
Linux reports an ICMP port unreachable only with IP_RECVERR, which crashes
uvloop 0.23 (measured): so a PBX that is down would go unnoticed.  Like
Kamailio's dispatcher pings, sipgate sends an OPTIONS to the PBX every
``interval`` seconds from a socket connected to it, where the kernel does
report the ICMP error.  The result is the ``sipgate_pbx_reachable`` gauge
(0 after a refused probe, 1 after a probe that was not refused) and the
``sipgate_pbx_unreachable_total`` counter; the first refusal after a good
probe, and the recovery, are logged.  Off unless ``sip.pbx_probe_interval``
is set: a PBX that treats unknown OPTIONS as an attack should not get them
unasked.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

__all__ = ["PbxProbe"]

log = logging.getLogger("sipgate.pbx")


class _Probe(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.refused = False
        self.answered = False

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if data.startswith(b"SIP/2.0 "):
            self.answered = True

    def error_received(self, exc: Exception) -> None:
        if isinstance(exc, ConnectionRefusedError):
            self.refused = True


class PbxProbe:
    """Pings ``pbx`` every ``interval`` seconds; counts into ``stats``
    (``pbx_reachable``, ``pbx_unreachable``)."""

    def __init__(self, pbx: tuple[str, int], stats: Any, interval: float, wait: float = 1.0) -> None:
        self.pbx = pbx
        self.stats = stats
        self.interval = interval
        self.wait = min(wait, interval)
        self.sent = 0

    def options(self, local: tuple[str, int]) -> bytes:
        host, port = self.pbx
        host = f"[{host}]" if ":" in host else host
        me = f"[{local[0]}]" if ":" in local[0] else local[0]
        n = self.sent
        tag = f"{os.getpid():x}"
        return (f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {me}:{local[1]};branch=z9hG4bK-sgprobe-{tag}-{n};rport\r\n"
                "Max-Forwards: 70\r\n"
                f"From: <sip:sipgate@{me}>;tag=sgprobe-{tag}\r\n"
                f"To: <sip:{host}:{port}>\r\n"
                f"Call-ID: sgprobe-{tag}-{n}@{me}\r\n"
                f"CSeq: {n + 1} OPTIONS\r\n"
                "User-Agent: sipgate\r\n"
                "Content-Length: 0\r\n\r\n").encode()

    async def probe(self) -> bool:
        """One ping; False when the PBX's port refused it."""
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(_Probe, remote_addr=self.pbx)
        try:
            local = transport.get_extra_info("sockname")[:2]
            transport.sendto(self.options(local))
            self.sent += 1
            deadline = loop.time() + self.wait
            while loop.time() < deadline and not (protocol.refused or protocol.answered):
                await asyncio.sleep(0.02)
            return not protocol.refused
        finally:
            transport.close()

    async def run(self) -> None:
        """Ping until cancelled."""
        stats = self.stats
        was_up = True
        while True:
            try:
                up = await self.probe()
            except OSError as exc:  # no route, address gone: as good as refused
                log.debug("PBX probe failed: %s", exc)
                up = False
            stats.pbx_reachable = 1 if up else 0
            if not up:
                stats.pbx_unreachable += 1
                if was_up:
                    log.warning("PBX %s:%d does not answer: its port is closed (ICMP port unreachable)",
                                *self.pbx)
            elif not was_up:
                log.info("PBX %s:%d is reachable again", *self.pbx)
            was_up = up
            await asyncio.sleep(self.interval)
