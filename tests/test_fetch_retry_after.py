"""phase-fetch honours ``Retry-After`` on a 503 (a provider re-hashing a replaced file) within
its timeout, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from phase_client.cli.fetch import main as fetch_main
from phase_client.fetch.download import retry_after
from phase_client.manifest import dump_document

from .conftest import key_from_byte
from .fetch_servers import signed_manifest
from .provider_helpers import threaded

KEY = key_from_byte(31)
KERNEL = hashlib.sha256(b"kernel").digest() * 4096  # 128 KiB


class Busy(ThreadingHTTPServer):
    """Serves one manifest and its kernel; the kernel's first ``busy`` answers are
    ``503 Retry-After: <retry_after>``. Notes when each kernel request arrived."""

    daemon_threads = True

    def __init__(self, busy: int, retry_after: str) -> None:
        super().__init__(("127.0.0.1", 0), BusyHandler)
        self.busy = busy
        self.retry_after = retry_after
        self.manifest = dump_document(signed_manifest(KEY, {"kernel": KERNEL}))
        self.kernel_requests: list[float] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/stable/x86_64/manifest.json"


class BusyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Busy

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.endswith("manifest.json"):
            self.answer(200, self.server.manifest)
            return
        with self.server.lock:
            self.server.kernel_requests.append(time.monotonic())
            busy = len(self.server.kernel_requests) <= self.server.busy
        if busy:
            self.answer(503, b"changing\n", {"Retry-After": self.server.retry_after})
        else:
            self.answer(200, KERNEL)

    def answer(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serving(busy: int, after: str) -> Iterator[Busy]:
    with threaded(Busy(busy, after)) as server:
        yield server


@pytest.fixture
def busy_once() -> Iterator[Busy]:
    yield from serving(1, "1")


@pytest.fixture
def busy_for_an_hour() -> Iterator[Busy]:
    yield from serving(100, "3600")


def fetch(capsys: pytest.CaptureFixture[str], url: str, out: Path) -> tuple[int, Any, str]:
    code = fetch_main(
        ["--json", "--key", KEY.public.keyid, "--manifest", url, "--output", str(out)]
    )
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.err


def test_503_with_retry_after_is_retried_after_that_delay(
    busy_once: Busy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, summary, err = fetch(capsys, busy_once.url, tmp_path / "out")
    assert code == 0, err
    assert (tmp_path / "out/kernel").read_bytes() == KERNEL
    first, second = busy_once.kernel_requests
    assert second - first >= 0.95  # it waited what the server asked (backoff alone is 0.25 s)
    assert summary["artifacts"]["kernel"]["retries"] == 1


def test_retry_after_beyond_the_timeout_gives_the_source_up_at_once(
    busy_for_an_hour: Busy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, summary, err = fetch(capsys, busy_for_an_hour.url, tmp_path / "out")
    assert code != 0 and summary["ok"] is False
    assert len(busy_for_an_hour.kernel_requests) == 1  # not asked again, not waited for
    assert "retry after 3600s, beyond the 20s timeout" in err


def test_retry_after_values() -> None:
    assert retry_after(None) is None
    assert retry_after("3") == 3.0
    assert retry_after(" 120 ") == 120.0
    assert retry_after("-1") is None
    assert retry_after("soon") is None
    assert retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    assert retry_after("9" * 40) == 1e9
