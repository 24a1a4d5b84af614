"""phase-discover's auto mode on a namespace LAN with real ``plasmd serve`` providers, a DHT
bootstrap given: a fitting LAN provider wins; a LAN that answers only with another arch is
refused and the DHT's provider is used (needs root).

Outcomes only: whether the DHT lookup starts at all, and when the LAN is judged quiet, depend on
how fast the responder answers, so they are asserted with controlled sources in
tests/test_discover_rank.py, not here under whatever load the machine has.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .netns import Lan, Node
from .provider_helpers import serve_in_node, write_random

pytestmark = [pytest.mark.netns, pytest.mark.slow]

DHT_PORT = 4001


def serve(node: Node, artifacts: Path, state: Path, combo: str, *extra: str) -> None:
    """``plasmd serve`` in ``node``, waiting until ``combo`` is in the DHT (and on mDNS)."""
    serve_in_node(node, artifacts, state, combo, *extra, dht_port=DHT_PORT)


@dataclass
class Site:
    lan: Lan
    lanprov: Node  # stable/arm64 on mDNS and the DHT
    wanprov: Node  # stable/x86_64 on the DHT only (--no-mdns)
    client: Node


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("discover-auto")
    for tree, combo in (("lan-art", "stable/arm64"), ("wan-art", "stable/x86_64")):
        write_random(tmp / tree / combo / "vmlinuz", 1 << 16, seed=len(combo))
        (tmp / tree / combo / "version").write_text("2025.11.26\n")
    with Lan(prefix="pda") as lan:
        lanprov, wanprov, client = (lan.add_node(n) for n in ("lanprov", "wanprov", "client"))
        serve(lanprov, tmp / "lan-art", tmp / "state-lan", "stable/arm64")
        serve(
            wanprov,
            tmp / "wan-art",
            tmp / "state-wan",
            "stable/x86_64",
            "--no-mdns",
            *("--bootstrap", f"{lanprov.address}:{DHT_PORT}"),
        )
        yield Site(lan, lanprov, wanprov, client)


def discover(site: Site, arch: str) -> subprocess.CompletedProcess[str]:
    argv = site.client.python(
        *("discover", "--arch", arch, "--bootstrap", f"{site.lanprov.address}:{DHT_PORT}", "-v")
    )
    result = site.client.run(argv, timeout=60)
    assert result.returncode == 0, result.stderr
    return result


def test_a_fitting_lan_provider_wins_with_a_dht_bootstrap_given(site: Site) -> None:
    result = discover(site, "arm64")
    assert result.stdout == f"http://{site.lanprov.address}:8080/stable/arm64/manifest.json\n"
    assert re.search(r"found 1 provider\(s\) of stable/arm64 via mdns", result.stderr)


def test_a_lan_answering_another_arch_lets_the_dht_answer(site: Site) -> None:
    # lanprov answers on mDNS, but with arm64 only: resolved, refused; the DHT's record of
    # wanprov (published through lanprov's DHT node) is the answer, probed like any other.
    result = discover(site, "x86_64")
    assert result.stdout == f"http://{site.wanprov.address}:8080/stable/x86_64/manifest.json\n"
    assert re.search(r"found 1 provider\(s\) of stable/x86_64 via dht", result.stderr)
