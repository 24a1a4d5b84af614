"""Slow readers: a client must take responses at a minimum rate averaged over a window, and at
the connection cap the transfer taken slowest (below a threshold) makes room for a newcomer;
a healthy transfer is never cut for one."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import socket
import threading
import time
from pathlib import Path

import pytest

from phase_client.provider.http import ProviderServer, SendRate
from tests.provider_helpers import (
    NoCatalog,
    SlowReaders,
    in_process_server,
    make_tree,
    poll,
    run_threads,
    running_server,
    serve_args,
    write_random,
)
from tests.test_provider_http import OneFileCatalog

SLACK = 5.0  # a cut is noticed by threads sharing 2 busy cores
BLOB = 8 << 20


# -- the rate check, with the clock passed in ----------------------------------------------------


def feed(
    rate: SendRate, start: float, seconds: float, per_second: float, step: float = 0.5
) -> float:
    """A client taking ``per_second`` bytes/s for ``seconds``; the rate it was cut at, or -1."""
    taken = 0.0
    now = start
    while now < start + seconds:
        now += step
        taken += per_second * step
        slow = rate.too_slow(now, int(taken))
        if slow is not None:
            return slow
    return -1.0


def test_a_client_at_the_minimum_rate_is_never_cut() -> None:
    rate = SendRate(min_rate=4096, grace=30)
    rate.restart(0.0, 0)
    assert feed(rate, 0.0, 600, 4096) == -1


def test_a_client_below_the_minimum_for_a_whole_window_is_cut_not_before() -> None:
    rate = SendRate(min_rate=4096, grace=30)
    rate.restart(100.0, 0)
    assert rate.too_slow(129.9, 10) is None  # not a whole window yet
    slow = rate.too_slow(130.0, 10)
    assert slow is not None and slow < 1


def test_a_bursty_client_above_the_average_is_kept() -> None:
    rate = SendRate(min_rate=1000, grace=10)
    rate.restart(0.0, 0)
    taken = 0
    for second in range(1, 200):
        if second % 2 == 0:
            taken += 2 * 1500  # nothing for a second, then a burst: 1500 B/s on average
        assert rate.too_slow(float(second), taken) is None, second


def test_a_client_that_slows_down_is_cut_one_window_later() -> None:
    rate = SendRate(min_rate=1000, grace=10)
    rate.restart(0.0, 0)
    assert feed(rate, 0.0, 60, 50_000) == -1  # fast for a minute: 3 MB
    cut_at = None
    taken = 3_000_000
    for tenth in range(1, 300):
        now = 60 + tenth / 10
        taken += 10  # 100 B/s from now on
        if rate.too_slow(now, taken) is not None:
            cut_at = now
            break
    # The fast past buys nothing: cut once a whole window (plus one mark step) is slow.
    assert cut_at is not None and 70 <= cut_at <= 70 + rate.step + 0.1


def test_the_window_restarts_when_the_client_has_everything() -> None:
    rate = SendRate(min_rate=1000, grace=10)
    rate.restart(0.0, 0)
    rate.sample(5.0, 100)
    rate.restart(50.0, 100)  # between two answers: nothing pending, a new span
    assert rate.window(52.0, 2100) == (2.0, 1000.0)
    assert rate.too_slow(59.0, 100) is None


# -- eviction: the slowest below the threshold, never a healthy one ------------------------------


class FakeSender:
    def __init__(self, peer: str, elapsed: float, rate: float) -> None:
        self.peer, self.elapsed, self.rate = peer, elapsed, rate

    def current_rate(self, now: float) -> tuple[float, float]:
        return self.elapsed, self.rate


@pytest.mark.parametrize(
    ("senders", "expected"),
    [
        ([("a", 10, 500.0), ("b", 10, 100.0), ("c", 10, 90_000.0)], "b"),
        ([("a", 10, 20_000.0), ("c", 10, 90_000.0)], None),  # all healthy: nobody is cut
        ([("a", 1.0, 0.0), ("b", 10, 3_000.0)], "b"),  # "a" is too young to judge
        ([("a", 1.0, 0.0)], None),
        ([], None),
    ],
)
def test_eviction_takes_the_slowest_below_the_threshold(
    senders: list[tuple[str, float, float]], expected: str | None
) -> None:
    server = ProviderServer(
        ("127.0.0.1", 0), NoCatalog(), idle_timeout=30, evict_below_rate=16384, send_grace=30
    )
    socks = [socket.socket() for _ in senders]
    try:
        for sock, (peer, elapsed, rate) in zip(socks, senders, strict=True):
            server._sending[sock] = FakeSender(peer, elapsed, rate)
        found = server._slowest_sender(time.monotonic())
        assert (found[1] if found else None) == expected
    finally:
        for sock in socks:
            sock.close()
        server.server_close()


# -- real sockets on loopback --------------------------------------------------------------------


def fetch(port: int, path: str = "/blob") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException):
        return -1, b""  # cut before an answer
    finally:
        conn.close()


def real_clients(port: int, count: int, digest: str) -> list[tuple[int, bool, int]]:
    """``count`` clients at once, each GET /blob, retrying a 503 (as Retry-After asks) at most
    20 times: (final status, body correct, attempts) for each."""
    results: list[tuple[int, bool, int]] = []
    lock = threading.Lock()

    def client() -> None:
        for attempt in range(1, 21):  # noqa: B007 - reported below
            status, body = fetch(port)
            if status == 200:
                break
            time.sleep(0.25)
        with lock:
            results.append((status, hashlib.sha256(body).hexdigest() == digest, attempt))

    run_threads(client, count)
    return results


def test_slow_readers_over_the_cap_do_not_lock_out_real_clients(tmp_path: Path) -> None:
    cap, slow_count, clients, grace = 8, 12, 10, 3.0
    digest = hashlib.sha256(write_random(tmp_path / "blob", BLOB)).hexdigest()
    options = {
        "idle_timeout": 60,  # the idle timeout alone would let them hold for a minute
        "max_connections": cap,
        "min_send_rate": 32768,
        "send_grace": grace,
        "evict_below_rate": 131072,
    }
    with in_process_server(OneFileCatalog(tmp_path / "blob", b"{}"), **options) as srv:
        readers = SlowReaders(srv.server_port, "/blob", slow_count)
        try:
            assert poll(lambda: srv.connections == cap, timeout=30)
            time.sleep(srv.evict_after + 0.2)  # measured long enough to be judged
            assert readers.open_count() >= cap - 1  # they hold every slot
            results = real_clients(srv.server_port, clients, digest)
            assert readers.wait_all_closed(timeout=grace + SLACK)
        finally:
            readers.close()
        assert poll(lambda: srv.connections == 0)
    assert [(status, ok) for status, ok, _ in results] == [(200, True)] * clients
    assert sum(attempts for *_, attempts in results) <= 2 * clients, results
    assert readers.statuses().count(b"200") >= cap - 1  # they did hold downloads
    # Evicted for a newcomer or cut by the rate check: within the window, whatever they read.
    assert max(readers.lifetimes()) < grace + grace / 4 + SLACK, readers.lifetimes()


class PacedReader(threading.Thread):
    """A healthy client: GET /blob with a small receive buffer, 32 KiB every 10 ms (a few
    MB/s), well above the eviction threshold; keeps what it read."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
        self.sock.settimeout(30)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(b"GET /blob HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.data = bytearray()

    def run(self) -> None:
        with self.sock:
            while True:
                try:
                    chunk = self.sock.recv(32768)
                except OSError:
                    return
                if not chunk:
                    return
                self.data += chunk
                time.sleep(0.01)

    def body(self) -> bytes:
        return bytes(self.data.partition(b"\r\n\r\n")[2])


def test_healthy_transfers_are_never_evicted(tmp_path: Path) -> None:
    # The server's send buffer takes ~4 MB at once on loopback: 16 MiB keeps each paced
    # transfer going (blocked on its client) for a few seconds.
    blob = write_random(tmp_path / "blob", 16 << 20)
    options = {"idle_timeout": 60, "max_connections": 2, "send_grace": 3.0}
    options |= {"min_send_rate": 32768, "evict_below_rate": 131072}
    with in_process_server(OneFileCatalog(tmp_path / "blob", b"{}"), **options) as srv:
        readers = [PacedReader(srv.server_port) for _ in range(2)]
        for reader in readers:
            reader.start()
        assert poll(lambda: srv.stats.as_dict()["active_transfers"] == 2)
        time.sleep(srv.evict_after + 0.2)
        assert srv.stats.as_dict()["active_transfers"] == 2  # still going: judged, and healthy
        # Both slots are healthy transfers: a newcomer is refused, it cuts neither.
        for _ in range(3):
            status, _ = fetch(srv.server_port, "/m.json")
            assert status == 503
            time.sleep(0.2)
        for reader in readers:
            reader.join(timeout=60)
    assert [reader.body() == blob for reader in readers] == [True, True]


def test_a_pipelining_slow_reader_is_cut_too(tmp_path: Path) -> None:
    """Small answers count as well: pipelined requests whose answers are never read."""
    write_random(tmp_path / "blob", 1000)
    options = {"idle_timeout": 60, "send_grace": 1.5, "min_send_rate": 32768}
    source = OneFileCatalog(tmp_path / "blob", b"{}")
    with (
        in_process_server(source, **options) as srv,
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock,
    ):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(30)
        sock.connect(("127.0.0.1", srv.server_port))
        started = time.monotonic()
        # ~9 MB of answers: more than the server's send buffer, so it blocks writing them.
        requests = b"GET /m.json HTTP/1.1\r\nHost: x\r\n\r\n" * 30_000

        def send() -> None:
            with contextlib.suppress(OSError):  # it stops once the server gives up
                sock.sendall(requests)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        assert poll(lambda: srv.stats.as_dict()["requests"] > 100)
        assert poll(lambda: srv.connections == 0, timeout=1.5 + SLACK)
        assert time.monotonic() - started >= 1.5
        sock.close()
        sender.join(timeout=30)


def test_plasmd_serve_cuts_a_slow_reader_and_logs_it(tmp_path: Path) -> None:
    contents = make_tree(tmp_path / "art", {"stable/x86_64": 4 << 20})
    args = serve_args(
        tmp_path / "art",
        tmp_path / "state",
        "--idle-timeout",
        "60",
        "--send-grace",
        "1",
        "--min-send-rate",
        "65536",
        "--evict-below-rate",
        "65536",
    )
    with running_server(args) as server:
        readers = SlowReaders(server.port, "/stable/x86_64/vmlinuz", 1)
        try:
            status, body = fetch(server.port, "/stable/x86_64/vmlinuz")
            assert status == 200 and body == contents["stable/x86_64"]
            assert readers.wait_all_closed(timeout=1 + SLACK)
        finally:
            readers.close()
        server.wait_for(r"^INFO Cut a slow transfer to 127\.0\.0\.1: \d+ B/s over 1s", 10)
    assert readers.statuses() == [b"200"]
