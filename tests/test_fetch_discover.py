"""phase-fetch --discover: find the provider through the DHT on loopback, then fetch verified."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from phase_client.keys import SigningKey

from .conftest import run_tool
from .provider_helpers import make_tree, running_server


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_fetch_discover_through_the_dht(tmp_path: Path) -> None:
    key = SigningKey.generate()
    (tmp_path / "release.key").write_bytes(key.file_bytes())
    contents = make_tree(tmp_path / "art", {"stable/x86_64": 3 << 20, "stable/arm64": 1 << 20})
    dht_port = free_udp_port()
    args = [
        "--artifacts",
        str(tmp_path / "art"),
        "--state-dir",
        str(tmp_path / "state"),
        "--bind",
        "127.0.0.1",
        "--port",
        "0",
        "--advertise-host",
        "127.0.0.1",
        "--key",
        str(tmp_path / "release.key"),
        "--no-mdns",
        "--dht-port",
        str(dht_port),
    ]
    with running_server(args) as server:
        server.wait_for(r"Advertising stable/x86_64")
        out = tmp_path / "boot"
        fetch = [
            "fetch",
            "--discover",
            "--source",
            "dht",
            "--bootstrap",
            f"127.0.0.1:{dht_port}",
            "--arch",
            "amd64",
            "--output",
            str(out),
            "--key",
            key.public.keyid,
            "--json",
        ]
        result = None
        for _ in range(5):  # the provider publishes its record just after it starts
            result = run_tool(*fetch)
            if result.returncode == 0:
                break
        assert result is not None and result.returncode == 0, result.stderr.decode()
        assert (out / "kernel").read_bytes() == contents["stable/x86_64"]
        assert json.loads((out / "manifest.json").read_text())["arch"] == "x86_64"
        assert b"discovered http://127.0.0.1:" in result.stderr
        listed = run_tool(
            "discover",
            "--source",
            "dht",
            "--bootstrap",
            f"127.0.0.1:{dht_port}",
            "--arch",
            "x86_64",
            "--list",
            "--quiet",
        )
        assert listed.returncode == 0, listed.stderr.decode()
        url, source, version, rtt, name = listed.stdout.decode().splitlines()[0].split("\t")
        assert url == f"{server.url}/stable/x86_64/manifest.json"
        manifest_version = json.loads((out / "manifest.json").read_text())["version"]
        assert (source, version) == ("dht", manifest_version)
        assert name and name != "-"  # the provider's name from its signed DHT record
        assert rtt.endswith("ms")
        # Discovery pins the pair: a provider offering only another arch is not booted.
        wrong = run_tool(
            "fetch",
            "--discover",
            "--source",
            "dht",
            "--bootstrap",
            f"127.0.0.1:{dht_port}",
            "--arch",
            "riscv64",
            "--discover-timeout",
            "2",
            "--output",
            str(tmp_path / "none"),
            "--key",
            key.public.keyid,
        )
        assert wrong.returncode == 3, wrong.stderr.decode()
        assert b"no provider of stable/riscv64 found" in wrong.stderr
        assert not (tmp_path / "none").exists() or not any((tmp_path / "none").iterdir())


@pytest.mark.parametrize(
    "args",
    [
        ["--bootstrap", "127.0.0.1:9"],  # without --discover
        ["--discover", "--source", "dht"],  # DHT without a bootstrap node
        ["--discover", "--bootstrap", "nonsense"],
    ],
)
def test_discover_usage_errors(tmp_path: Path, args: list[str]) -> None:
    result = run_tool(
        "fetch", *args, "--output", str(tmp_path / "o"), "--key", SigningKey.generate().public.keyid
    )
    assert result.returncode == 2, result.stderr.decode()
    assert b"Traceback" not in result.stderr
