"""A 2xx from the API means durable: SIGKILL right after it, restart, it is there."""

from __future__ import annotations

import os
import signal

from twilio.rest import Client

from helpers import ACCOUNT_SID, AUTH_TOKEN, DENIED, Serving, UdpPeer, request, write_config
from sipgate.sip import parse


def client(port: int) -> Client:
    c = Client(ACCOUNT_SID, AUTH_TOKEN)
    c.trunking.base_url = c.api.base_url = f"http://127.0.0.1:{port}"
    return c


def test_sigkill_after_2xx_keeps_the_change(tmp_path):
    with UdpPeer("127.0.0.1") as pbx:
        config = str(write_config(tmp_path, pbx.address[1]))
        first = Serving(["serve", "--config", config])
        try:
            c = client(first.api_port)
            trunk = c.trunking.v1.trunks.create(domain_name="durable.sipgate.test")
            acl = c.api.v2010.account.sip.ip_access_control_lists.create(friendly_name="durable")
            c.api.v2010.account.sip.ip_access_control_lists(acl.sid).ip_addresses.create(
                friendly_name="d", ip_address=DENIED)
            c.trunking.v1.trunks(trunk.sid).ip_access_control_lists.create(ip_access_control_list_sid=acl.sid)
        finally:
            os.kill(first.proc.pid, signal.SIGKILL)  # no shutdown, no flush: only what was committed survives
            first.proc.wait(10)
        second = Serving(["serve", "--config", config])
        try:
            c = client(second.api_port)
            assert [a.sid for a in c.trunking.v1.trunks(trunk.sid).ip_access_control_lists.list()] == [acl.sid]
            with UdpPeer(DENIED) as caller:
                caller.send(request(ruri="sip:1@durable.sipgate.test", via_host=f"{DENIED}:{caller.address[1]}"),
                            ("127.0.0.1", second.sip_port))
                assert parse(pbx.recv()[0]).method == "INVITE"  # enforced from the stored state at start
        finally:
            assert second.stop() == 0
