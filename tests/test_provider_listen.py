"""Where ``plasmd serve`` listens: by default every address of both families on one dual-stack
socket (IPv4 alone where the system has no IPv6), ``--bind 0.0.0.0`` IPv4 only, and what the
default leaves as it was (the DHT node's address, the advertised host). Real sockets, reached
over loopback only."""

from __future__ import annotations

import errno
import http.client
import logging
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from phase_client.errors import UsageError
from phase_client.keys import SigningKey
from phase_client.provider import server as server_module
from phase_client.provider.config import EVERY_ADDRESS, ServeConfig, resolve
from phase_client.provider.http import client_host
from phase_client.provider.server import Provider, advertised_host, dht_listen_host, listen
from phase_client.provider.statedir import StateDir
from tests.provider_helpers import ServerProcess, make_tree, poll, serve_args, threaded

LISTENING = "phase_client.provider.server"


def config_for(tmp_path: Path, bind: str | None = None, **extra: Any) -> ServeConfig:
    make_tree(tmp_path / "art", {"stable/x86_64": 1000})
    flags = {"artifacts": str(tmp_path / "art"), "state_dir": str(tmp_path / "state")}
    return resolve({**flags, "port": 0, "settle_time": 0, "bind": bind, **extra})


@contextmanager
def serving(config: ServeConfig, key: SigningKey) -> Iterator[Provider]:
    """``Provider.bind`` then its HTTP server in a thread (no advertisers, no scan loop)."""
    state = StateDir(config.state_dir)
    provider = Provider(config, state=state, identity=state.identity(), signing_key=key)
    provider.bind()
    assert provider.server is not None
    provider.scan(first=True)
    with threaded(provider.server):
        yield provider


def health(host: str, port: int) -> int:
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status
    finally:
        conn.close()


