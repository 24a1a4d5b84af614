"""Real HTTP servers on 127.0.0.1 (port 0) for phase-fetch tests and the fetch benchmark.

``FileServer`` serves in-memory files with proper single-range support, and for each file can
misbehave on purpose (``Behaviour``): tampered bytes, oversized or endless bodies, connections cut
mid-file, Range ignored, slow drip, stall, error status. It counts every byte it actually sent,
per path, so a test can prove that a resume re-served only the missing part. ``rate`` limits the
whole server (all connections together) to that many bytes/s, like a provider's uplink.
"""

from __future__ import annotations

import contextlib
import re
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

RANGE_RE = re.compile(r"^bytes=(\d+)-(\d*)$")
PIECE = 64 * 1024


class QuietServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that says nothing when a client leaves: socketserver prints a
    traceback for a connection reset while a keep-alive handler waits for the next request,
    which the tests cause on purpose (a response closed before its body was read), and which
    could land in another test's output. Any other error is still printed."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


@dataclass
class Behaviour:
    tamper: bool = False  # flip one byte in the middle of every response
    extra: int = 0  # send this many bytes more than the file (Content-Length says so too)
    endless: bool = False  # no Content-Length, bytes forever (bounded by endless_cap)
    endless_cap: int = 256 * 1024 * 1024
    cut_at: int | None = None  # close the connection once this file offset is reached...
    cuts: int = 1  # ...this many times (then behave)
    ignore_range: bool = False  # answer 200 with the whole file to every Range request
    drip: float | None = None  # bytes/s for this file, sent in tiny pieces (slow retrieval)
    stall_after: int | None = None  # stop sending (keep the socket open) after N bytes
    status: int | None = None  # answer this status with a short body instead
    wrong_content_range: bool = False  # 206 with a Content-Range that does not match the ask


@dataclass
class Request:
    path: str
    range: str | None
    status: int
    sent: int = 0


@dataclass
class ServerState:
    files: dict[str, bytes] = field(default_factory=dict)
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    served: dict[str, int] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    cuts_done: dict[str, int] = field(default_factory=dict)
    rate: float | None = None
    next_free: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, format: str, *args: Any) -> None:  # quiet in tests
        pass

    @property
    def state(self) -> ServerState:
        return self.server.state

    def do_GET(self) -> None:
        state = self.state
        path = self.path.split("?", 1)[0]
        data = state.files.get(path)
        behaviour = state.behaviours.get(path, Behaviour())
        if data is None:
            self._short(404, b"not found\n")
            return
        if behaviour.status is not None:
            self._short(behaviour.status, b"misbehaving on purpose\n")
            return
        start, end = 0, len(data) - 1
        status = 200
        header = self.headers.get("Range")
        match = RANGE_RE.match(header or "")
        if match and not behaviour.ignore_range:
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) else len(data) - 1
            end = min(end, len(data) - 1)
            if start > end:
                self._short(416, b"range not satisfiable\n")
                return
            status = 206
        record = Request(path, header, status)
        with state.lock:
            state.requests.append(record)
        body = memoryview(data)[start : end + 1]
        if behaviour.tamper and body:
            spoiled = bytearray(body)
            spoiled[len(spoiled) // 2] ^= 0xFF
            body = memoryview(bytes(spoiled))
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            shown = (start + 1, end + 1) if behaviour.wrong_content_range else (start, end)
            self.send_header("Content-Range", f"bytes {shown[0]}-{shown[1]}/{len(data)}")
        if behaviour.endless:
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(body) + behaviour.extra))
        self.end_headers()
        try:
            self._send_body(path, body, start, behaviour, record)
        except OSError:  # the client went away or we cut it
            self.close_connection = True

    def _short(self, status: int, body: bytes) -> None:
        with self.state.lock:
            self.state.requests.append(Request(self.path, self.headers.get("Range"), status))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _write(self, path: str, chunk: bytes | memoryview, record: Request) -> None:
        state = self.state
        if state.rate:
            with state.lock:
                now = time.monotonic()
                begin = max(now, state.next_free)
                state.next_free = begin + len(chunk) / state.rate
            delay = begin + len(chunk) / state.rate - now
            if delay > 0:
                time.sleep(delay)
        self.wfile.write(chunk)
        with state.lock:
            state.served[path] = state.served.get(path, 0) + len(chunk)
            record.sent += len(chunk)

    def _send_body(
        self, path: str, body: memoryview, start: int, behaviour: Behaviour, record: Request
    ) -> None:
        state = self.state
        cut_at = None
        if behaviour.cut_at is not None:
            with state.lock:
                inside = start < behaviour.cut_at < start + len(body)
                if inside and state.cuts_done.get(path, 0) < behaviour.cuts:
                    state.cuts_done[path] = state.cuts_done.get(path, 0) + 1
                    cut_at = behaviour.cut_at - start
        piece = 64 if behaviour.drip else PIECE
        offset = 0
        while offset < len(body):
            if state.stop.is_set():
                raise BrokenPipeError
            limit = len(body)
            if cut_at is not None:
                limit = min(limit, cut_at)
            if behaviour.stall_after is not None:
                limit = min(limit, behaviour.stall_after)
            if offset >= limit:
                break
            chunk = body[offset : min(offset + piece, limit)]
            self._write(path, chunk, record)
            offset += len(chunk)
            if behaviour.drip:
                time.sleep(len(chunk) / behaviour.drip)
        if cut_at is not None and offset < len(body):
            self._cut()
            return
        if behaviour.stall_after is not None and offset < len(body):
            state.stop.wait(60)  # hold the socket open, send nothing
            self._cut()
            return
        if behaviour.extra:
            self._write(path, b"X" * behaviour.extra, record)
        if behaviour.endless:
            sent = 0
            junk = b"\0" * PIECE
            while sent < behaviour.endless_cap and not state.stop.is_set():
                self._write(path, junk, record)
                sent += len(junk)

    def _cut(self) -> None:
        self.wfile.flush()
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


