"""The provider's HTTP server: catalog files with ranges, validators and zero-copy bodies.

One thread per connection (``ThreadingHTTPServer``), so a slow or stalled client only holds
its own thread; the socket timeout cuts connections that stay silent (idle keep-alive, stalled
downloads) after ``idle_timeout`` seconds. A request line and its headers must arrive within
``header_timeout`` seconds in total (from accept, or from the first byte of a keep-alive
request), however slowly they trickle in. Responses must be taken at ``min_send_rate`` bytes/s
on average over ``send_grace`` seconds (slow readers). When every connection slot is taken, the
connection that has waited longest for a request is closed to make room, else the transfer
taken slowest if it is below ``evict_below_rate``, so slow, idle or slow-reading sockets cannot
lock real clients out. File bodies go out with ``os.sendfile`` (zero-copy). Only paths present
in the current catalog snapshot are served: a URL is looked up, never joined to a directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import math
import os
import select
import socket
import socketserver
import struct
import sys
import termios
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, BinaryIO, Protocol

from .catalog import ServedFile, Snapshot, file_identity
from .httprange import (
    Unsatisfiable,
    etag_for,
    format_http_date,
    if_range_allows,
    none_match,
    not_modified_since,
    parse_range,
)
from .metrics import CONTENT_TYPE as METRICS_TYPE
from .metrics import Family, render

log = logging.getLogger(__name__)
# One line per answered request, at INFO: the access log (-q drops it; --log-format json gives
# its fields as JSON keys).
access_log = logging.getLogger(__name__ + ".access")

ALLOWED = "GET, HEAD"
JSON_TYPE = "application/json"


class Source(Protocol):
    """What the server asks the provider: the current catalog and the status document."""

    @property
    def snapshot(self) -> Snapshot: ...

    def status(self) -> dict[str, Any]: ...

    def healthy(self) -> bool: ...


class Stats:
    """Counters for /status and /metrics; a lock because every connection thread updates them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.bytes_sent = 0
        self.active_transfers = 0
        # (path class, status) -> [answers, body bytes]
        self.answers: dict[tuple[str, int], list[int]] = {}

    def answered(self, path_class: str, status: int, body: int) -> None:
        with self._lock:
            counts = self.answers.setdefault((path_class, status), [0, 0])
            counts[0] += 1
            counts[1] += body

    def families(self) -> list[Family]:
        """The HTTP side of /metrics."""
        with self._lock:
            answers = sorted(self.answers.items())
            active = self.active_transfers
        requests = Family(
            "plasmd_http_requests_total",
            "counter",
            "HTTP requests answered, by path class and status",
        )
        sent = Family(
            "plasmd_http_response_bytes_total",
            "counter",
            "body bytes sent, by path class and status",
        )
        for (path_class, status), (count, body) in answers:
            labels = {"class": path_class, "status": str(status)}
            requests.add(count, labels)
            sent.add(body, labels)
        transfers = Family("plasmd_http_active_transfers", "gauge", "file bodies being sent now")
        return [requests, sent, transfers.add(active)]

    def add_request(self) -> None:
        with self._lock:
            self.requests += 1

    def transfer(self, delta: int) -> None:
        with self._lock:
            self.active_transfers += delta

    def add_bytes(self, count: int) -> None:
        with self._lock:
            self.bytes_sent += count

    def end_transfer(self, count: int) -> None:
        """A transfer is over after ``count`` bytes: both counters change in one step."""
        with self._lock:
            self.active_transfers -= 1
            self.bytes_sent += count

    @contextlib.contextmanager
    def counting(self, count: int) -> Iterator[None]:
        """Count ``count`` bytes *before* they are written, taken back if the write fails.

        A client that has read a whole response may ask /status at once on another
        connection; counting after the write would race with that request.
        """
        self.add_bytes(count)
        try:
            yield
        except OSError:
            self.add_bytes(-count)
            raise

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return {
                "requests": self.requests,
                "bytes_served": self.bytes_sent,
                "active_transfers": self.active_transfers,
            }


@dataclass(frozen=True)
class Body:
    """What a response carries: in-memory bytes (manifests, JSON) or a catalog file."""

    size: int
    etag: str
    mtime: float
    content_type: str
    data: bytes | None = None
    handle: BinaryIO | None = None


