"""Contracts with the private internals of our dependencies.

Each private thing the product relies on is used in one adapter, and checked here on the real
library: an upgrade that changes it fails these tests loudly, with the adapter to fix named in
the message, instead of slowing or breaking a boot quietly: urllib3 (fetch/u3compat.py),
http.server (provider/http.py), zeroconf (mdns/_zeroconf.py), rpcudp and kademlia
(dht/_rpcudp.py, dht/node.py).
"""

from __future__ import annotations

import asyncio
import http.client
import io
import re
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import urllib3

from phase_client.fetch.download import body_reader
from phase_client.fetch.u3compat import raw_body

from .fetch_servers import QuietServer

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
    httpd = QuietServer(("127.0.0.1", 0), _Handler)
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


# --- zeroconf: private constants and classes (phase_client/mdns/_zeroconf.py) -----------------


@pytest.mark.parametrize(
    ("package", "adapter"),
    [("zeroconf", "mdns/_zeroconf.py"), ("rpcudp", "dht/_rpcudp.py"), ("kademlia", "dht/")],
)
def test_mdns_and_dht_dependencies_are_inside_the_tested_range(package: str, adapter: str) -> None:
    low, high = pinned_range(package)
    assert low <= parse(version(package)) < high, (
        f"{package} {version(package)} is outside the tested range in pyproject.toml: run this "
        f"file against it, fix phase_client/{adapter} if needed, then move the pin"
    )


def test_zeroconf_private_constants_keep_their_dns_values() -> None:
    """RFC 1035: class IN = 1, PTR = 12, TXT = 16; a query's flags have the QR bit clear."""
    from zeroconf import const

    from phase_client.mdns import _zeroconf

    assert (const._CLASS_IN, const._TYPE_PTR, const._TYPE_TXT, const._FLAGS_QR_QUERY) == (
        1,
        12,
        16,
        0,
    ), "zeroconf.const changed: fix phase_client/mdns/_zeroconf.py"
    assert (_zeroconf.CLASS_IN, _zeroconf.TYPE_PTR, _zeroconf.TYPE_TXT) == (1, 12, 16)


def test_zeroconf_private_classes_are_the_public_ones() -> None:
    """_zeroconf.py imports DNSOutgoing, DNSQuestion and DNSText from zeroconf's private modules
    (mypy sees them there); they must still be what ``zeroconf`` itself hands out."""
    import zeroconf
    from zeroconf._dns import DNSQuestion, DNSText
    from zeroconf._protocol.outgoing import DNSOutgoing

    assert zeroconf.DNSOutgoing is DNSOutgoing
    assert zeroconf.DNSQuestion is DNSQuestion
    assert zeroconf.DNSText is DNSText


def test_zeroconf_one_shot_query_is_a_qu_ptr_question_on_the_wire() -> None:
    """browse's first query: one PTR question for the service type with the unicast-response
    bit (RFC 6762 5.4: the top bit of the class field) - decoded from the packet zeroconf builds."""
    from zeroconf import DNSIncoming

    from phase_client.mdns import _zeroconf
    from phase_client.mdns.records import SERVICE_TYPE

    (packet,) = _zeroconf.ptr_query(SERVICE_TYPE).packets()
    incoming = DNSIncoming(packet)
    assert incoming.is_query(), "DNSOutgoing(_FLAGS_QR_QUERY) no longer builds a query"
    (question,) = incoming.questions
    assert question.name == SERVICE_TYPE
    assert question.type == 12 and question.class_ == 1
    assert question.unicast is True, "DNSQuestion.unicast no longer sets the QU bit"
    # The bit itself, at the end of the packet: QTYPE (2 bytes), QCLASS (2 bytes).
    assert packet[-4:] == b"\x00\x0c\x80\x01"


def test_zeroconf_cache_lookup_and_registry_removal() -> None:
    """register's tie check reads TXT records from the cache by name, type and class and skips
    expired ones; a withdrawal without goodbyes removes a ServiceInfo from the registry."""
    from zeroconf import DNSText, ServiceInfo, Zeroconf, current_time_millis

    from phase_client.mdns import _zeroconf

    name = "phase-stable-arm64._phase-image._tcp.local."
    zc = Zeroconf(interfaces=["127.0.0.1"])
    assert zc.loop is not None

    async def in_loop() -> None:  # the cache and the registry belong to zeroconf's loop thread
        now = current_time_millis()
        fresh = DNSText(name, 16, 1 | 0x8000, 120, b"\x0bmanifest=x1")
        stale = DNSText(name, 16, 1 | 0x8000, 1, b"\x0bmanifest=x2", created=now - 10_000)
        other = DNSText("other." + name, 16, 1, 120, b"\x0bmanifest=x3")
        zc.cache.async_add_records([fresh, stale, other])
        assert stale.is_expired(now)
        assert _zeroconf.cached_txt(zc, name) == [b"\x0bmanifest=x1"], (
            "zeroconf's cache lookup changed: fix phase_client/mdns/_zeroconf.py cached_txt"
        )
        info = ServiceInfo("_phase-image._tcp.local.", name, port=1, server="h.local.")
        zc.registry.async_add(info)
        assert zc.registry.async_get_info_name(name) is info
        _zeroconf.forget_registration(zc, info)
        assert zc.registry.async_get_info_name(name) is None

    try:
        asyncio.run_coroutine_threadsafe(in_loop(), zc.loop).result(10)
    finally:
        zc.close()


