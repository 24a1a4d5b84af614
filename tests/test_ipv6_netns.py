"""IPv6 on a LAN of network namespaces (``tests/netns.py``) with no IPv4 address anywhere, and
one dual-stack LAN: a real ``plasmd serve --bind ::`` found by mDNS (AAAA) and through the DHT,
fetched by a real ``phase-fetch``, a link-local-only provider reached with the client's zone,
and a dual-stack provider listed once."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from phase_client.keys import SigningKey
from tests.netns import Lan, Node, describe
from tests.provider_helpers import make_tree

pytestmark = pytest.mark.netns

START_TIMEOUT = 60.0
DHT_PORT = 4001


@pytest.fixture
def lan() -> Iterator[Lan]:
    with Lan(prefix="p6") as network:
        yield network


class Served:
    """``plasmd serve --bind ::`` in a namespace, its stderr read line by line."""

    def __init__(self, node: Node, tmp: Path, *extra: str) -> None:
        self.key = SigningKey.generate()
        (tmp / "release.key").write_bytes(self.key.file_bytes())
        self.contents = make_tree(tmp / "art", {"stable/arm64": 1 << 20})
        self.log: list[str] = []
        self.proc = node.popen(
            node.python(
                "plasmd",
                "serve",
                "--artifacts",
                str(tmp / "art"),
                "--state-dir",
                str(tmp / "state"),
                "--key",
                str(tmp / "release.key"),
                "--bind",
                "::",
                "--port",
                "0",
                *extra,
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_for(self, pattern: str, timeout: float = START_TIMEOUT) -> re.Match[str]:
        """The first log line matching ``pattern`` (reading on as needed), within ``timeout``."""
        assert self.proc.stderr is not None
        deadline = time.monotonic() + timeout
        for line in self.log:
            if match := re.search(pattern, line):
                return match
        while time.monotonic() < deadline and self.proc.poll() is None:
            line = self.proc.stderr.readline()  # plasmd logs every few seconds at most
            self.log.append(line)
            if match := re.search(pattern, line):
                return match
        raise AssertionError(f"no {pattern!r} in plasmd's log:\n{''.join(self.log)}")


def discover(node: Node, *args: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    argv = node.python("discover", "--arch", "arm64", "--json", "--timeout", str(timeout), *args)
    result = node.run(argv, timeout=timeout + 60)
    assert result.returncode == 0, describe(result)
    found: list[dict[str, Any]] = json.loads(result.stdout)["providers"]
    return found


def fetch(node: Node, served: Served, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = node.python(
        "fetch",
        "--discover",
        "--arch",
        "arm64",
        "--output",
        str(out),
        "--key",
        served.key.public.keyid,
        *args,
    )
    return node.run(argv, timeout=120)


def no_ipv4(node: Node) -> None:
    result = node.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], timeout=30)
    assert result.returncode == 0 and result.stdout.strip() == "", describe(result)


def test_ipv6_only_lan_mdns_aaaa_then_fetch(lan: Lan, tmp_path: Path) -> None:
    provider = lan.add_node("prov", ipv4=False, ipv6=True)
    client = lan.add_node("client", ipv4=False, ipv6=True)
    no_ipv4(provider)
    no_ipv4(client)
    served = Served(provider, tmp_path, "--no-dht")
    port = int(served.wait_for(r"Listening on http://\[::\]:(\d+)/").group(1))
    served.wait_for("mDNS: advertising stable/arm64")

    (candidate,) = discover(client, "--source", "mdns")
    url = f"http://[{provider.address6}]:{port}/stable/arm64/manifest.json"
    assert candidate["url"] == url  # the ULA, not the link-local address
    assert candidate["rtt_ms"] is not None  # probed over IPv6
    assert set(candidate["addresses"]) == {
        provider.address6,
        f"{provider.link_local()}%eth0",
    }, candidate  # the AAAA records, link-local with the client's interface

    out = tmp_path / "boot"
    result = fetch(client, served, out, "--source", "mdns")
    assert result.returncode == 0, describe(result)
    assert (out / "kernel").read_bytes() == served.contents["stable/arm64"]


def test_link_local_only_provider_is_reached_with_the_clients_zone(
    lan: Lan, tmp_path: Path
) -> None:
    provider = lan.add_node("prov", ipv4=False, ipv6=False)  # only fe80::
    client = lan.add_node("client", ipv4=False, ipv6=False)
    served = Served(provider, tmp_path, "--no-dht")
    port = int(served.wait_for(r"Listening on http://\[::\]:(\d+)/").group(1))
    served.wait_for("mDNS: advertising stable/arm64")

    (candidate,) = discover(client, "--source", "mdns")
    link_local = provider.link_local()
    assert candidate["url"] == f"http://[{link_local}%25eth0]:{port}/stable/arm64/manifest.json"
    assert candidate["rtt_ms"] is not None

    out = tmp_path / "boot"
    result = fetch(client, served, out, "--source", "mdns")
    assert result.returncode == 0, describe(result)
    assert (out / "kernel").read_bytes() == served.contents["stable/arm64"]


def test_ipv6_only_lan_dht(lan: Lan, tmp_path: Path) -> None:
    provider = lan.add_node("prov", ipv4=False, ipv6=True)
    client = lan.add_node("client", ipv4=False, ipv6=True)
    served = Served(provider, tmp_path, "--no-mdns", "--dht-port", str(DHT_PORT))
    port = int(served.wait_for(r"Listening on http://\[::\]:(\d+)/").group(1))
    served.wait_for(r"DHT node listening on :::")
    served.wait_for(r"DHT: .*stable/arm64")  # the first publish round is over

    bootstrap = f"[{provider.address6}]:{DHT_PORT}"
    (candidate,) = discover(client, "--source", "dht", "--bootstrap", bootstrap)
    assert candidate["source"] == "dht"
    assert candidate["url"] == f"http://[{provider.address6}]:{port}/stable/arm64/manifest.json"
    assert candidate["rtt_ms"] is not None

    out = tmp_path / "boot"
    result = fetch(client, served, out, "--source", "dht", "--bootstrap", bootstrap)
    assert result.returncode == 0, describe(result)
    assert (out / "kernel").read_bytes() == served.contents["stable/arm64"]


def test_dual_stack_provider_is_listed_once(lan: Lan, tmp_path: Path) -> None:
    provider = lan.add_node("prov", ipv6=True)
    client = lan.add_node("client", ipv6=True)
    v6only = lan.add_node("v6client", ipv4=False, ipv6=True)
    served = Served(provider, tmp_path, "--dht-port", str(DHT_PORT))
    port = int(served.wait_for(r"Listening on http://\[::\]:(\d+)/").group(1))
    served.wait_for("mDNS: advertising stable/arm64")
    served.wait_for(r"DHT: .*stable/arm64")

    url4 = f"http://{provider.address}:{port}/stable/arm64/manifest.json"
    for contact in (f"{provider.address}:{DHT_PORT}", f"[{provider.address6}]:{DHT_PORT}"):
        found = discover(client, "--all", "--bootstrap", contact)
        assert [c["url"] for c in found] == [url4], found  # mDNS and the DHT: one provider
        assert found[0]["source"] == "mdns" and found[0]["rtt_ms"] is not None

    # An IPv6-only client on the same LAN: the provider's IPv4 URL becomes its ULA.
    found = discover(v6only, "--all", "--bootstrap", f"[{provider.address6}]:{DHT_PORT}")
    url6 = f"http://[{provider.address6}]:{port}/stable/arm64/manifest.json"
    assert [(c["url"], c["source"]) for c in found] == [(url6, "mdns")], found


def global_ipv6(node: Node, timeout: float = 30.0) -> str:
    """``node``'s first usable global IPv6 address, once it has one (SLAAC takes ~1 s)."""
    deadline = time.monotonic() + timeout
    while True:
        out = node.run(["ip", "-6", "-o", "addr", "show", "scope", "global", "-tentative"], 30)
        if words := out.stdout.split():
            return words[words.index("inet6") + 1].split("/", 1)[0]
        assert time.monotonic() < deadline, f"no SLAAC address in {node.netns}: {describe(out)}"
        time.sleep(0.2)  # polling the address table: the kernel tells nobody