def json_body(data: bytes, mtime: float) -> Body:
    """An in-memory JSON document as a response body."""
    etag = etag_for(hashlib.sha256(data).hexdigest())
    return Body(size=len(data), etag=etag, mtime=mtime, content_type=JSON_TYPE, data=data)


MAX_CONNECTIONS = 1024
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_MIN_SEND_RATE = 4096.0  # bytes/s: a slow WAN client still gets a 10 MiB kernel in 42 min
DEFAULT_SEND_GRACE = 30.0  # seconds the rate is averaged over
DEFAULT_EVICT_BELOW_RATE = 16384.0  # bytes/s: at the cap, slower transfers may make room
# A transfer is measured this long (at most send_grace) before it can be evicted: its first
# moments (TCP slow start, a client's first read) say little about its rate.
EVICT_AFTER = 2.0
# At the cap, a connection that has waited less than this for its request is probably a real
# client sending it: an evictable slow transfer makes room first.
SETTLING = 1.0
CHUNK = 4 << 20  # bytes per sendfile/send call: each call stays short
# SIOCOUTQ: bytes written to a TCP socket that its peer has not acknowledged yet (Linux).
OUTQ = getattr(termios, "TIOCOUTQ", None)
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Length: 0\r\n"
    b"Connection: close\r\n\r\n"
)


def unacknowledged(sock: socket.socket) -> int:
    """Bytes queued on ``sock`` that its peer has not acknowledged (0 where unknown).

    What was written minus this is what the client has really taken: the kernel's send
    buffer accepts megabytes at once, and a slow reader must not get credit for them."""
    if OUTQ is None:
        return 0
    try:
        raw = fcntl.ioctl(sock.fileno(), OUTQ, b"\0\0\0\0")
    except OSError:  # closed, or not TCP: nothing we can tell
        return 0
    return max(0, int.from_bytes(raw, sys.byteorder, signed=True))


class SendRate:
    """How fast a client takes what a connection sends it: marks of (time, bytes taken), one
    every ``grace / 4`` seconds, the oldest kept being the newest at least ``grace`` old.

    Pure: the caller passes the time and the byte count. A client is too slow when, over a
    measured span of at least ``grace`` seconds, it took less than ``min_rate`` bytes/s on
    average; a client taking ``min_rate`` steadily, or in bursts much shorter than the window,
    never is.
    """

    def __init__(self, min_rate: float, grace: float) -> None:
        self.min_rate = min_rate
        self.grace = grace
        self.step = grace / 4
        # The eviction check reads the marks from the accepting thread.
        self._lock = threading.Lock()
        self._marks: deque[tuple[float, int]] = deque()  # empty until the first sample

    def restart(self, now: float, taken: int) -> None:
        """A new span: the client has taken everything sent so far, it is not behind."""
        with self._lock:
            self._marks = deque([(now, taken)])

    def sample(self, now: float, taken: int) -> None:
        with self._lock:
            marks = self._marks
            if not marks or now - marks[-1][0] >= self.step:
                marks.append((now, taken))
            while len(marks) > 1 and marks[1][0] <= now - self.grace:
                marks.popleft()

    def window(self, now: float, taken: int) -> tuple[float, float]:
        """(seconds measured, bytes/s taken over them), from the oldest mark kept."""
        with self._lock:
            since, before = self._marks[0] if self._marks else (now, taken)
        elapsed = now - since
        return elapsed, (taken - before) / elapsed if elapsed > 0 else math.inf

    def too_slow(self, now: float, taken: int) -> float | None:
        """Record a sample; the rate if it is below ``min_rate`` over a whole window."""
        self.sample(now, taken)
        elapsed, rate = self.window(now, taken)
        return rate if elapsed >= self.grace and rate < self.min_rate else None

    def next_check(self) -> float:
        """When the next mark is due (or the first window ends): the sender wakes by then."""
        with self._lock:
            if not self._marks:
                return -math.inf  # nothing measured yet: sample now
            return min(self._marks[-1][0] + self.step, self._marks[0][0] + self.grace)


