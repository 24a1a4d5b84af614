"""plasmd serve over real HTTP on loopback: ranges, validators, refusals, concurrency, stalls."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from phase_client.keys import parse_public_key
from phase_client.manifest import parse_manifest
from phase_client.provider.catalog import ServedFile, Snapshot, file_identity
from phase_client.provider.http import Stats
from phase_client.trust import TrustPolicy, verify
from tests.provider_helpers import (
    NoCatalog,
    ServerProcess,
    in_process_server,
    make_tree,
    poll,
    raw_request,
    serve_args,
    write_random,
)

KERNEL_SIZE = 6 * 1024 * 1024 + 123  # not a multiple of any buffer size
IDLE_TIMEOUT = 5.0  # long enough to observe stalls on a loaded machine


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("provider-http")
    root = base / "art"
    contents = make_tree(root, {"stable/x86_64": KERNEL_SIZE, "testing/arm64": 1000})
    contents["initramfs"] = write_random(root / "stable/x86_64/initramfs.img", 70_000, seed=3)
    (root / "stable/x86_64/dtb").write_bytes(b"")  # an empty artifact
    (root / "stable/x86_64/cmdline").write_text("console=ttyS0\n")
    return {"base": base, "root": root, "contents": contents}


@pytest.fixture(scope="module")
def server(tree: dict[str, Any]) -> Iterator[ServerProcess]:
    args = serve_args(
        tree["root"],
        tree["base"] / "state",
        "--idle-timeout",
        str(IDLE_TIMEOUT),
        "--default-channel",
        "stable",
        "--default-arch",
        "x86_64",
    )
    proc = ServerProcess(args)
    try:
        yield proc.started()
    finally:
        assert proc.stop() == 0


def request(
    server: ServerProcess, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


KERNEL = "/stable/x86_64/vmlinuz"


def kernel(tree: dict[str, Any]) -> bytes:
    return tree["contents"]["stable/x86_64"]


def test_whole_file_with_validators(server: ServerProcess, tree: dict[str, Any]) -> None:
    response, body = request(server, KERNEL)
    assert response.status == 200
    assert body == kernel(tree)
    digest = hashlib.sha256(body).hexdigest()
    assert response.getheader("ETag") == f'"{digest}"'
    assert response.getheader("Accept-Ranges") == "bytes"
    assert response.getheader("Content-Length") == str(KERNEL_SIZE)
    assert response.getheader("Content-Type") == "application/octet-stream"
    assert response.getheader("Last-Modified", "").endswith(" GMT")


def test_head_has_headers_and_no_body(server: ServerProcess) -> None:
    response, body = request(server, KERNEL, method="HEAD")
    assert response.status == 200
    assert response.getheader("Content-Length") == str(KERNEL_SIZE)
    assert body == b""


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=100-", 100, KERNEL_SIZE - 1),
        ("bytes=-100", KERNEL_SIZE - 100, KERNEL_SIZE - 1),
        ("bytes=5-5", 5, 5),
        (f"bytes={KERNEL_SIZE - 10}-{KERNEL_SIZE * 2}", KERNEL_SIZE - 10, KERNEL_SIZE - 1),
        (f"bytes=-{KERNEL_SIZE * 3}", 0, KERNEL_SIZE - 1),
    ],
)
def test_range_forms(
    server: ServerProcess, tree: dict[str, Any], header: str, first: int, last: int
) -> None:
    response, body = request(server, KERNEL, headers={"Range": header})
    assert response.status == 206
    assert response.getheader("Content-Range") == f"bytes {first}-{last}/{KERNEL_SIZE}"
    assert body == kernel(tree)[first : last + 1]


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "bytes=9-3", "pages=1-2", "bytes=x"])
def test_multi_or_invalid_range_gets_the_whole_file(
    server: ServerProcess, tree: dict[str, Any], header: str
) -> None:
    response, body = request(server, KERNEL, headers={"Range": header})
    assert response.status == 200
    assert body == kernel(tree)


@pytest.mark.parametrize(
    ("path", "header", "size"),
    [
        (KERNEL, f"bytes={KERNEL_SIZE}-", KERNEL_SIZE),
        (KERNEL, "bytes=99999999-99999999", KERNEL_SIZE),
        ("/stable/x86_64/dtb", "bytes=0-", 0),
        ("/stable/x86_64/dtb", "bytes=-1", 0),
    ],
)
def test_unsatisfiable_range_is_416(
    server: ServerProcess, path: str, header: str, size: int
) -> None:
    response, _ = request(server, path, headers={"Range": header})
    assert response.status == 416
    assert response.getheader("Content-Range") == f"bytes */{size}"


def test_empty_artifact(server: ServerProcess) -> None:
    response, body = request(server, "/stable/x86_64/dtb")
    assert response.status == 200
    assert body == b""
    assert response.getheader("Content-Length") == "0"


def test_conditional_requests(server: ServerProcess, tree: dict[str, Any]) -> None:
    first, _ = request(server, KERNEL, method="HEAD")
    etag = first.getheader("ETag")
    modified = first.getheader("Last-Modified")
    not_modified, body = request(server, KERNEL, headers={"If-None-Match": etag})
    assert not_modified.status == 304
    assert body == b""
    assert not_modified.getheader("ETag") == etag
    changed, body = request(server, KERNEL, headers={"If-None-Match": '"other"'})
    assert changed.status == 200 and len(body) == KERNEL_SIZE
    since, _ = request(server, KERNEL, method="HEAD", headers={"If-Modified-Since": modified})
    assert since.status == 304
    # If-Range: the range applies only while the validator matches.
    ranged, body = request(server, KERNEL, headers={"Range": "bytes=0-9", "If-Range": etag})
    assert ranged.status == 206 and body == kernel(tree)[:10]
    ranged, body = request(server, KERNEL, headers={"Range": "bytes=0-9", "If-Range": modified})
    assert ranged.status == 206 and body == kernel(tree)[:10]
    stale, body = request(server, KERNEL, headers={"Range": "bytes=0-9", "If-Range": '"old"'})
    assert stale.status == 200 and len(body) == KERNEL_SIZE


def test_manifests_are_signed_and_name_the_served_files(
    server: ServerProcess, tree: dict[str, Any]
) -> None:
    _, status_body = request(server, "/status")
    status = json.loads(status_body)
    key = parse_public_key(status["keyid"].encode())
    response, body = request(server, "/stable/x86_64/manifest.json")
    assert response.status == 200
    assert response.getheader("Content-Type") == "application/json"
    manifest = parse_manifest(body)
    policy = TrustPolicy(keys=(key,), channel="stable", arch="x86_64")
    verify(manifest, policy, now=manifest.created_at)
    assert manifest.cmdline == "console=ttyS0"
    assert sorted(manifest.artifacts) == ["dtb", "initramfs", "kernel"]
    for artifact in manifest.artifacts.values():
        _, data = request(server, f"/stable/x86_64/{artifact.path}")
        assert hashlib.sha256(data).hexdigest() == artifact.sha256
        assert len(data) == artifact.size
    default, default_body = request(server, "/manifest.json")
    assert default.status == 200 and default_body == body
    ranged, part = request(server, "/manifest.json", headers={"Range": "bytes=0-9"})
    assert ranged.status == 206 and part == body[:10]


def test_health_and_status(server: ServerProcess) -> None:
    response, body = request(server, "/health")
    assert response.status == 200
    assert json.loads(body) == {"status": "ok"}
    _, body = request(server, "/status")
    status = json.loads(body)
    assert status["peer_id"].startswith("12D3KooW")
    assert status["default"] == "stable/x86_64"
    combos = {f"{o['channel']}/{o['arch']}": o for o in status["offered"]}
    assert sorted(combos) == ["stable/x86_64", "testing/arm64"]
    assert combos["stable/x86_64"]["manifest_path"] == "/stable/x86_64/manifest.json"
    assert combos["stable/x86_64"]["sequence"] > 0
    for counter in ("requests", "bytes_served", "active_transfers", "uptime_s"):
        assert status[counter] >= 0
    assert status["requests"] >= 2
    assert status["advertisers"] == []


TRAVERSALS = [
    "/stable/x86_64/../x86_64/vmlinuz",
    "/stable/x86_64/./vmlinuz",
    "/stable/x86_64/%2e%2e/x86_64/vmlinuz",
    "/stable/x86_64/..%2fx86_64%2fvmlinuz",
    "/stable/x86_64/%252e%252e/vmlinuz",
    "/../../../../etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/etc/passwd",
    "//etc/passwd",
    "/stable/x86_64//vmlinuz",
    "/stable/x86_64/vmlinuz/",
    "/stable/x86_64/vmlinuz%00",
    "/stable/x86_64/",
    "/stable/",
    "/",
    "/stable/x86_64/cmdline",  # in the directory, but not a catalog entry
    "/stable/x86_64/initramfs.img.bak",
    "/STABLE/X86_64/VMLINUZ",
    "/stable/x86_64/vmlinuz;.txt",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_paths_outside_the_catalog_are_404(server: ServerProcess, path: str) -> None:
    answer = raw_request(server.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 404 "), answer[:200]


def test_absolute_form_and_query_strings(server: ServerProcess) -> None:
    target = f"http://127.0.0.1:{server.port}{KERNEL}"
    answer = raw_request(server.port, f"HEAD {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 200 ")
    answer = raw_request(server.port, f"HEAD {KERNEL}?x=1 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_405(server: ServerProcess, method: str) -> None:
    data = f"{method} {KERNEL} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
    answer = raw_request(server.port, data.encode())
    assert answer.startswith(b"HTTP/1.1 405 ")
    assert b"\r\nAllow: GET, HEAD\r\n" in answer


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"\x00\x01\x02\xff garbage\r\n\r\n", b"400"),
        (b"GET\r\n\r\n", b"400"),
        (b"GET / HTTP/9.9\r\n\r\n", b"505"),
        (b"GET / HTTP/1.1 extra\r\n\r\n", b"400"),
        (b"GET nopath HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
        (b"GET /stable/x86_64/%ff HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
        (b"BREW /pot HTTP/1.1\r\n\r\n", b"501"),
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", b"414"),
        (b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n", b"431"),
    ],
)
def test_garbage_gets_an_error_and_the_server_keeps_running(
    server: ServerProcess, data: bytes, status: bytes
) -> None:
    answer = raw_request(server.port, data)
    assert answer.split(b" ", 2)[1] == status, answer[:200]
    response, _ = request(server, "/health")
    assert response.status == 200


def test_keep_alive_serves_several_requests_on_one_connection(server: ServerProcess) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        for _ in range(5):
            conn.request("GET", "/testing/arm64/vmlinuz")
            response = conn.getresponse()
            assert response.status == 200 and len(response.read()) == 1000
        assert conn.sock is not None  # the same socket throughout
    finally:
        conn.close()


def test_64_concurrent_downloads_with_checksums(
    server: ServerProcess, tree: dict[str, Any]
) -> None:
    expected = hashlib.sha256(kernel(tree)).hexdigest()
    results: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def download(index: int) -> None:
        try:
            headers = {"Range": f"bytes={index * 1000}-"} if index % 4 == 0 else {}
            response, body = request(server, KERNEL, headers=headers)
            if headers:
                assert response.status == 206
                body = kernel(tree)[: index * 1000] + body
            else:
                assert response.status == 200
            with lock:
                results.append(hashlib.sha256(body).hexdigest())
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=download, args=(i,)) for i in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert not errors, errors[:3]
    assert results == [expected] * 64


def stalled_download(server: ServerProcess) -> socket.socket:
    """A client that asks for the kernel and never reads: the server's send blocks."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(60)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(f"GET {KERNEL} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


