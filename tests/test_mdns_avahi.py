"""Avahi, an mDNS stack we did not write, against ours on a LAN of namespaces (tests/avahi.py:
Debian's avahi-daemon and avahi-utils, unpacked, not installed; a bus and a daemon per node).

- ``avahi-browse -r`` finds and resolves our provider's service (tests/mdns_provider_proc.py,
  the real ``MdnsAdvertiser``): its TXT, port, host name, and its IPv4 and IPv6 addresses, on a
  dual-stack LAN and on an IPv6-only one.
- ``phase-discover`` finds a provider that avahi publishes (``avahi-publish-service`` with our
  TXT), also in auto mode: avahi answers our one-shot QU question before the LAN is judged
  quiet (docs/bench-discover.md: 150 ms after the question), so a client on its LAN takes the
  LAN provider and never the DHT.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .avahi import Avahi, avahi_root
from .netns import Lan, Node, describe
from .test_mdns_netns import STABLE_ARM64, Provider

pytestmark = pytest.mark.netns

BROWSE_TIMEOUT = 30.0
SERVICE = "_phase-image._tcp"


@pytest.fixture(scope="module")
def root() -> Path:
    return avahi_root()


@pytest.fixture
def lan() -> Iterator[Lan]:
    with Lan() as network:
        yield network


def browse(avahi: Avahi, want: int) -> list[list[str]]:
    """``avahi-browse -rpk`` until ``want`` resolved entries are in (bounded): avahi-browse's
    parsable lines ``=;IF;PROTO;NAME;TYPE;DOMAIN;HOST;ADDRESS;PORT;TXT``, split."""
    deadline = time.monotonic() + BROWSE_TIMEOUT
    while True:
        result = avahi.run(["avahi-browse", "-rpkt", SERVICE], timeout=BROWSE_TIMEOUT)
        assert result.returncode == 0, describe(result)
        resolved = [line.split(";") for line in result.stdout.splitlines() if line[:1] == "="]
        if len(resolved) >= want or time.monotonic() > deadline:
            return resolved
        time.sleep(0.5)


@pytest.mark.parametrize("ipv4", [True, False], ids=["dual-stack", "ipv6-only"])
def test_avahi_browse_resolves_our_provider(
    lan: Lan, root: Path, tmp_path: Path, ipv4: bool
) -> None:
    prov = lan.add_node("prov1", ipv4=ipv4, ipv6=True)
    client = lan.add_node("client", ipv4=ipv4, ipv6=True)
    provider = Provider(prov)
    name = provider.command("start", STABLE_ARM64)["names"]["stable/arm64"]
    with Avahi(client, root, tmp_path) as avahi:
        resolved = browse(avahi, want=2 if ipv4 else 1)
    assert resolved, "avahi-browse resolved nothing"
    by_proto = {entry[2]: entry for entry in resolved if entry[1] == "eth0"}
    assert set(by_proto) == ({"IPv4", "IPv6"} if ipv4 else {"IPv6"}), resolved
    for entry in by_proto.values():
        assert entry[3] == name and entry[4] == SERVICE and entry[5] == "local", entry
        assert entry[6] == "prov1.local", entry
        assert entry[8] == "8080", entry
        # avahi-browse -r asks for the host's address in any protocol: one of those we announce
        # (IPv4, the unique-local and the link-local IPv6 address).
        assert entry[7] in {prov.address, prov.address6, prov.link_local()} - {None}, entry
        txt = entry[9]
        for word in ('"txtvers=1"', '"channel=stable"', '"arch=arm64"', '"version=2025.11.26"'):
            assert word in txt, txt
        host = f"[{prov.address6}]" if not ipv4 else prov.address
        assert f'"manifest=http://{host}:8080/stable/arm64/manifest.json"' in txt, txt


def publish(avahi: Avahi, name: str, url: str) -> None:
    """``avahi-publish-service`` with our TXT, until it says the name is established (its
    probing over, RFC 6762 8.1): it stays running, and stops with the daemon."""
    txt = ["txtvers=1", "channel=stable", "arch=arm64", f"manifest={url}", "version=7"]
    out = avahi.work / "publish.log"
    with out.open("wb") as log:
        proc = avahi.popen(
            ["avahi-publish-service", name, SERVICE, "8080", *txt], stdout=log, stderr=log
        )
    deadline = time.monotonic() + BROWSE_TIMEOUT
    while f"Established under name '{name}'" not in out.read_text(errors="replace"):
        assert proc.poll() is None, out.read_text(errors="replace")
        assert time.monotonic() < deadline, out.read_text(errors="replace")
        time.sleep(0.05)


QUIET = "mDNS: no answer 150 ms after the question"


def discover(client: Node, source: str, timeout: float) -> subprocess.CompletedProcess[str]:
    argv = client.python("discover", "--source", source, "--no-probe", "--json", "-v")
    return client.run([*argv, "--arch", "arm64", "--timeout", str(timeout)], timeout=60)


@pytest.mark.parametrize(
    ("source", "ipv4"),
    [("mdns", True), ("auto", True), ("mdns", False)],
    ids=["mdns", "auto", "mdns-ipv6-only"],
)
def test_phase_discover_finds_an_avahi_published_provider(
    lan: Lan, root: Path, tmp_path: Path, source: str, ipv4: bool
) -> None:
    """In auto mode the LAN is judged quiet 150 ms after our QU question when nothing answered
    (the DHT's answer may then be taken): avahi's answer (for a service it announced moments
    before, so by unicast at once) comes before that, so the LAN is not judged quiet while
    avahi has a provider on it. Without one it is (the control). On an IPv6-only LAN the
    provider is found at its IPv6 address."""
    prov = lan.add_node("prov1", ipv4=ipv4, ipv6=not ipv4)
    client = lan.add_node("client", ipv4=ipv4, ipv6=not ipv4)
    host = prov.address if ipv4 else f"[{prov.address6}]"
    url = f"http://{host}:8080/stable/arm64/manifest.json"
    with Avahi(prov, root, tmp_path) as avahi:
        if source == "auto":
            nothing = discover(client, source, timeout=1)
            assert nothing.returncode == 3, describe(nothing)
            assert QUIET in nothing.stderr, describe(nothing)
        publish(avahi, "phase-stable-arm64", url)
        result = discover(client, source, timeout=5)
    assert result.returncode == 0, describe(result)
    assert QUIET not in result.stderr, describe(result)
    (found,) = json.loads(result.stdout)["providers"]
    assert found["source"] == "mdns", found
    assert found["url"] == url and found["version"] == "7", found
    assert found["host"] == "prov1.local", found
    assert (prov.address if ipv4 else prov.address6) in found["addresses"], found