def abort(sock: socket.socket) -> None:
    """Make the coming close a reset: the bytes still queued for a client that does not take
    them are dropped at once, instead of an orphaned socket holding them in kernel memory."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class TooSlow(TimeoutError):
    """The client took a response more slowly than the minimum rate for a whole window."""


class Sender(Protocol):
    """A connection blocked writing to its client: a candidate for eviction at the cap."""

    peer: str

    def current_rate(self, now: float) -> tuple[float, float]:
        """(seconds measured, bytes/s the client took over them)."""
        ...


class ProviderServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 512  # bursts of many clients connecting at once

    def __init__(
        self,
        address: tuple[str, int],
        source: Source,
        idle_timeout: float,
        max_connections: int = MAX_CONNECTIONS,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        min_send_rate: float = DEFAULT_MIN_SEND_RATE,
        send_grace: float = DEFAULT_SEND_GRACE,
        evict_below_rate: float = DEFAULT_EVICT_BELOW_RATE,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.source = source
        self.idle_timeout = idle_timeout
        self.header_timeout = header_timeout
        self.min_send_rate = min_send_rate
        self.send_grace = send_grace
        self.evict_below_rate = evict_below_rate
        self.evict_after = min(EVICT_AFTER, send_grace)
        self.stats = Stats()
        # One thread per connection: the cap keeps a flood of connections from exhausting
        # threads. At the cap, a connection still waiting for its request (the longest waiting
        # one) gives its slot to the newcomer, else the slowest-taken transfer if it is below
        # evict_below_rate (a healthy transfer is never cut for a newcomer); only when every
        # slot is busy answering at a healthy rate does the newcomer get an immediate 503.
        self.max_connections = max_connections
        self._slots_lock = threading.Lock()
        self._connections = 0
        # Connections waiting for a request line + headers -> when they started waiting;
        # insertion order is waiting order (a connection is re-inserted when it waits again).
        self._waiting: dict[socket.socket, float] = {}
        self._evicted: set[socket.socket] = set()  # closed for a newcomer, slot handed over
        # Connections blocked writing to their client (a full send buffer).
        self._sending: dict[socket.socket, Sender] = {}
        super().__init__(address, Handler)

    @property
    def connections(self) -> int:
        """Connections holding a slot (served, or waiting for a request)."""
        with self._slots_lock:
            return self._connections

    def process_request(self, request: Any, client_address: Any) -> None:
        victim: socket.socket | None = None
        slow: tuple[str, float] | None = None
        refused = False
        with self._slots_lock:
            now = time.monotonic()
            oldest = next(iter(self._waiting), None)  # waiting longest: a slowloris or idle
            slowest = None
            if self._connections >= self.max_connections and (
                oldest is None or now - self._waiting[oldest] < SETTLING
            ):
                # Rather a slow reader than a newcomer still sending its request.
                slowest = self._slowest_sender(now)
            if self._connections < self.max_connections:
                self._connections += 1
            elif slowest is not None:
                victim, slow = slowest[0], slowest[1:]
                del self._sending[victim]
                self._evicted.add(victim)
            elif oldest is not None:
                victim = oldest
                del self._waiting[victim]
                self._evicted.add(victim)
            else:
                refused = True
            if not refused:
                self._waiting[request] = time.monotonic()
        if slow is not None and victim is not None:
            log.info("Evicted a slow transfer to %s (%.0f B/s) for a newcomer", *slow)
            abort(victim)
        if refused:
            with contextlib.suppress(OSError):
                request.sendall(BUSY)
            self.shutdown_request(request)
            return
        if victim is not None:
            # Its blocked read returns at once (EOF), or its blocked write fails (EPIPE), and
            # its thread ends.
            with contextlib.suppress(OSError):
                victim.shutdown(socket.SHUT_RDWR)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(request)

    def _release(self, request: socket.socket) -> None:
        with self._slots_lock:
            self._waiting.pop(request, None)
            if request in self._evicted:
                self._evicted.discard(request)  # its slot already belongs to another
            else:
                self._connections -= 1

    def _slowest_sender(self, now: float) -> tuple[socket.socket, str, float] | None:
        """The blocked sender taken slowest, if below ``evict_below_rate`` and measured for
        ``evict_after`` seconds; the slots lock is held. Transfers at or above the threshold
        are never candidates, so making room never cuts a healthy download."""
        found: tuple[socket.socket, str, float] | None = None
        for sock, sender in self._sending.items():
            elapsed, rate = sender.current_rate(now)
            if elapsed < self.evict_after or rate >= self.evict_below_rate:
                continue
            if found is None or rate < found[2]:
                found = (sock, sender.peer, rate)
        return found

    def sending(self, request: socket.socket, sender: Sender | None) -> None:
        """``request`` is blocked writing (``sender``), or no longer (None)."""
        with self._slots_lock:
            if sender is None:
                self._sending.pop(request, None)
            elif request not in self._evicted:
                self._sending[request] = sender

    def waiting_since(self, request: socket.socket) -> float | None:
        with self._slots_lock:
            return self._waiting.get(request)

    def wait_for_request(self, request: socket.socket) -> None:
        """``request`` waits for its next request (it may be evicted for a newcomer)."""
        with self._slots_lock:
            if request not in self._evicted:
                self._waiting.pop(request, None)
                self._waiting[request] = time.monotonic()

    def request_received(self, request: socket.socket) -> bool:
        """Its headers arrived: no longer evictable. False if it was evicted just before."""
        with self._slots_lock:
            self._waiting.pop(request, None)
            return request not in self._evicted

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn): slow without DNS, and unused.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s failed", client_address, exc_info=True)


def client_host(address: tuple[Any, ...]) -> str:
    """The client as logs name it: an IPv4 client of a dual-stack socket (the default listen
    address) as its IPv4 address, ``::ffff:192.0.2.7`` -> ``192.0.2.7``."""
    host = str(address[0])
    if host.startswith("::ffff:") and "." in host:
        return host.removeprefix("::ffff:")
    return host


def printable(text: str, limit: int = 512) -> str:
    """``text`` safe for one log line: control characters, quotes and backslashes escaped."""
    out = [
        c if c.isprintable() and c not in '"\\' else c.encode("unicode_escape").decode("ascii")
        for c in text[:limit]
    ]
    return "".join(out).replace('"', '\\"') + ("..." if len(text) > limit else "")


class DeadlineReader(io.RawIOBase):
    """The reading side of a connection: each receive waits at most ``read_timeout()``."""

    def __init__(self, handler: Handler) -> None:
        super().__init__()
        self.handler = handler

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        sock = self.handler.connection
        sock.settimeout(self.handler.read_timeout())
        return int(sock.recv_into(buffer))


class PacedWriter(io.BufferedIOBase):
    """The writing side of a connection: every write goes through ``Handler.pump``, so small
    responses (headers, JSON, pipelined answers) are held to the send rate like file bodies."""

    def __init__(self, handler: Handler) -> None:
        super().__init__()
        self.handler = handler

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        sock = self.handler.connection
        sent = self.handler.pump(len(view), lambda done: sock.send(view[done : done + CHUNK]))
        if sent != len(view):
            raise ConnectionError("connection closed while writing")
        return sent


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "plasmd"
    # Never answer in HTTP/0.9 (a bare body): a request line without a version is garbage.
    default_request_version = "HTTP/1.0"
    server: ProviderServer
    # http.server's pending header lines (private, Python 3.11-3.13): end_headers_with appends
    # a small body to them so headers and body leave in one write. Checked by
    # tests/test_dependency_contracts.py, which fails loudly if the standard library changes.
    _headers_buffer: list[bytes]

    def version_string(self) -> str:
        return self.server_version

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.idle_timeout)
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.header_deadline: float | None = None
        self.accepted = self.server.waiting_since(self.connection) or time.monotonic()
        self.answered = 0
        # Reads go through DeadlineReader, which bounds each wait by the header deadline.
        self.rfile.close()
        self.reader = io.BufferedReader(DeadlineReader(self))
        self.rfile = self.reader
        # Writes go through pump, which holds the client to the minimum rate.
        self.peer = client_host(self.client_address)
        self.written = 0  # bytes handed to the kernel on this connection
        self.rate = SendRate(self.server.min_send_rate, self.server.send_grace)
        self.wfile.close()
        self.wfile = PacedWriter(self)

    def taken(self) -> int:
        """Bytes the client has acknowledged on this connection."""
        return self.written - unacknowledged(self.connection)

    def current_rate(self, now: float) -> tuple[float, float]:
        return self.rate.window(now, self.taken())

    def pump(self, count: int, send_some: Callable[[int], int]) -> int:
        """Send ``count`` bytes with ``send_some(done)``, one non-blocking send from ``done``
        on (0: nothing more to send); the bytes sent.

        Each wait for room in the send buffer lasts at most the idle timeout (a stalled
        client), and the client must take the bytes at ``min_send_rate`` on average over
        ``send_grace`` seconds (a slow reader): else TimeoutError / TooSlow. While blocked,
        the connection can be evicted for a newcomer at the cap (then the send fails).
        """
        sock = self.connection
        server = self.server
        rate = self.rate
        now = time.monotonic()
        if unacknowledged(sock) == 0:
            rate.restart(now, self.written)  # it has everything so far: a new span
        else:
            rate.sample(now, self.taken())  # still behind on earlier answers: the span goes on
        check_at = rate.next_check()
        idle_deadline = now + server.idle_timeout
        done = 0
        blocked = False
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLOUT)
        sock.setblocking(False)  # our own waits: a socket timeout would wait per call
        try:
            while done < count:
                try:
                    sent = send_some(done)
                except BlockingIOError:
                    sent = -1
                if sent == 0:
                    break
                now = time.monotonic()
                if sent > 0:
                    done += sent
                    self.written += sent
                    idle_deadline = now + server.idle_timeout
                elif not blocked:
                    blocked = True
                    server.sending(sock, self)
                if now >= check_at:
                    slow = rate.too_slow(now, self.taken())
                    if slow is not None:
                        log.info(
                            "Cut a slow transfer to %s: %.0f B/s over %gs (minimum %.0f)",
                            self.peer,
                            slow,
                            server.send_grace,
                            server.min_send_rate,
                        )
                        raise TooSlow(f"client took {slow:.0f} B/s")
                    check_at = rate.next_check()
                if sent > 0:
                    continue
                if now >= idle_deadline:
                    raise TimeoutError("timed out")
                wait = min(idle_deadline, check_at) - now
                poller.poll(max(1, math.ceil(wait * 1000)))
        except TimeoutError:  # stalled or too slow (an evicted one fails with EPIPE instead)
            abort(sock)
            raise
        finally:
            if blocked:
                server.sending(sock, None)
            sock.settimeout(server.idle_timeout)
        return done

    def read_timeout(self) -> float:
        """How long the next read may wait: the idle timeout, or what is left of the time
        for the request line and headers, which a trickle of bytes does not extend."""
        if self.header_deadline is None:
            return self.server.idle_timeout
        remaining = self.header_deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request headers not received in time")
        return min(self.server.idle_timeout, remaining)

    def handle_one_request(self) -> None:
        if self.answered:
            # Keep-alive: silence up to the idle timeout, then the next request starts its
            # header clock with its first byte.
            self.server.wait_for_request(self.connection)
            try:
                first = self.reader.peek(1)
            except OSError as exc:
                log.debug("keep-alive connection from %s closed: %s", self.client_address[0], exc)
                first = b""
            if not first:
                self.close_connection = True
                return
            start = time.monotonic()
        else:
            start = self.accepted
        self.header_deadline = start + self.server.header_timeout
        self.status_code: int | None = None
        self.body_sent = 0
        self.path_class = "other"
        self.raw_requestline = b""
        try:
            super().handle_one_request()
        finally:
            self.header_deadline = None
            self.answered += 1
            if self.status_code is not None:
                self.account(time.monotonic() - start)

    def account(self, seconds: float) -> None:
        """One answered request: the /metrics counters and the access log line."""
        status = self.status_code or 0
        self.server.stats.answered(self.path_class, status, self.body_sent)
        if not access_log.isEnabledFor(logging.INFO):
            return
        line = self.raw_requestline.decode("latin-1").rstrip("\r\n")
        method, _, rest = line.partition(" ")
        path = printable(rest.rsplit(" ", 1)[0] if " " in rest else rest)
        fields = {
            "client": self.peer,
            "method": printable(method),
            "path": path,
            "status": status,
            "bytes": self.body_sent,
            "duration_s": round(seconds, 6),
        }
        access_log.info(
            '%s "%s %s" %d %d %.3fs',
            fields["client"],
            fields["method"],
            path,
            status,
            self.body_sent,
            seconds,
            extra={"fields": fields},
        )

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        # http.server calls this from send_response: note the status for the access log.
        with contextlib.suppress(TypeError, ValueError):
            self.status_code = int(code)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.client_address[0], *args)

    def parse_request(self) -> bool:
        self.server.stats.add_request()
        try:
            parsed = super().parse_request()  # reads the headers, under the header deadline
        finally:
            self.header_deadline = None
            self.connection.settimeout(self.server.idle_timeout)
        if not self.server.request_received(self.connection):
            self.close_connection = True  # evicted a moment ago: its slot is someone else's
            return False
        return parsed

    def do_GET(self) -> None:
        self.serve(send_body=True)

    def do_HEAD(self) -> None:
        self.serve(send_body=False)

    def refuse_method(self) -> None:
        self.simple(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "method not allowed"}, close=True)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = refuse_method

    # -- routing ------------------------------------------------------------------------------

    def url_path(self) -> str | None:
        target = self.path
        if target.startswith(("http://", "https://")):
            target = urllib.parse.urlsplit(target).path or "/"
        if not target.startswith("/"):
            return None
        return urllib.parse.unquote(target.split("?", 1)[0].split("#", 1)[0], errors="strict")

    def serve(self, send_body: bool) -> None:
        try:
            path = self.url_path()
        except UnicodeDecodeError:
            path = None
        if path is None:
            self.simple(HTTPStatus.BAD_REQUEST, {"error": "bad request target"}, close=True)
            return
        root = self.server.source.snapshot.roots.get(path)
        if root is not None:  # the root chain (docs/trust.md), served as it was given
            self.path_class = "root"
            self.respond(json_body(*root), send_body, cache="no-cache")
            return
        if path == "/health":
            self.path_class = "health"
            healthy = self.server.source.healthy()
            document = {"status": "ok" if healthy else "unavailable"}
            code = HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE
            self.simple(code, document, send_body=send_body)
            return
        if path == "/status":
            self.path_class = "status"
            status = self.server.source.status() | self.server.stats.as_dict()
            self.simple(HTTPStatus.OK, status, send_body=send_body)
            return
        if path == "/metrics":
            self.path_class = "metrics"
            self.send_metrics(send_body)
            return
        route = self.server.source.snapshot.routes.get(path)
        if route is None:
            self.simple(HTTPStatus.NOT_FOUND, {"error": "not found"}, send_body=send_body)
            return
        entry, served = route
        self.path_class = "manifest" if served is None else "artifact"
        if served is None:
            data = entry.manifest_bytes
            body = Body(
                size=len(data),
                etag=etag_for(hashlib.sha256(data).hexdigest()),
                mtime=entry.manifest.created_at,
                content_type=JSON_TYPE,
                data=data,
            )
            self.respond(body, send_body, cache="no-cache")
            return
        self.serve_file(served, send_body)

    def serve_file(self, served: ServedFile, send_body: bool) -> None:
        try:
            handle = open(served.path, "rb")  # noqa: SIM115 - closed below, after sendfile
        except OSError:
            self.simple(HTTPStatus.NOT_FOUND, {"error": "not found"}, send_body=send_body)
            return
        with handle:
            if file_identity(os.fstat(handle.fileno())) != served.identity:
                # Replaced since the last scan: its hash is unknown until the next one.
                self.simple(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    {"error": "artifact is changing; retry shortly"},
                    send_body=send_body,
                    extra={"Retry-After": "3"},
                )
                return
            body = Body(
                size=served.size,
                etag=etag_for(served.sha256),
                mtime=served.mtime,
                content_type="application/octet-stream",
                handle=handle,
            )
            self.respond(body, send_body, cache="max-age=60")

    # -- responses ----------------------------------------------------------------------------

    def respond(self, body: Body, send_body: bool, cache: str) -> None:
        validators = {
            "ETag": body.etag,
            "Last-Modified": format_http_date(body.mtime),
            "Cache-Control": cache,
            "Accept-Ranges": "bytes",
        }
        inm = self.headers.get("If-None-Match")
        if none_match(inm, body.etag) or (
            inm is None and not_modified_since(self.headers.get("If-Modified-Since"), body.mtime)
        ):
            self.send_response(HTTPStatus.NOT_MODIFIED)
            self.send_headers(validators)
            self.end_headers()
            return
        byte_range = None
        if if_range_allows(self.headers.get("If-Range"), body.etag, body.mtime):
            try:
                byte_range = parse_range(self.headers.get("Range"), body.size)
            except Unsatisfiable:
                self.simple(
                    HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                    {"error": "range not satisfiable"},
                    send_body=send_body,
                    extra={"Content-Range": f"bytes */{body.size}", "Accept-Ranges": "bytes"},
                )
                return
        if byte_range is None:
            offset, count = 0, body.size
            self.send_response(HTTPStatus.OK)
        else:
            offset, count = byte_range.first, byte_range.length
            self.send_response(HTTPStatus.PARTIAL_CONTENT)
            self.send_header("Content-Range", byte_range.content_range(body.size))
        self.send_headers(validators)
        self.send_header("Content-Type", body.content_type)
        self.send_header("Content-Length", str(count))
        if body.data is not None:
            payload = body.data[offset : offset + count] if send_body else b""
            with self.server.stats.counting(len(payload)):
                self.end_headers_with(payload)
            self.body_sent = len(payload)
            return
        self.end_headers()
        if send_body and count and body.handle is not None:
            self.send_file(body.handle, offset, count)

    def end_headers_with(self, data: bytes) -> None:
        """``end_headers()`` and a small body in one write: one syscall, one TCP segment."""
        self._headers_buffer.append(b"\r\n" + data)
        self.flush_headers()

    def send_file(self, handle: BinaryIO, offset: int, count: int) -> None:
        """``count`` bytes of ``handle`` from ``offset``, zero-copy, in chunks of at most
        ``CHUNK`` under ``pump``'s idle and rate checks; the counters are settled before the
        last byte goes out, so a client that has the whole body sees them in /status."""
        stats = self.server.stats
        stats.transfer(+1)
        sent = 0
        settled = False
        out, source = self.connection.fileno(), handle.fileno()

        def from_file(start: int, length: int) -> Callable[[int], int]:
            return lambda done: os.sendfile(out, source, start + done, min(length - done, CHUNK))

        try:
            if count > 1:
                sent = self.pump(count - 1, from_file(offset, count - 1))
            if sent == count - 1:
                # Counted as sent before it is: the client sees the end with this byte.
                stats.end_transfer(count)
                settled = True
                last = 0
                try:
                    last = self.pump(1, from_file(offset + sent, 1))
                finally:
                    sent += last
                    if not last:
                        stats.add_bytes(-1)
        except OSError as exc:  # the client went away, stalled, read too slowly, was evicted
            log.debug("transfer to %s cut: %s", self.peer, exc)
            self.close_connection = True
        finally:
            if not settled:
                stats.end_transfer(sent)
            self.body_sent = sent
        if sent != count:  # truncated underneath us: the length we promised is wrong
            self.close_connection = True

    def send_headers(self, headers: dict[str, str]) -> None:
        for name, value in headers.items():
            self.send_header(name, value)

    def simple(
        self,
        code: HTTPStatus,
        document: dict[str, Any],
        *,
        send_body: bool = True,
        close: bool = False,
        extra: dict[str, str] | None = None,
    ) -> None:
        """A small JSON response; ``close`` for errors after which the stream is unreliable."""
        data = (json.dumps(document, indent=1, sort_keys=True) + "\n").encode()
        self.send_response(code)
        if code == HTTPStatus.METHOD_NOT_ALLOWED:
            self.send_header("Allow", ALLOWED)
        self.send_headers(extra or {})
        self.send_header("Content-Type", JSON_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers_with(data if send_body else b"")
        self.body_sent = len(data) if send_body else 0

    def send_metrics(self, send_body: bool) -> None:
        """/metrics: the provider's families (catalog, signing, advertisers) and the HTTP ones."""
        families: list[Family] = getattr(self.server.source, "metrics", list)()
        data = render([*families, *self.server.stats.families()]).encode()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", METRICS_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers_with(data if send_body else b"")
        self.body_sent = len(data) if send_body else 0