def status_of(server: ServerProcess) -> dict[str, Any]:
    _, body = request(server, "/status")
    return dict(json.loads(body))


def test_stalled_client_blocks_nobody_and_is_cut(
    server: ServerProcess, tree: dict[str, Any]
) -> None:
    stalled = [stalled_download(server) for _ in range(3)]
    try:
        assert poll(lambda: status_of(server)["active_transfers"] >= 3)
        # Others are served in full while the stalled transfers hang.
        response, body = request(server, KERNEL)
        assert response.status == 200 and body == kernel(tree)
        # The idle timeout cuts the stalled transfers.
        assert poll(lambda: status_of(server)["active_transfers"] == 0, timeout=60)
    finally:
        for sock in stalled:
            sock.close()


def test_idle_connection_is_closed(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        # Silent for longer than the idle timeout: the server closes (recv sees EOF).
        assert sock.recv(1) == b""


def test_bytes_and_requests_are_counted(server: ServerProcess) -> None:
    before = status_of(server)
    request(server, "/testing/arm64/vmlinuz")
    after = status_of(server)
    assert after["bytes_served"] >= before["bytes_served"] + 1000
    assert after["requests"] >= before["requests"] + 2


class SlowStats(Stats):
    """Counters that take their time: an update made after a response's last byte would
    still be missing when the client, having read the whole body, looks at them."""

    def add_bytes(self, count: int) -> None:
        time.sleep(0.3)
        super().add_bytes(count)

    def end_transfer(self, count: int) -> None:
        time.sleep(0.3)
        super().end_transfer(count)


class OneFileCatalog(NoCatalog):
    """Serves ``/blob`` (a file) and ``/m.json`` (in-memory bytes); only HTTP is real."""

    def __init__(self, path: Path, manifest: bytes) -> None:
        super().__init__(healthy=True)
        stat = os.stat(path)
        served = ServedFile(
            path=str(path),
            size=stat.st_size,
            mtime=stat.st_mtime,
            identity=file_identity(stat),
            sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        )
        # Only the fields the HTTP layer reads from a catalog entry.
        entry = cast(
            Any, SimpleNamespace(manifest_bytes=manifest, manifest=SimpleNamespace(created_at=0.0))
        )
        self.snapshot = Snapshot(routes={"/blob": (entry, served), "/m.json": (entry, None)})


@pytest.mark.parametrize(
    ("path", "method", "headers", "size"),
    [
        ("/blob", "GET", {}, 100_000),
        ("/blob", "GET", {"Range": "bytes=5-5"}, 1),
        ("/blob", "GET", {"Range": "bytes=10-"}, 100_000 - 10),
        ("/blob", "HEAD", {}, 0),
        ("/m.json", "GET", {}, 9),
        ("/m.json", "GET", {"Range": "bytes=0-3"}, 4),
    ],
)
def test_counters_are_settled_before_the_client_sees_the_end(
    tmp_path: Path, path: str, method: str, headers: dict[str, str], size: int
) -> None:
    """The race behind a flaky /status check: counters updated after the last byte."""
    write_random(tmp_path / "blob", 100_000)
    source = OneFileCatalog(tmp_path / "blob", b'{"m": 1}\n')
    with in_process_server(source, idle_timeout=30) as server:
        server.stats = SlowStats()
        conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=60)
        try:
            conn.request(method, path, headers=headers)
            response = conn.getresponse()
            body = response.read()
            after = server.stats.as_dict()  # the moment the client has the whole response
        finally:
            conn.close()
    assert response.status in (200, 206) and len(body) == (size if method == "GET" else 0)
    assert after["bytes_served"] == size
    assert after["active_transfers"] == 0
    assert after["requests"] == 1


