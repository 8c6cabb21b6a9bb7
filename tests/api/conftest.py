"""The running sipgate the API tests talk to: one per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from helpers import DEMO_SEED, Serving, UdpPeer, write_config


@pytest.fixture(scope="module")
def server(request, tmp_path_factory) -> Iterator[Serving]:
    """`sipgate serve` on the demo seed with its API, a UDP peer standing
    in for the PBX (``server.pbx``); stopped by PID after the module, and
    it must exit cleanly."""
    tmp = tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])
    pbx = UdpPeer("127.0.0.1")
    srv = Serving(["serve", "--config", str(write_config(tmp, pbx.address[1])), "--seed", str(DEMO_SEED)])
    srv.pbx = pbx  # type: ignore[attr-defined]
    try:
        yield srv
    finally:
        assert srv.stop() == 0
        pbx.close()
