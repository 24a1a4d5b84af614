"""Slowloris and idle floods: a request's line and headers have a total deadline, and at the
connection cap the connection waiting longest for a request makes room for a newcomer."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.provider_helpers import (
    Drippers,
    NoCatalog,
    in_process_server,
    make_tree,
    poll,
    raw_request,
    run_threads,
    running_server,
    serve_args,
)

HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
# A dripper's end is noticed on its next drip (0.5 s) by a thread sharing 2 busy cores.
SLACK = 5.0


def real_clients(port: int, count: int) -> list[int | str]:
    """``count`` clients at once, each a plain urllib GET /health: the status or the error."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    results: list[int | str] = []
    lock = threading.Lock()

    def client() -> None:
        try:
            with opener.open(f"http://127.0.0.1:{port}/health", timeout=60) as response:
                response.read()
                outcome: int | str = response.status
        except Exception as exc:  # recorded and asserted on: any failure is a finding
            outcome = repr(exc)
        with lock:
            results.append(outcome)

    run_threads(client, count)
    return results


def still_open(sock: socket.socket) -> bool:
    sock.settimeout(0.5)
    try:
        return sock.recv(1) != b""
    except TimeoutError:
        return True  # nothing came and nothing closed
    except OSError:
        return False


def test_at_the_cap_the_longest_waiting_connection_makes_room() -> None:
    with in_process_server(
        NoCatalog(healthy=True), idle_timeout=60, header_timeout=60, max_connections=2
    ) as srv:
        port = srv.server_port
        oldest = socket.create_connection(("127.0.0.1", port), timeout=30)
        assert poll(lambda: srv.connections == 1)
        newer = socket.create_connection(("127.0.0.1", port), timeout=30)
        try:
            assert poll(lambda: srv.connections == 2)
            # Both slots hold silent connections; a real request still gets its answer.
            answer = raw_request(port, HEALTH)
            assert answer.startswith(b"HTTP/1.1 200 "), answer[:100]
            oldest.settimeout(30)
            assert oldest.recv(1) == b""  # closed to make room, without a response
            assert still_open(newer)
            assert srv.connections <= 2
        finally:
            oldest.close()
            newer.close()
        assert poll(lambda: srv.connections == 0)


def test_keep_alive_request_has_a_header_deadline_from_its_first_byte() -> None:
    with in_process_server(NoCatalog(healthy=True), idle_timeout=60, header_timeout=1.5) as srv:
        with socket.create_connection(("127.0.0.1", srv.server_port), timeout=30) as sock:
            sock.sendall(HEALTH)
            assert b"200 OK" in sock.recv(65536)
            time.sleep(2.0)  # idle between requests: the idle timeout (60 s) applies, not 1.5
            sock.sendall(b"GET /health HTTP/1.1\r\n")
            started = time.monotonic()
            ended = None
            for _ in range(60):  # a byte every 0.25 s would keep a per-read timeout happy
                try:
                    sock.sendall(b"X")
                    if sock.recv(1, socket.MSG_DONTWAIT) == b"":
                        ended = time.monotonic()
                        break
                except BlockingIOError:
                    pass
                except OSError:
                    ended = time.monotonic()
                    break
                time.sleep(0.25)
        assert ended is not None, "a dripping keep-alive request was never cut"
        assert ended - started < 1.5 + SLACK


def test_flood_of_drippers_above_the_cap_does_not_lock_out_real_clients() -> None:
    cap, drippers_count, clients, header_timeout = 250, 300, 20, 3.0
    options = {"idle_timeout": 60, "header_timeout": header_timeout, "max_connections": cap}
    with in_process_server(NoCatalog(healthy=True), **options) as srv:
        drippers = Drippers(srv.server_port, drippers_count)
        try:
            # Every slot is taken by a dripper (the 50 oldest were already pushed out).
            assert poll(lambda: srv.connections == cap, timeout=30)
            holding = drippers.open_count()
            results = real_clients(srv.server_port, clients)
            assert results == [200] * clients
            assert drippers.wait_all_closed(timeout=header_timeout + 30)
        finally:
            drippers.close()
        lifetimes = drippers.lifetimes()
    assert holding >= cap - 1
    assert len(lifetimes) == drippers_count
    assert max(lifetimes) < header_timeout + SLACK, max(lifetimes)


@pytest.mark.parametrize("count", [300])
def test_plasmd_serve_closes_drippers_at_the_header_timeout(tmp_path: Path, count: int) -> None:
    make_tree(tmp_path / "art", {"stable/x86_64": 1000})
    header_timeout = 2.0
    args = serve_args(
        tmp_path / "art",
        tmp_path / "state",
        "--header-timeout",
        str(header_timeout),
        "--idle-timeout",
        "60",
    )
    with running_server(args) as server:
        drippers = Drippers(server.port, count)
        try:
            results = real_clients(server.port, 20)
            assert results == [200] * 20
            assert drippers.open_count() > 0  # they were still connected while clients got 200
            assert drippers.wait_all_closed(timeout=header_timeout + 30)
        finally:
            drippers.close()
        lifetimes = drippers.lifetimes()
    assert len(lifetimes) == count
    # Total, not per read: a byte every 0.5 s would otherwise keep them for the idle timeout.
    assert header_timeout - 0.5 <= min(lifetimes)
    assert max(lifetimes) < header_timeout + SLACK, max(lifetimes)
