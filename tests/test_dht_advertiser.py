"""DhtAdvertiser, discover_dht and the commands (plasmd dht-node, plasmd serve, phase-discover)
as real processes and threads on loopback UDP."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from phase_client.discovery.dht import (
    bootstrap_from_cmdline,
    discover_dht,
    parse_bootstrap_list,
)
from phase_client.discovery.model import Query
from phase_client.errors import UsageError
from phase_client.keys import SigningKey
from phase_client.provider.advertise import Offer
from phase_client.provider.advertise_dht import DhtAdvertiser
from tests.conftest import REPO, run_tool
from tests.provider_helpers import ServerProcess, make_tree, poll, serve_args

START_TIMEOUT = 60.0


def offer(channel: str, arch: str, version: str, port: int) -> Offer:
    path = f"/{channel}/{arch}/manifest.json"
    return Offer(channel, arch, version, 1, port, path, f"http://127.0.0.1:{port}{path}")


@contextlib.contextmanager
def dht_node_process(*extra: str) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """``plasmd dht-node --port 0 --listen 127.0.0.1 --json``; yields (port, process)."""
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "phase_client", "plasmd", "dht-node", "--port", "0"),
            *("--listen", "127.0.0.1", "--json", "--rpc-timeout", "0.5", *extra),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline() or "{}")
        assert ready.get("port"), proc.stderr.read() if proc.stderr else ""
        yield int(ready["port"]), proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def found_urls(port: int, channel: str = "stable", arch: str = "arm64") -> dict[str, str]:
    query = Query(channel=channel, arch=arch, timeout=10, want_all=True)
    return {c.url: c.version or "" for c in discover_dht(query, [("127.0.0.1", port)])}


def test_advertisers_publish_update_and_clients_see_every_provider(tmp_path: Path) -> None:
    k1, k2 = SigningKey.generate(), SigningKey.generate()
    state = tmp_path / "dht-state.json"
    with dht_node_process() as (port, _):
        boot = [("127.0.0.1", port)]
        one = DhtAdvertiser(
            k1, "one", 0, boot, ttl=600, republish=300, listen_host="127.0.0.1", state_file=state
        )
        two = DhtAdvertiser(k2, "two", 0, boot, ttl=600, republish=300, listen_host="127.0.0.1")
        try:
            one.start([offer("stable", "arm64", "1", 8081)])
            two.start([offer("stable", "arm64", "7", 8082)])
            assert one.wait_rounds(1, START_TIMEOUT) and two.wait_rounds(1, START_TIMEOUT)
            assert one.bound_port > 0
            query = Query(channel="stable", arch="arm64", timeout=10, want_all=True)
            candidates = discover_dht(query, boot)
            assert {c.url for c in candidates} == {
                "http://127.0.0.1:8081/stable/arm64/manifest.json",
                "http://127.0.0.1:8082/stable/arm64/manifest.json",
            }
            by_name = {c.name: c for c in candidates}
            assert by_name["one"].peer_id == k1.public.peer_id
            assert by_name["two"].version == "7"
            for c in candidates:
                assert c.source == "dht" and c.port in (8081, 8082) and c.host == "127.0.0.1"
                assert c.last_updated and c.last_updated.endswith("Z")
            # A catalog change republishes at once: new version, new combination.
            one.update([offer("stable", "arm64", "2", 8081), offer("testing", "x86_64", "3", 8081)])
            assert one.wait_rounds(2, START_TIMEOUT)
            assert found_urls(port)["http://127.0.0.1:8081/stable/arm64/manifest.json"] == "2"
            assert list(found_urls(port, "testing", "x86_64").values()) == ["3"]
            assert json.loads(state.read_text())["neighbors"]
        finally:
            one.stop()
            two.stop()


def test_timer_republish_keeps_a_short_lived_record_alive_until_stop() -> None:
    key = SigningKey.generate()
    url = "http://127.0.0.1:8083/stable/arm64/manifest.json"
    with dht_node_process() as (port, _):
        adv = DhtAdvertiser(
            key, "short", 0, [("127.0.0.1", port)], ttl=2, republish=0.5, listen_host="127.0.0.1"
        )
        adv.start([offer("stable", "arm64", "1", 8083)])
        try:
            # Republished on the timer: still present after several TTLs.
            assert adv.wait_rounds(5, START_TIMEOUT)
            assert url in found_urls(port)
        finally:
            adv.stop()
        rounds = adv.rounds
        # Stopped: no more republishing, so the record expires everywhere.
        assert poll(lambda: url not in found_urls(port), timeout=30, interval=0.5)
        assert adv.rounds == rounds


def test_advertiser_reports_a_busy_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        adv = DhtAdvertiser(SigningKey.generate(), "x", busy.getsockname()[1], [], ttl=60)
        adv.listen_host = "127.0.0.1"
        with pytest.raises(UsageError, match="cannot listen"):
            adv.start([])
    with pytest.raises(UsageError, match="republish"):
        DhtAdvertiser(SigningKey.generate(), "x", 0, [], ttl=60, republish=60)


def test_discover_with_a_silent_bootstrap_node_returns_within_its_timeout() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # bound, never answers
        started = time.monotonic()
        query = Query(channel="stable", arch="arm64", timeout=1.5, want_all=True)
        assert discover_dht(query, [("127.0.0.1", silent.getsockname()[1])]) == []
        # Bounded by the query's timeout (a generous margin for a loaded machine).
        assert time.monotonic() - started < 1.5 + 10
    assert discover_dht(query, []) == []


def test_plasmd_serve_and_phase_discover_end_to_end(tmp_path: Path) -> None:
    make_tree(tmp_path / "artifacts", {"stable/arm64": 4096})
    with dht_node_process() as (port, _):
        servers = []
        try:
            for index in range(2):
                args = serve_args(tmp_path / "artifacts", tmp_path / f"state{index}")
                args.remove("--no-dht")
                args += ["--dht-port", "0", "--bootstrap", f"127.0.0.1:{port}"]
                args += ["--advertise-host", "127.0.0.1", "--name", f"provider-{index}"]
                servers.append(ServerProcess(args).started())
            for server in servers:
                server.wait_for(r"DHT: published stable/arm64 to \d+ node")
            result = run_tool(
                "phase-discover",
                *("--source", "dht", "--bootstrap", f"127.0.0.1:{port}"),
                *("--channel", "stable", "--arch", "arm64", "--all", "--json", "--timeout", "10"),
            )
            assert result.returncode == 0, result.stderr
            found = json.loads(result.stdout)["providers"]
            assert {c["url"] for c in found} == {
                s.url + "/stable/arm64/manifest.json" for s in servers
            }
            assert {c["name"] for c in found} == {"provider-0", "provider-1"}
            for candidate in found:
                assert candidate["source"] == "dht"
                assert candidate["peer_id"].startswith("12D3KooW")
        finally:
            for server in servers:
                server.stop()
    missing = run_tool(
        "phase-discover",
        *("--source", "dht", "--bootstrap", f"127.0.0.1:{port}", "--timeout", "1"),
    )
    assert missing.returncode == 3
    last = missing.stderr.decode().strip().splitlines()[-1]
    assert last.startswith("phase-discover: no provider of stable/")


def test_dht_node_command_errors_are_one_line(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        result = run_tool(
            "plasmd", "dht-node", "--listen", "127.0.0.1", "--port", str(busy.getsockname()[1])
        )
    assert result.returncode == 2
    assert result.stderr.decode().strip().splitlines()[-1].startswith("plasmd: cannot listen on")
    bad = run_tool("plasmd", "dht-node", "--bootstrap", "nonsense")
    assert bad.returncode == 2 and b"HOST:PORT" in bad.stderr
    assert run_tool("plasmd", "dht-node", "--help").returncode == 0


def test_dht_node_state_file_survives_restart(tmp_path: Path) -> None:
    state = tmp_path / "node.json"
    with dht_node_process() as (boot_port, _):
        with dht_node_process("--bootstrap", f"127.0.0.1:{boot_port}", "--state", str(state)):
            assert poll(state.exists, timeout=30)
        first = json.loads(state.read_text())
        assert first["neighbors"] == [["127.0.0.1", boot_port]]
        with dht_node_process("--state", str(state)) as (_, proc):
            # Rejoins through the saved neighbour without --bootstrap, with the same id.
            assert proc.stderr is not None
            line = ""
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and "joined" not in line:
                line = proc.stderr.readline()
            assert "joined the DHT" in line
        assert json.loads(state.read_text())["id"] == first["id"]


def test_bootstrap_lists_from_config_and_kernel_command_line() -> None:
    assert parse_bootstrap_list("a.example:4001, 10.0.0.1:4002 [::1]:4003") == [
        ("a.example", 4001),
        ("10.0.0.1", 4002),
        ("::1", 4003),
    ]
    cmdline = "console=ttyS0 phase.bootstrap=192.0.2.1:4001,192.0.2.2:4001 quiet"
    assert bootstrap_from_cmdline(cmdline) == [("192.0.2.1", 4001), ("192.0.2.2", 4001)]
    assert bootstrap_from_cmdline("console=ttyS0") == []
    for bad in ("host", "host:0", "host:65536", ":80", "host:port"):
        with pytest.raises(UsageError):
            parse_bootstrap_list(bad)


def test_update_and_stop_after_stop_are_harmless() -> None:
    adv = DhtAdvertiser(SigningKey.generate(), "x", 0, [], ttl=60, listen_host="127.0.0.1")
    adv.stop()  # never started
    adv.start([offer("stable", "arm64", "1", 8080)])
    assert adv.wait_rounds(1, START_TIMEOUT)
    assert adv.accepted == {"stable/arm64": 0}  # alone: held only by itself
    adv.stop()
    adv.update([offer("stable", "arm64", "2", 8080)])
    adv.stop()
