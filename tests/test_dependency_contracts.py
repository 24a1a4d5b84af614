"""Contracts with the private internals of our dependencies.

Each private thing the product relies on is used in one adapter, and checked here on the real
library: an upgrade that changes it fails these tests loudly, with the adapter to fix named in
the message, instead of slowing or breaking a boot quietly. (rpcudp and zeroconf get theirs here
as their adapters settle.)
"""

from __future__ import annotations

import http.client
import io
import re
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import urllib3

from phase_client.fetch.download import body_reader
from phase_client.fetch.u3compat import raw_body

REPO = Path(__file__).resolve().parent.parent
BODY = bytes(range(256)) * 64  # 16 KiB


def pinned_range(package: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(lowest, first excluded) version of ``package`` as pyproject.toml pins it."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    (spec,) = [d for d in project["dependencies"] if re.match(rf"{package}\b", d)]
    low = re.search(r">=\s*([\d.]+)", spec)
    high = re.search(r"<\s*([\d.]+)", spec)
    assert low and high, f"{package} must be pinned to a tested range (>=A,<B): {spec!r}"
    return parse(low.group(1)), parse(high.group(1))


def parse(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        if self.path == "/chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY))
        else:
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def get(url: str) -> Any:
    pool = urllib3.PoolManager(retries=False)
    return pool.request("GET", url, preload_content=False, decode_content=False)


# --- urllib3: response._fp (phase_client/fetch/u3compat.py) -----------------------------------


def test_urllib3_is_inside_the_tested_range() -> None:
    low, high = pinned_range("urllib3")
    installed = parse(version("urllib3"))
    assert low <= installed < high, (
        f"urllib3 {version('urllib3')} is outside the tested range in pyproject.toml: run this "
        "file against it, fix phase_client/fetch/u3compat.py if needed, then move the pin"
    )


def test_urllib3_response_wraps_http_client_with_a_buffered_reader(server: str) -> None:
    """What u3compat.raw_body reads: ``_fp`` is http.client's response, whose ``fp`` has
    ``readinto1``, ``length`` counts the Content-Length body and ``chunked`` is False."""
    response = get(server + "/plain")
    try:
        fp = response._fp
        assert isinstance(fp, http.client.HTTPResponse), "urllib3 no longer wraps http.client"
        assert hasattr(fp.fp, "readinto1"), "http.client's fp lost readinto1"
        assert fp.chunked is False and fp.length == len(BODY)
        body = raw_body(response)
        assert body is not None, "u3compat.raw_body no longer finds the fast path"
        assert body.length == len(BODY)
        buffer = bytearray(len(BODY))
        got = 0
        while got < len(BODY):
            count = body.reader.readinto1(memoryview(buffer)[got:])
            assert count > 0
            got += count
        assert bytes(buffer) == BODY
    finally:
        response.close()


def test_urllib3_chunked_body_takes_the_public_path(server: str) -> None:
    response = get(server + "/chunked")
    try:
        assert response._fp.chunked is True
        assert raw_body(response) is None
        read, _, reusable = body_reader(response)
        assert reusable is True
        out = bytearray()
        view = memoryview(bytearray(4096))
        while count := read(view):
            out += view[:count]
        assert bytes(out) == BODY
    finally:
        response.close()


def test_body_reader_fast_path_reads_exactly_the_body(server: str) -> None:
    response = get(server + "/plain")
    try:
        read, ended, reusable = body_reader(response)
        assert reusable is False  # the fast path bypasses http.client's accounting
        out = bytearray()
        view = memoryview(bytearray(5000))
        while count := read(view):
            out += view[:count]
        assert bytes(out) == BODY and ended()
    finally:
        response.close()


def test_urllib3_public_read1_and_length_remaining_exist(server: str) -> None:
    """The slow path's public API (urllib3 2.x): read1 without decoding, length_remaining."""
    response = get(server + "/plain")
    try:
        assert response.length_remaining == len(BODY)
        assert response.read1(10, decode_content=False) == BODY[:10]
        assert response.length_remaining == len(BODY) - 10
    finally:
        response.close()


# --- http.server: BaseHTTPRequestHandler._headers_buffer (phase_client/provider/http.py) -------


def bare_handler() -> Any:
    """A request handler with no socket: only what send_header/flush_headers touch."""
    handler = BaseHTTPRequestHandler.__new__(BaseHTTPRequestHandler)
    handler.request_version = "HTTP/1.1"
    handler.wfile = io.BytesIO()
    return handler


def test_http_server_send_header_appends_to_headers_buffer() -> None:
    """provider/http.py's end_headers_with appends the body to ``_headers_buffer`` so headers
    and body leave in one write: send_header must keep collecting lines there."""
    handler = bare_handler()
    handler.send_header("X-One", "1")
    handler.send_header("X-Two", "2")
    assert handler._headers_buffer == [b"X-One: 1\r\n", b"X-Two: 2\r\n"], (
        "http.server's _headers_buffer changed: fix provider/http.py's end_headers_with"
    )


def test_http_server_flush_headers_writes_the_buffer_in_one_write_and_clears_it() -> None:
    handler = bare_handler()
    writes: list[bytes] = []
    handler.wfile = type("W", (), {"write": lambda self, data: writes.append(bytes(data))})()
    handler.send_header("X-One", "1")
    handler._headers_buffer.append(b"\r\nbody")
    handler.flush_headers()
    assert writes == [b"X-One: 1\r\n\r\nbody"], "flush_headers no longer joins _headers_buffer"
    assert handler._headers_buffer == []


def test_http_server_end_headers_uses_the_same_buffer() -> None:
    handler = bare_handler()
    handler.send_header("X-One", "1")
    handler.end_headers()
    assert handler.wfile.getvalue() == b"X-One: 1\r\n\r\n"