class FileServer:
    """``with FileServer({"/a": b"..."}) as server: server.url("/a")``"""

    def __init__(self, files: dict[str, bytes] | None = None, rate: float | None = None) -> None:
        self.state = ServerState(files=dict(files or {}), rate=rate)
        self.httpd = QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.state = self.state  # type: ignore[attr-defined]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def add(self, path: str, data: bytes, behaviour: Behaviour | None = None) -> str:
        self.state.files[path] = data
        if behaviour is not None:
            self.state.behaviours[path] = behaviour
        return self.url(path)

    def behave(self, path: str, behaviour: Behaviour) -> None:
        self.state.behaviours[path] = behaviour

    def served(self, path: str) -> int:
        with self.state.lock:
            return self.state.served.get(path, 0)

    def requests_for(self, path: str) -> list[Request]:
        with self.state.lock:
            return [r for r in self.state.requests if r.path == path]

    def start(self) -> FileServer:
        self.thread.start()
        return self

    def close(self) -> None:
        self.state.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> FileServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def dead_url(path: str = "/") -> str:
    """A loopback URL nobody listens on: bind a port, close it, reuse its number."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


FILE_NAMES = {"kernel": "vmlinuz", "initramfs": "initramfs.img", "rootfs": "rootfs.sqfs"}


def signed_manifest(
    key: Any,
    artifacts: dict[str, bytes],
    *,
    sequence: int = 100,
    cmdline: str | None = "console=ttyS0 quiet",
    urls: dict[str, list[str]] | None = None,
    channel: str = "stable",
    arch: str = "x86_64",
) -> dict[str, Any]:
    """A manifest signed by ``key`` for these artifact contents, valid for a day from now."""
    import hashlib

    from phase_client.manifest import build_document, sign_document

    now = int(time.time())
    entries: dict[str, dict[str, Any]] = {}
    for name, data in artifacts.items():
        entry: dict[str, Any] = {
            "hash": "sha256:" + hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "path": FILE_NAMES.get(name, name),
        }
        if urls and name in urls:
            entry["urls"] = urls[name]
        entries[name] = entry
    document = build_document(
        version="2026.11.24",
        sequence=sequence,
        channel=channel,
        arch=arch,
        created_at=now - 60,
        expires_at=now + 86400,
        artifacts=entries,
        cmdline=cmdline,
    )
    return sign_document(document, key)


def publish(
    server: FileServer,
    document: dict[str, Any],
    artifacts: dict[str, bytes],
    prefix: str = "/stable/x86_64/",
) -> str:
    """Serve the manifest and its files the way a provider does; returns the manifest URL."""
    from phase_client.manifest import dump_document

    for name, data in artifacts.items():
        server.add(prefix + document["artifacts"][name]["path"], data)
    return server.add(prefix + "manifest.json", dump_document(document))


class HeaderDripServer:
    """Accepts connections and sends a valid status line one byte every ``interval`` seconds,
    forever: never a per-read timeout, never a complete response."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.stop = threading.Event()
        self.connections = 0
        self.thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/stable/x86_64/manifest.json"

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        line = b"HTTP/1.1 200 OK\r\nX-Drip: " + b"a" * 100_000
        with conn:
            for byte in line:  # bounded: 100 kB at 5 bytes/s outlives any test
                if self.stop.wait(self.interval):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    def __enter__(self) -> HeaderDripServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.sock.close()
        self.thread.join(timeout=5)