# --- rpcudp: RPCProtocol's private hooks (phase_client/dht/_rpcudp.py) -------------------------


def test_rpcudp_private_hooks_exist_with_their_signatures() -> None:
    """The names RpcudpAdapter overrides or calls, as rpcudp 5 defines them."""
    import inspect

    from rpcudp.protocol import RPCProtocol

    expected = {
        "_solve_datagram": ["self", "datagram", "address"],
        "_accept_request": ["self", "msg_id", "data", "address"],
        "_accept_response": ["self", "msg_id", "data", "address"],
        "_timeout": ["self", "msg_id"],
    }
    for name, parameters in expected.items():
        method = getattr(RPCProtocol, name, None)
        assert method is not None, f"rpcudp lost {name}: fix phase_client/dht/_rpcudp.py"
        assert list(inspect.signature(method).parameters) == parameters, (
            f"rpcudp's {name} changed its signature: fix phase_client/dht/_rpcudp.py"
        )
    protocol = RPCProtocol(wait_timeout=3)
    assert protocol._outstanding == {} and protocol._wait_timeout == 3


def test_kademlia_server_hooks_used_by_dht_node_exist() -> None:
    """DhtNode overrides kademlia's Server._create_protocol and _refresh_table (dht/node.py)."""
    from kademlia.network import Server
    from kademlia.protocol import KademliaProtocol
    from rpcudp.protocol import RPCProtocol

    assert callable(getattr(Server, "_create_protocol", None))
    assert callable(getattr(Server, "_refresh_table", None))
    assert issubclass(KademliaProtocol, RPCProtocol)


def test_rpcudp_adapter_round_trip_late_reply_and_timeout() -> None:
    """On real sockets: a request reaches rpc_<name> through receive_datagram/answer_request,
    the reply comes back through accept_reply, a late reply to a cancelled call is dropped
    (pending_reply/drop_pending_reply), and an unanswered call ends (False, None) through
    reply_timed_out after wait_timeout."""
    from kademlia.node import Node
    from kademlia.storage import ForgetfulStorage

    from phase_client.dht._rpcudp import HEADER, REPLY, REQUEST, RpcudpAdapter

    seen: list[tuple[str, bytes]] = []

    class Probe(RpcudpAdapter):
        async def receive_datagram(self, datagram: bytes, address: tuple[str, int]) -> None:
            seen.append(("datagram", datagram[:1]))
            await super().receive_datagram(datagram, address)

        def reply_timed_out(self, msg_id: bytes) -> None:
            seen.append(("timeout", msg_id))
            super().reply_timed_out(msg_id)

        def rpc_echo(self, sender: tuple[str, int], value: Any) -> Any:
            return value

        def rpc_slow(self, sender: tuple[str, int]) -> None:
            return None

    async def main() -> None:
        loop = asyncio.get_running_loop()
        protocols = []
        for _ in range(2):
            protocol = Probe(Node(b"\x01" * 20), ForgetfulStorage(), 20)
            protocol.wait_timeout = 0.3
            await loop.create_datagram_endpoint(lambda p=protocol: p, local_addr=("127.0.0.1", 0))
            protocols.append(protocol)
        a, b = protocols
        b_address = b.transport.get_extra_info("sockname")
        try:
            assert await a.echo(b_address, "hi") == (True, "hi")
            assert ("datagram", REQUEST) in seen and ("datagram", REPLY) in seen
            # A call whose future is already done: its pending entry is there until handled.
            future = a.echo(b_address, "late")
            (msg_id,) = [m for m in a._outstanding if len(m) == HEADER - 1]
            pending = a.pending_reply(msg_id)
            assert pending is not None and pending[0] is future
            future.cancel()
            assert a.drop_pending_reply(msg_id) is pending and a.pending_reply(msg_id) is None
            pending[1].cancel()
            # No answer at all: the timer fires reply_timed_out, which settles the call.
            b.transport.close()
            assert await a.echo(b_address, "nobody") == (False, None)
            assert [kind for kind, _ in seen].count("timeout") == 1
        finally:
            a.transport.close()
            b.transport.close()

    asyncio.run(main())


def test_zeroconf_a_cancelled_start_waiter_cancels_the_start_for_everyone() -> None:
    """Why mdns/browse.py waits for zeroconf's start before its browser exists: a task that
    awaits the start (ServiceInfo.async_request does, before the start) and is cancelled takes
    zeroconf's shared start-up future with it, and every later wait says NotRunningException.
    When a zeroconf release shields that future, this fails and the wait may move back."""
    from zeroconf import NotRunningException
    from zeroconf.asyncio import AsyncZeroconf

    async def main() -> tuple[bool, bool]:
        azc = AsyncZeroconf(interfaces=["127.0.0.1"])
        try:
            waiter = asyncio.ensure_future(azc.zeroconf.async_wait_for_start())
            await asyncio.sleep(0)  # the waiter awaits the start while the sockets are wrapped
            pending = not azc.zeroconf.started
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
            try:
                await azc.zeroconf.async_wait_for_start(timeout=5)
            except NotRunningException:
                return pending, True
            return pending, False
        finally:
            await azc.async_close()

    pending, refused = asyncio.run(main())
    assert pending, "zeroconf had started before the waiter was cancelled: no test"
    assert refused, "zeroconf's start survived a cancelled waiter: browse.py's early wait may go"
