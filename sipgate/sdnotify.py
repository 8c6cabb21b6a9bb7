"""The systemd notify protocol (``sd_notify``), without a library.

systemd passes a ``Type=notify`` service the address of a datagram socket
in ``$NOTIFY_SOCKET``: a file system path, or, when it starts with ``@``, a
name in Linux's abstract socket namespace.  The service reports its state
by sending newline-separated ``KEY=VALUE`` assignments to it, one datagram
per report: ``READY=1`` once it serves, ``RELOADING=1`` (with
``MONOTONIC_USEC=``) when it starts rereading its configuration and
``READY=1`` again when done, ``STOPPING=1`` on the way out, and
``STATUS=...`` free text that ``systemctl status`` shows.

Outside systemd (the variable unset) every call does nothing and returns
False.  A report is best effort: a send that fails (the socket is gone,
the receiver's queue is full) is logged at debug level and returns False;
these functions never raise.  They may be called from the event loop: a
datagram to a local socket does not block (the socket is non-blocking).
"""

from __future__ import annotations

import logging
import os
import socket
import time

__all__ = ["notify", "ready", "reloading", "status", "stopping"]

log = logging.getLogger("sipgate.sdnotify")


def _address(value: str) -> str | None:
    """The socket address named by a NOTIFY_SOCKET value (None: unsupported)."""
    if value.startswith("@"):
        return "\0" + value[1:]  # the abstract namespace
    if value.startswith("/"):
        return value
    return None  # e.g. "vsock:CID:PORT" (systemd >= 253, VMs): not supported here


def notify(state: str) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``, ``"STATUS=..."``; several
    assignments separated by newlines) as one datagram to
    ``$NOTIFY_SOCKET``.  True when it was sent; False when the variable is
    unset or empty, or the send failed (logged at debug level)."""
    value = os.environ.get("NOTIFY_SOCKET", "")
    if not value or not state:
        return False
    address = _address(value)
    if address is None:
        log.debug("NOTIFY_SOCKET=%r: unsupported address, not notifying %r", value, state)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.connect(address)
            sock.send(state.encode("utf-8", "replace"))
    except OSError as exc:
        log.debug("notify %r to %r failed: %s", state, value, exc)
        return False
    return True


def _one_line(text: str) -> str:
    # A newline would start another assignment.
    return " ".join(text.splitlines())


def ready(status: str = "") -> bool:
    """``READY=1``: start-up (or a reload) is complete; with ``STATUS=``
    when ``status`` is given."""
    return notify("READY=1" + (f"\nSTATUS={_one_line(status)}" if status else ""))


def reloading() -> bool:
    """``RELOADING=1`` with ``MONOTONIC_USEC=`` (CLOCK_MONOTONIC now, in
    microseconds), as systemd >= 253 requires for ``Type=notify-reload``;
    follow with :func:`ready` when the reload is done."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")


def stopping() -> bool:
    """``STOPPING=1``: the service is shutting down."""
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """``STATUS=text``: free text for ``systemctl status`` (one line)."""
    return notify(f"STATUS={_one_line(text)}")