def test_unknown_path_returns_json_404(server: ServerProcess, tmp_path: Path) -> None:
    response, body = request(server, "/nothing/here/manifest.json")
    assert response.status == 404
    assert json.loads(body) == {"error": "not found"}


class BlockingHealth(NoCatalog):
    """/health answers only once ``release`` is set: its connections are busy answering."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.entered = 0

    def healthy(self) -> bool:
        with self.lock:
            self.entered += 1
        self.release.wait(60)
        return False


def test_connections_over_the_cap_get_503_and_slots_come_back() -> None:
    source = BlockingHealth()
    with in_process_server(source, idle_timeout=30, max_connections=2) as server:
        port = server.server_port
        busy = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(2)]
        try:
            for sock in busy:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert poll(lambda: source.entered == 2)
            # Both slots are answering, none is waiting for a request: nothing to evict.
            answer = raw_request(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 503 ")
            assert b"Retry-After: 5" in answer
        finally:
            source.release.set()
            for sock in busy:
                sock.close()

        # Closed connections give their slots back: requests are answered again (503 here
        # because nothing is offered, but by the handler, with a JSON body).
        def answered() -> bool:
            reply = raw_request(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            return reply.endswith(b'"unavailable"\n}\n')

        assert poll(answered)
        assert poll(lambda: server.connections == 0)