def test_the_default_serves_ipv4_and_ipv6_on_one_socket(
    tmp_path: Path, key: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    config = config_for(tmp_path)
    assert config.bind == EVERY_ADDRESS
    with serving(config, key) as provider:
        assert provider.server is not None and provider.server.socket.family == socket.AF_INET6
        # The access line is written once the answer is out: the client can read its answer
        # before the server's thread has logged it, so each connection is waited out (it logs,
        # then gives back its slot) before the next one and before the lines are read.
        server = provider.server
        assert health("127.0.0.1", provider.port) == 200  # v4-mapped on the IPv6 socket
        assert poll(lambda: server.connections == 0)
        assert health("::1", provider.port) == 200
        assert poll(lambda: server.connections == 0)
    listening = [r.getMessage() for r in caplog.records if r.name == LISTENING]
    assert f"Listening on http://[::]:{provider.port}/" in listening
    clients = [r.fields["client"] for r in caplog.records if hasattr(r, "fields")]
    assert clients == ["127.0.0.1", "::1"]  # an IPv4 client logged as itself


def test_plasmd_serve_without_bind_listens_on_both_families(tmp_path: Path) -> None:
    make_tree(tmp_path / "art", {"stable/x86_64": 1000})
    args = serve_args(tmp_path / "art", tmp_path / "state")
    del args[args.index("--bind") : args.index("--bind") + 2]
    server = ServerProcess(args)
    try:
        port = int(server.wait_for(r"^INFO Listening on http://\[::\]:(\d+)/$").group(1))
        server.wait_for(r"^INFO Found 1 channel/arch combinations$")
        assert health("127.0.0.1", port) == 200 and health("::1", port) == 200
    finally:
        assert server.stop() == 0


def test_bind_0_0_0_0_stays_ipv4_only(
    tmp_path: Path, key: SigningKey, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with serving(config_for(tmp_path, "0.0.0.0"), key) as provider:
        assert health("127.0.0.1", provider.port) == 200
        with pytest.raises(ConnectionRefusedError):
            health("::1", provider.port)
    assert f"Listening on http://0.0.0.0:{provider.port}/" in caplog.messages


def test_an_empty_bind_is_the_default(tmp_path: Path) -> None:
    assert config_for(tmp_path, " ").bind == EVERY_ADDRESS


def test_without_ipv6_the_default_falls_back_to_ipv4(
    tmp_path: Path,
    key: SigningKey,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(socket, "has_ipv6", False)
    with serving(config_for(tmp_path), key) as provider:
        assert health("127.0.0.1", provider.port) == 200
        with pytest.raises(ConnectionRefusedError):
            health("::1", provider.port)
    assert "No IPv6 on this system (Python was built without IPv6): listening on IPv4 only" in (
        caplog.messages
    )
    assert f"Listening on http://0.0.0.0:{provider.port}/" in caplog.messages


def opener(failure: int | None) -> tuple[Callable[[str], str], list[str]]:
    """An ``open_at`` for ``listen`` that fails on ``::`` with ``failure``, and what it tried."""
    tried: list[str] = []

    def open_at(host: str) -> str:
        tried.append(host)
        if host == "::" and failure is not None:
            raise OSError(failure, errno.errorcode[failure])
        return f"server on {host}"

    return open_at, tried


@pytest.mark.parametrize(
    "failure", [errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT]
)
def test_no_ipv6_errors_fall_back_with_one_line(
    failure: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    open_at, tried = opener(failure)
    assert listen(EVERY_ADDRESS, open_at) == ("server on 0.0.0.0", "0.0.0.0")
    assert tried == ["::", "0.0.0.0"]
    (line,) = caplog.messages
    assert line == f"No IPv6 on this system ({errno.errorcode[failure]}): listening on IPv4 only"


def test_other_errors_and_explicit_addresses_do_not_fall_back() -> None:
    open_at, tried = opener(errno.EADDRINUSE)
    with pytest.raises(OSError, match="EADDRINUSE"):
        listen(EVERY_ADDRESS, open_at)
    assert tried == ["::"]
    open_at, tried = opener(errno.EAFNOSUPPORT)
    with pytest.raises(OSError, match="EAFNOSUPPORT"):
        listen("::", open_at)  # asked for IPv6: its failure is the user's to see
    assert listen("0.0.0.0", open_at) == ("server on 0.0.0.0", "0.0.0.0")


def test_a_busy_port_on_the_default_is_one_line(tmp_path: Path, key: SigningKey) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = config_for(tmp_path, port=port)
        state = StateDir(config.state_dir)
        provider = Provider(config, state=state, identity=state.identity(), signing_key=key)
        with pytest.raises(UsageError, match=rf"^port {port} on every address is busy$"):
            provider.bind()


def test_the_default_leaves_dht_and_advertised_host_as_they_were(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "primary_address", lambda: "192.0.2.5")
    default = config_for(tmp_path)
    assert dht_listen_host(default) is None  # the DHT node stays on IPv4 0.0.0.0
    assert advertised_host(default) == "192.0.2.5"
    ipv4 = config_for(tmp_path, "0.0.0.0")
    assert (dht_listen_host(ipv4), advertised_host(ipv4)) == (None, "192.0.2.5")
    both = config_for(tmp_path, "::")
    assert (dht_listen_host(both), advertised_host(both)) == ("::", "192.0.2.5")
    one = config_for(tmp_path, "127.0.0.1")
    assert (dht_listen_host(one), advertised_host(one)) == ("127.0.0.1", "127.0.0.1")


def test_client_host_unmaps_ipv4_clients() -> None:
    assert client_host(("::ffff:192.0.2.7", 5000, 0, 0)) == "192.0.2.7"
    assert client_host(("::1", 5000, 0, 0)) == "::1"
    assert client_host(("::ffff:fe80::1", 5000, 0, 0)) == "::ffff:fe80::1"  # not a mapped IPv4
    assert client_host(("192.0.2.7", 5000)) == "192.0.2.7"
