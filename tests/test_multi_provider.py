"""The seed's Multi-Provider Test (task 5) made real: two ``plasmd serve`` providers and clients,
each in its own network namespace on one bridge, real mDNS multicast, a real two-node DHT, real
HTTP transfers, and a real ``kill -9``.

Layout (one LAN shared by the module; the kill -9 test runs last because it ends provider 1):

    prov1  plasmd serve --port 8080 --dht-port 4001                    (same release --key,
    prov2  plasmd serve --port 8081 --dht-port 4001 --bootstrap prov1:4001  own --state-dir)
    client1, client2  python3 -m phase_client discover|fetch ...

Both providers offer ``stable/arm64`` (a 32 MiB kernel, so two transfers overlap) and have an
empty ``stable/x86_64`` directory (seed task 4.5). A second, separate LAN holds a provider that
does not advertise on mDNS: the client there can only find it through the DHT.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.netns import Lan, Node, describe
from tests.provider_helpers import ServerProcess, write_random

pytestmark = pytest.mark.netns

KERNEL_SIZE = 32 << 20
INITRAMFS_SIZE = 1 << 20
COMMAND_TIMEOUT = 120.0  # ceiling for one client command; never reached when things work
DHT_PORT = 4001
MANIFEST_PATH = "/stable/arm64/manifest.json"


class Provider(ServerProcess):
    """``plasmd serve`` in a namespace; log collection and waits come from ``ServerProcess``."""

    def __init__(self, node: Node, argv: list[str]) -> None:
        # ServerProcess's own __init__ starts the process on the host; only that part differs.
        self.node = node
        self.attach(node.popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))

    @property
    def url(self) -> str:
        return f"http://{self.node.address}:{self.port}"

    @property
    def manifest_url(self) -> str:
        return self.url + MANIFEST_PATH


def start_provider(
    node: Node, artifacts: Path, state: Path, key: Path, port: int, *extra: str
) -> Provider:
    argv = node.python(
        "plasmd",
        "serve",
        *("--artifacts", str(artifacts), "--port", str(port), "--state-dir", str(state)),
        *("--key", str(key), "--dht-port", str(DHT_PORT), "--name", node.hostname),
        *("--scan-interval", "60"),
        *extra,
    )
    provider = Provider(node, argv).started()
    assert isinstance(provider, Provider) and provider.port == port
    return provider


def release_key(directory: Path) -> tuple[Path, Path]:
    """A release key made by ``plasmd keygen``: (private key file, public key file)."""
    private = directory / "release.key"
    result = subprocess.run(
        [sys.executable, "-m", "phase_client", "plasmd", "keygen", "--out", str(private)],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 0, describe(result)
    return private, Path(f"{private}.pub")


def artifact_tree(root: Path) -> dict[str, bytes]:
    """stable/arm64 with a kernel and an initramfs; stable/x86_64 empty (seed 4.5)."""
    files = {
        "kernel": write_random(root / "stable/arm64/vmlinuz", KERNEL_SIZE, seed=3),
        "initramfs": write_random(root / "stable/arm64/initramfs.img", INITRAMFS_SIZE, seed=5),
    }
    (root / "stable/arm64/version").write_text("2025.11.26\n")
    (root / "stable/x86_64").mkdir(parents=True)
    return files


def discover(
    node: Node, *args: str, timeout: float = 5.0, wait: float = COMMAND_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    argv = node.python("discover", "--timeout", str(timeout), *args)
    return node.run(argv, timeout=timeout + wait)


def discover_json(node: Node, *args: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    result = discover(node, "--json", *args, timeout=timeout)
    assert result.returncode == 0, describe(result)
    found: list[dict[str, Any]] = json.loads(result.stdout)["providers"]
    return found


def fetch_argv(node: Node, urls: list[str], output: Path, public_key: Path) -> list[str]:
    manifests = [arg for url in urls for arg in ("--manifest", url)]
    return node.python(
        "fetch",
        *manifests,
        *("--output", str(output), "--key", str(public_key)),
        *("--channel", "stable", "--arch", "arm64", "--json", "--quiet"),
    )


def http_json(node: Node, url: str) -> dict[str, Any]:
    """GET ``url`` from inside ``node`` (plain urllib3, no proxy) and decode the JSON body."""
    code = (
        "import sys, urllib3; r = urllib3.PoolManager(retries=False, timeout=30)"
        ".request('GET', sys.argv[1]); sys.stdout.write(r.data.decode()); "
        "sys.exit(r.status != 200)"
    )
    result = node.run([sys.executable, "-c", code, url], timeout=COMMAND_TIMEOUT)
    assert result.returncode == 0, describe(result)
    body: dict[str, Any] = json.loads(result.stdout)
    return body


def bytes_served(provider: Provider, via: Node) -> int:
    status = http_json(via, f"http://{provider.node.address}:{provider.port}/status")
    found = _find_key(status, "bytes_served")
    assert found is not None, status
    return found


def _find_key(value: Any, key: str) -> int | None:
    """The first integer under ``key`` anywhere in a JSON value (the /status layout may nest)."""
    if isinstance(value, dict):
        if isinstance(value.get(key), int):
            return int(value[key])
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            found = _find_key(item, key)
            if found is not None:
                return found
    return None


def assert_fetched(output: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        got = (output / name).read_bytes()
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), name
    assert (output / "manifest.json").is_file()
    assert not [p.name for p in output.iterdir() if p.name.endswith(".part")]


@dataclass
class World:
    lan: Lan
    prov1: Provider
    prov2: Provider
    client1: Node
    client2: Node
    files: dict[str, bytes]
    public_key: Path
    tmp: Path

    @property
    def bootstrap(self) -> list[str]:
        return [f"--bootstrap={p.node.address}:{DHT_PORT}" for p in (self.prov1, self.prov2)]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("multi")
    files = artifact_tree(tmp / "artifacts")
    private, public = release_key(tmp)
    with Lan(prefix="mp") as lan:
        nodes = [lan.add_node(name) for name in ("prov1", "prov2", "client1", "client2")]
        prov1 = start_provider(nodes[0], tmp / "artifacts", tmp / "state1", private, 8080)
        # Provider 2 starts once provider 1 owns the name (the seed's order): it gets the "-2".
        prov1.wait_for(r"mDNS: advertising stable/arm64 as phase-stable-arm64 ")
        prov2 = start_provider(
            nodes[1],
            tmp / "artifacts",
            tmp / "state2",
            private,
            8081,
            "--bootstrap",
            f"{nodes[0].address}:{DHT_PORT}",
        )
        yield World(lan, prov1, prov2, nodes[2], nodes[3], files, public, tmp)


def test_5_1_and_5_2_both_providers_on_mdns_second_one_renamed(world: World) -> None:
    for provider in (world.prov1, world.prov2):
        provider.wait_for(r"mDNS: advertising stable/arm64 as ")
        provider.wait_for(r"^WARN Missing artifacts for stable/x86_64$")
    found = discover_json(world.client1, "--source", "mdns", "--arch", "arm64", "--all")
    names = {c["url"]: c["name"] for c in found}
    assert names == {
        world.prov1.manifest_url: "phase-stable-arm64",
        world.prov2.manifest_url: "phase-stable-arm64-2",
    }, found
    for candidate in found:
        assert candidate["source"] == "mdns"
        assert candidate["version"] == "2025.11.26"
        assert candidate["rtt_ms"] is not None and candidate["rtt_ms"] >= 0  # both probed alive


def test_5_3_dht_holds_both_records(world: World) -> None:
    world.prov2.wait_for(r"DHT: published stable/arm64 to [1-9]\d* node")
    result = discover(
        world.client1,
        *("--source", "dht", "--all", "--json", "--arch", "arm64"),
        f"--bootstrap={world.prov1.node.address}:{DHT_PORT}",
        timeout=10,
    )
    assert result.returncode == 0, describe(result)
    found = json.loads(result.stdout)["providers"]
    assert {c["url"] for c in found} == {world.prov1.manifest_url, world.prov2.manifest_url}
    for candidate in found:
        assert candidate["source"] == "dht"
        assert candidate["peer_id"].startswith("12D3KooW")
        assert candidate["name"] in {"prov1", "prov2"}
    # The plain --all listing: URL, source, version, RTT, name per line.
    result = discover(
        world.client2,
        *("--source", "dht", "--all", "--arch", "arm64", "--quiet"),
        f"--bootstrap={world.prov2.node.address}:{DHT_PORT}",
        timeout=10,
    )
    assert result.returncode == 0, describe(result)
    lines = sorted(result.stdout.splitlines())
    assert len(lines) == 2, result.stdout
    for line, provider in zip(lines, (world.prov1, world.prov2), strict=True):
        url, source, version, rtt, name = line.split("\t")
        assert (url, source, version, name) == (
            provider.manifest_url,
            "dht",
            "2025.11.26",
            provider.node.hostname,
        )
        assert re.fullmatch(r"\d+(\.\d)?ms", rtt), line


def test_5_4_auto_mode_prefers_the_lan(world: World) -> None:
    found = discover_json(world.client1, "--arch", "arm64", "--all", *world.bootstrap)
    urls = [c["url"] for c in found]
    assert sorted(urls) == sorted({world.prov1.manifest_url, world.prov2.manifest_url})
    # Each URL once, reported by mDNS (the LAN report wins over the DHT's for the same URL).
    assert [c["source"] for c in found] == ["mdns", "mdns"]
    result = discover(world.client1, "--arch", "arm64", "--quiet", *world.bootstrap)
    assert result.returncode == 0, describe(result)
    assert result.stdout.strip() in urls
    assert result.stderr == ""


def test_5_5_two_clients_fetch_at_once_one_from_each_provider(world: World) -> None:
    providers = (world.prov1, world.prov2)
    before = [bytes_served(p, world.client1) for p in providers]
    outputs = [world.tmp / "out-client1", world.tmp / "out-client2"]
    procs = [
        client.popen(
            fetch_argv(client, [provider.manifest_url], output, world.public_key),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for client, provider, output in zip(
            (world.client1, world.client2), providers, outputs, strict=True
        )
    ]
    results = [proc.communicate(timeout=COMMAND_TIMEOUT) for proc in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
    for output in outputs:
        assert_fetched(output, world.files)
    after = [bytes_served(p, world.client1) for p in providers]
    for provider, old, new in zip(providers, before, after, strict=True):
        assert new - old >= KERNEL_SIZE + INITRAMFS_SIZE, (provider.node.hostname, old, new)


def test_seed_4_5_arm64_found_x86_64_not_found_within_timeout(world: World) -> None:
    found = discover(world.client2, "--arch", "arm64", "--quiet", *world.bootstrap, timeout=3)
    assert found.returncode == 0, describe(found)
    assert found.stdout.strip() in {world.prov1.manifest_url, world.prov2.manifest_url}

    started = time.monotonic()
    missing = discover(world.client2, "--arch", "x86_64", *world.bootstrap, timeout=2)
    elapsed = time.monotonic() - started
    assert missing.returncode == 3, describe(missing)
    assert missing.stdout == ""
    last = missing.stderr.strip().splitlines()[-1]
    assert last == "phase-discover: no provider of stable/x86_64 found within 2 s"
    assert "Traceback" not in missing.stderr
    # The command gives up on its own (no hang until the harness' ceiling); bound is generous.
    assert elapsed < 2 + 60


def kill_provider_1(world: World) -> None:
    """kill -9: no mDNS goodbye, no DHT withdrawal. Idempotent, so each test may call it."""
    if world.prov1.proc.poll() is None:
        os.kill(world.prov1.proc.pid, signal.SIGKILL)
    world.prov1.proc.wait(timeout=30)


def test_5_4_kill_9_provider_1_then_provider_2_answers_and_fetch_falls_back(world: World) -> None:
    """Runs after the other tests of the shared LAN: provider 1 does not come back."""
    client = world.client1
    # A client browsing while provider 1 dies: its mDNS cache and the DHT still name provider 1.
    browse = client.popen(
        client.python(
            *("discover", "--arch", "arm64", "--all", "--json", "--timeout", "8"),
            *world.bootstrap,
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert browse.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + 30
    while len(seen) < 2 and time.monotonic() < deadline:
        line = browse.stderr.readline()
        if not line:
            break
        if "mDNS: found" in line:
            seen.append(line)
    assert len(seen) == 2, seen
    kill_provider_1(world)
    out, err = browse.communicate(timeout=COMMAND_TIMEOUT)
    assert browse.returncode == 0, err
    assert [c["url"] for c in json.loads(out)["providers"]] == [world.prov2.manifest_url]
    assert f"skipping {world.prov1.manifest_url}" in err, err

    # The DHT still holds provider 1's record (it was killed, not withdrawn): --no-probe shows it.
    stale = discover_json(
        client,
        *("--source", "dht", "--all", "--no-probe", "--arch", "arm64"),
        f"--bootstrap={world.prov2.node.address}:{DHT_PORT}",
        timeout=6,
    )
    assert world.prov1.manifest_url in {c["url"] for c in stale}, stale
    # A fresh client in auto mode: provider 2 answers on the LAN and is chosen.
    result = discover(client, "--arch", "arm64", "--quiet", *world.bootstrap, timeout=6)
    assert result.returncode == 0, describe(result)
    assert result.stdout.strip() == world.prov2.manifest_url

    # The ranked list with the dead provider first: the fetch falls back to provider 2.
    before = bytes_served(world.prov2, client)
    output = world.tmp / "out-fallback"
    result = client.run(
        fetch_argv(
            client, [world.prov1.manifest_url, world.prov2.manifest_url], output, world.public_key
        ),
        timeout=COMMAND_TIMEOUT,
    )
    assert result.returncode == 0, describe(result)
    assert_fetched(output, world.files)
    assert bytes_served(world.prov2, client) - before >= KERNEL_SIZE + INITRAMFS_SIZE
    assert f"WARN skipping manifest {world.prov1.manifest_url}" in result.stderr, result.stderr

    # phase-fetch --discover on its own: mDNS and the DHT (through provider 2) lead to provider 2.
    output = world.tmp / "out-discover"
    result = client.run(
        client.python(
            "fetch",
            "--discover",
            "--bootstrap",
            f"{world.prov2.node.address}:{DHT_PORT}",
            *("--channel", "stable", "--arch", "arm64", "--output", str(output)),
            *("--key", str(world.public_key), "--quiet"),
        ),
        timeout=COMMAND_TIMEOUT,
    )
    assert result.returncode == 0, describe(result)
    assert_fetched(output, world.files)


def test_5_4_dht_only_lookup_skips_the_dead_providers_stale_record(world: World) -> None:
    """After the kill: the DHT still returns provider 1's record until its TTL; without --all
    the client must still answer with provider 2 (the live record), every time."""
    kill_provider_1(world)
    for _ in range(3):  # which record a lookup meets first varies run to run
        result = discover(
            world.client2,
            *("--source", "dht", "--arch", "arm64", "-v"),
            f"--bootstrap={world.prov2.node.address}:{DHT_PORT}",
            timeout=6,
        )
        assert result.returncode == 0, describe(result)
        assert result.stdout.strip() == world.prov2.manifest_url


def test_no_lan_provider_the_client_finds_one_through_the_dht(tmp_path: Path) -> None:
    files = artifact_tree(tmp_path / "artifacts")
    private, public = release_key(tmp_path)
    with Lan(prefix="mq") as lan:
        wan, client = lan.add_node("wanprov"), lan.add_node("client")
        provider = start_provider(
            wan, tmp_path / "artifacts", tmp_path / "state", private, 8080, "--no-mdns"
        )
        provider.wait_for(r"DHT node listening")
        bootstrap = f"--bootstrap={wan.address}:{DHT_PORT}"
        # mDNS alone finds nothing: no LAN provider at all.
        lan_only = discover(client, "--source", "mdns", "--arch", "arm64", timeout=2)
        assert lan_only.returncode == 3, describe(lan_only)
        found = discover_json(client, "--arch", "arm64", bootstrap, timeout=6)
        assert [(c["url"], c["source"]) for c in found] == [(provider.manifest_url, "dht")]
        output = tmp_path / "out"
        result = client.run(
            fetch_argv(client, [found[0]["url"]], output, public), timeout=COMMAND_TIMEOUT
        )
        assert result.returncode == 0, describe(result)
        assert_fetched(output, files)
