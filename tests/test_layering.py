"""The pure layers import no I/O: asyncio, socket, sqlite3, logging, prometheus_client."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ("asyncio", "socket", "sqlite3", "logging", "prometheus_client")


def test_pure_layers_load_no_io_modules():
    code = (
        "import sys\n"
        "import sipgate.sip, sipgate.acl, sipgate.admission\n"
        f"bad = [m for m in {FORBIDDEN!r} if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"pure layers imported: {out.stdout.strip()}"


def test_the_check_itself_can_fail():
    # Guard against a vacuous test: importing the transport does load asyncio.
    code = "import sys, sipgate.transport; print('asyncio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"
