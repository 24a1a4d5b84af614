"""Helpers for the plasmd serve tests: artifact trees and a real server in a subprocess."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from phase_client.provider.catalog import Snapshot
from phase_client.provider.http import ProviderServer, Source

if TYPE_CHECKING:
    from .netns import Node

REPO = Path(__file__).resolve().parent.parent
S = TypeVar("S", bound=socketserver.BaseServer)
TIMESTAMP_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")
START_TIMEOUT = 60.0  # generous: a loaded 2-core machine can be slow to import and scan


def write_random(path: Path, size: int, seed: int = 0) -> bytes:
    """Deterministic pseudo-random bytes (fast for tens of MiB) written to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    block = (bytes(range(256)) * 4096)[seed % 251 :][: 1 << 20]
    data = (block * (size // len(block) + 1))[:size]
    path.write_bytes(data)
    return data


def make_tree(root: Path, combos: dict[str, int]) -> dict[str, bytes]:
    """``{"stable/arm64": size}`` -> DIR/stable/arm64/vmlinuz of that size; returns contents."""
    contents = {}
    for index, (combo, size) in enumerate(combos.items()):
        contents[combo] = write_random(root / combo / "vmlinuz", size, seed=index + 1)
    return contents


class ServerProcess:
    """``python -m phase_client plasmd serve ...`` with its stderr collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        self.attach(
            subprocess.Popen(
                [sys.executable, "-m", "phase_client", "plasmd", "serve", *args],
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
        )

    def attach(self, proc: subprocess.Popen[str]) -> None:
        """Collect the log of ``proc`` (started elsewhere: a namespace, another user)."""
        self.lines: list[str] = []
        self.raw_lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = proc
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = 0

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.raw_lines.append(line.rstrip("\n"))
                # The lines without their timestamp (there unless under systemd).
                self.lines.append(TIMESTAMP_RE.sub("", line.rstrip("\n")))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(
        self, pattern: str, timeout: float = START_TIMEOUT, start: int = 0
    ) -> re.Match[str]:
        """The first log line from index ``start`` matching ``pattern`` (regex search)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[start:]:
                    match = regex.search(line)
                    if match:
                        return match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"no log line matching {pattern!r}; got {self.lines}")
                self._cond.wait(min(remaining, 0.5))

    def started(self) -> ServerProcess:
        match = self.wait_for(r"^INFO Listening on http://\S+:(\d+)/$")
        self.port = int(match.group(1))
        self.wait_for(r"^INFO Found \d+ channel/arch combinations$")
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        return code

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def serve_args(artifacts: Path, state: Path, *extra: str) -> list[str]:
    """Loopback only and no advertising: tests send nothing outside this machine."""
    return [
        "--artifacts",
        str(artifacts),
        "--state-dir",
        str(state),
        "--bind",
        "127.0.0.1",
        "--port",
        "0",
        "--no-mdns",
        "--no-dht",
        *extra,
    ]


@contextlib.contextmanager
def running_server(args: list[str]) -> Iterator[ServerProcess]:
    server = ServerProcess(args)
    try:
        yield server.started()
    finally:
        server.stop()


def poll(check: Callable[[], bool], timeout: float = 30.0, interval: float = 0.1) -> bool:
    """True once ``check()`` holds, False at the deadline (bounded in time and count)."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 1):
        if check():
            return True
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    return check()


def raw_request(port: int, data: bytes, timeout: float = 30.0) -> bytes:
    """Send raw bytes, read until the server closes or ``timeout``; the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def env_without_proxy() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


class NoCatalog:
    """The server's view of the provider with nothing offered (only the HTTP layer is real);
    /health answers ``healthy``."""

    def __init__(self, healthy: bool = False) -> None:
        self.snapshot = Snapshot()
        self.is_healthy = healthy

    def status(self) -> dict[str, Any]:
        return {}

    def healthy(self) -> bool:
        return self.is_healthy


@contextlib.contextmanager
def in_process_server(source: Source, **options: Any) -> Iterator[ProviderServer]:
    """The HTTP layer alone, on a free loopback port, serving ``source`` in a thread."""
    with threaded(ProviderServer(("127.0.0.1", 0), source, **options)) as server:
        yield server


@contextlib.contextmanager
def threaded(server: S) -> Iterator[S]:
    """``server.serve_forever()`` in a thread for the block; shut down and closed after it."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)


class WatchedSockets:
    """Client sockets a thread visits every ``interval`` seconds (``alive``), noting when the
    server ended each one."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.socks: list[socket.socket] = []
        self.opened: list[float] = []
        self.closed: list[float | None] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def add(self, sock: socket.socket) -> None:
        self.opened.append(time.monotonic())
        self.socks.append(sock)
        self.closed.append(None)

    def _watch(self) -> None:
        step = 0
        while not self._stop.is_set() and self.open_count():
            for index, sock in enumerate(self.socks):
                if self.closed[index] is None and not self.alive(index, sock, step):
                    self.closed[index] = time.monotonic()
            step += 1
            self._stop.wait(self.interval)

    def alive(self, index: int, sock: socket.socket, step: int) -> bool:
        raise NotImplementedError

    def open_count(self) -> int:
        return sum(1 for closed in self.closed if closed is None)

    def lifetimes(self) -> list[float]:
        """Seconds from connect to the server ending it, for the ones that were ended."""
        return [c - o for o, c in zip(self.opened, self.closed, strict=True) if c is not None]

    def wait_all_closed(self, timeout: float) -> bool:
        return poll(lambda: self.open_count() == 0, timeout=timeout, interval=0.1)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        for sock in self.socks:
            sock.close()


class Drippers(WatchedSockets):
    """``count`` slowloris connections: each sends a request line and then one header byte
    every ``interval`` seconds, never finishing its headers. A thread does the dripping and
    notes when the server closed each one (EOF or reset)."""

    PREFIX = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: "

    def __init__(self, port: int, count: int, interval: float = 0.5) -> None:
        super().__init__(interval)
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            sock.setblocking(False)
            self.add(sock)
        self._thread.start()

    def alive(self, index: int, sock: socket.socket, step: int) -> bool:
        try:
            sock.recv(1, socket.MSG_PEEK)
            return False  # EOF (or an answer, which ends the request just as well)
        except BlockingIOError:
            pass  # nothing to read: still open
        except OSError:
            return False
        try:
            sock.send(self.PREFIX if step == 0 else b"a")
        except BlockingIOError:
            pass
        except OSError:
            return False
        return True


TCP_ESTABLISHED = 1  # tcp_info.tcpi_state (Linux)


class SlowReaders(WatchedSockets):
    """``count`` slow-read connections: each sends ``GET path`` with a tiny receive buffer,
    reads its status line and then one byte every ``interval`` seconds, holding its download
    (and a server slot) for as long as the server lets it. The end of each one is seen in its
    TCP state at once (a FIN or a reset), not after the bytes still queued before the FIN."""

    def __init__(
        self, port: int, path: str, count: int, interval: float = 0.2, rcvbuf: int = 4096
    ) -> None:
        super().__init__(interval)
        self.heads: list[bytes] = []  # the first bytes each one got (its status line)
        request = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            # Before connect, so the window it offers stays tiny.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.settimeout(30)
            sock.connect(("127.0.0.1", port))
            sock.sendall(request)
            sock.setblocking(False)
            self.add(sock)
            self.heads.append(b"")
        self._thread.start()

    def alive(self, index: int, sock: socket.socket, step: int) -> bool:
        try:
            state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
            if state != TCP_ESTABLISHED:
                return False  # the server sent a FIN or a reset
            want = 16 - len(self.heads[index])
            data = sock.recv(want if want > 0 else 1)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not data:
            return False
        if len(self.heads[index]) < 16:
            self.heads[index] += data
        return True

    def statuses(self) -> list[bytes]:
        """The status code each one got (``b""`` if it never read one)."""
        return [head[9:12] for head in self.heads]


def run_threads(target: Callable[[], None], count: int, timeout: float = 90) -> None:
    """``count`` threads running ``target`` at once, each joined within ``timeout``."""
    threads = [threading.Thread(target=target) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)


def wait_log(log: Path, pattern: str, proc: subprocess.Popen[Any], timeout: float = 90.0) -> None:
    """Poll ``log`` until a line matches, for at most ``timeout`` s; fails if ``proc`` exits."""
    regex = re.compile(pattern, re.MULTILINE)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if regex.search(log.read_text(errors="replace")):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"no line matching {pattern!r} in {log}:\n{log.read_text()}")


def serve_in_node(
    node: Node, artifacts: Path, state: Path, combo: str, *extra: str, dht_port: int = 4001
) -> subprocess.Popen[Any]:
    """``plasmd serve`` in ``node``, its log in a file beside ``state`` (a pipe nobody reads
    would fill up); returns once ``combo`` is in the DHT and, without --no-mdns, on mDNS. The
    first provider has nobody to publish to: "held only by this node" counts as done."""
    log = state.with_suffix(".log")
    with log.open("w") as stderr:
        proc = node.popen(
            node.python(
                "plasmd",
                "serve",
                *("--artifacts", str(artifacts), "--state-dir", str(state), "--port", "8080"),
                *("--dht-port", str(dht_port), "--scan-interval", "60", *extra),
            ),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    wait_log(log, rf"DHT: (published {combo}|{combo} held only)", proc)
    if "--no-mdns" not in extra:
        wait_log(log, rf"mDNS: advertising {combo}", proc)
    return proc