def test_slaac_lan_provider_found_at_its_own_address(lan: Lan, tmp_path: Path) -> None:
    router = lan.add_node("router", ipv4=False, ipv6=True)
    provider = lan.add_node("prov", ipv4=False, ipv6=False)
    client = lan.add_node("client", ipv4=False, ipv6=False)
    lan.advertise_prefix(router)
    prefix = lan.segments[0].prefix6.split("::", 1)[0] + ":"
    provider_address, client_address = global_ipv6(provider), global_ipv6(client)
    assert provider_address.startswith(prefix) and client_address.startswith(prefix)

    served = Served(provider, tmp_path, "--no-dht")
    port = int(served.wait_for(r"Listening on http://\[::\]:(\d+)/").group(1))
    served.wait_for("mDNS: advertising stable/arm64")
    (candidate,) = discover(client, "--source", "mdns")
    assert candidate["url"] == f"http://[{provider_address}]:{port}/stable/arm64/manifest.json"
    assert candidate["rtt_ms"] is not None


def test_ipv4_only_and_dual_stack_dht_nodes_work_together(lan: Lan, tmp_path: Path) -> None:
    """An IPv4-only DHT node (``plasmd dht-node``), a dual-stack provider that joins through
    it over IPv4 and publishes to it, then clients of each family, each through the node it can
    reach: the IPv4 one through the IPv4-only node, the IPv6-only one through the provider.
    The record names the provider's IPv4 address (its primary one; docs/ipv6.md, limits)."""
    seed = lan.add_node("seed")  # IPv4 only (the kernel's link-local address aside)
    provider = lan.add_node("prov", ipv6=True)
    client4 = lan.add_node("client4")
    client6 = lan.add_node("client6", ipv4=False, ipv6=True)
    node = seed.popen(
        seed.python("plasmd", "dht-node", "--port", str(DHT_PORT), "--json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert node.stdout is not None
    ready = json.loads(node.stdout.readline())  # printed once the port is bound
    assert ready["ok"] and ready["port"] == DHT_PORT, ready
    served = Served(
        provider,
        tmp_path,
        "--no-mdns",
        "--dht-port",
        str(DHT_PORT),
        "--bootstrap",
        f"{seed.address}:{DHT_PORT}",
    )
    port = int(served.wait_for(r"Listening on http://\[::\]:(\d+)/").group(1))
    served.wait_for(r"DHT: published stable/arm64 to [1-9]")  # the IPv4-only node took it

    url = f"http://{provider.address}:{port}/stable/arm64/manifest.json"
    for client, contact in (
        (client4, f"{seed.address}:{DHT_PORT}"),
        (client6, f"[{provider.address6}]:{DHT_PORT}"),
    ):
        found = discover(client, "--source", "dht", "--all", "--no-probe", "--bootstrap", contact)
        assert [c["url"] for c in found] == [url], (client.hostname, found)
