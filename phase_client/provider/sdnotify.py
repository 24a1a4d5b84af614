"""systemd's readiness protocol (sd_notify(3)), without libsystemd: one datagram to the socket
``$NOTIFY_SOCKET`` names. A no-op when not started by systemd with Type=notify.

``plasmd serve`` sends ``READY=1`` once it serves and its advertisers have started, and
``STOPPING=1`` when it begins to shut down (packaging/plasmd.service).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


def notify(message: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``message`` (``READY=1``, ``STATUS=...``; newline-separated assignments) to the
    service manager. True if sent; False if there is no manager to tell, or it cannot be
    reached (logged: the daemon keeps running, systemd's start timeout will say the rest)."""
    address = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract socket
    elif not address.startswith("/"):
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        log.warning("cannot notify the service manager at %s: %s", address.lstrip("\0"), exc)
        return False
    return True
