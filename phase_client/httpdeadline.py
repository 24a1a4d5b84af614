"""One deadline per HTTP request, from sending it to the last response header.

urllib3's timeouts are per ``recv``: a server that drips one header byte just before each read
timeout holds a request for as long as it likes. Here a timer armed when the request is sent
shuts the socket down if the status line and headers have not all arrived by the deadline; the
blocked read then fails and the request ends as a read timeout ("no response headers within N s").
The body is not covered: its pace is watched by the transfer's rate guard.

This is urllib3's public extension point (``ConnectionCls`` of a pool class, and the pool
manager's ``pool_classes_by_scheme``); urllib3 is imported by the caller, lazily, so that tools
that never speak HTTP do not pay for it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Any


class HeaderDeadlineError(TimeoutError):
    """The status line and headers did not all arrive by the request's deadline. A
    ``TimeoutError``, so urllib3 reports it as a read timeout (with this as its cause)."""


class HeaderDeadlineMixin:
    """Mixed into urllib3's HTTP(S)Connection; ``header_deadline`` is set on the subclass."""

    header_deadline: float = 20.0
    sock: socket.socket | None

    def request(self, *args: Any, **kwargs: Any) -> None:
        self._deadline_lock = threading.Lock()
        self._deadline_done = False
        self._deadline_hit = False
        self._deadline_timer = threading.Timer(self.header_deadline, self._deadline_expire)
        self._deadline_timer.daemon = True
        self._deadline_timer.start()
        try:
            super().request(*args, **kwargs)  # type: ignore[misc]
        except BaseException:
            self._deadline_disarm()
            raise

    def getresponse(self) -> Any:
        try:
            return super().getresponse()  # type: ignore[misc]
        except Exception:
            # The cut surfaces as a reset or a bad status line; say what really happened.
            # urllib3 turns a socket timeout into ReadTimeoutError: the caller's usual path.
            if getattr(self, "_deadline_hit", False):
                raise HeaderDeadlineError(
                    f"no response headers within {self.header_deadline:g}s"
                ) from None
            raise
        finally:
            self._deadline_disarm()

    def _deadline_disarm(self) -> None:
        timer = getattr(self, "_deadline_timer", None)
        if timer is None:
            return
        with self._deadline_lock:
            self._deadline_done = True
        timer.cancel()

    def _deadline_expire(self) -> None:
        with self._deadline_lock:
            if self._deadline_done:  # the headers won the race: the body is not ours to cut
                return
            self._deadline_hit = True
            sock = self.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def pool_classes(urllib3: Any, header_deadline: float) -> dict[str, Any]:
    """``pool_classes_by_scheme`` for a PoolManager whose requests have a header deadline."""
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    attrs = {"header_deadline": header_deadline}
    http_conn = type("DeadlineHTTPConnection", (HeaderDeadlineMixin, HTTPConnection), attrs)
    https_conn = type("DeadlineHTTPSConnection", (HeaderDeadlineMixin, HTTPSConnection), attrs)
    return {
        "http": type(
            "DeadlineHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}
        ),
        "https": type(
            "DeadlineHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn}
        ),
    }
