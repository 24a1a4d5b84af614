"""Stage 1's network bring-up (``net_up`` of ``initramfs/init``) on IPv6 LANs, run by busybox sh
in a network namespace (``tests/netns.py``): the function as the initramfs has it, cut out of
the script, with ``say`` printing and DHCPv4 answered by nobody (a stand-in ``udhcpc`` that
fails at once instead of after 8 s of unanswered discovers: an IPv6-only LAN has no server).

- a global (here unique-local, as SLAAC would give) IPv6 address is "network up";
- with only a link-local address, ``phase.ip=`` with an IPv6 prefix is applied;
- without it, the link-local address is enough (mDNS and a provider on the link);
- an IPv6 address still in duplicate address detection is waited for, not taken.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netns import REPO, Lan, Node, describe

pytestmark = pytest.mark.netns

BUSYBOX = shutil.which("busybox")


def function(script: str, name: str) -> str:
    """The shell function ``name() { ... }`` of ``script``, through its closing ``}`` line."""
    match = re.search(rf"^{name}\(\) \{{\n.*?^\}}\n", script, re.S | re.M)
    assert match, f"no {name}() in initramfs/init"
    return match.group(0)


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert BUSYBOX, "busybox is needed (the initramfs runs on it)"
    init = (REPO / "initramfs" / "init").read_text()
    work = tmp_path_factory.mktemp("net_up")
    bin_dir = work / "bin"
    bin_dir.mkdir()
    for applet in ("ip", "awk", "head", "tr", "cat", "sleep", "printf"):
        (bin_dir / applet).symlink_to(BUSYBOX)
    (bin_dir / "udhcpc").write_text("#!/bin/sh\nexit 1\n")  # no DHCPv4 server on the LAN
    (bin_dir / "udhcpc").chmod(0o755)
    names = ("ethernet_ifaces", "ipv6_addr", "quick_dad", "net_up")
    body = "\n".join(function(init, name) for name in names)
    script = work / "net_up.sh"
    script.write_text(
        f"PATH={bin_dir}\nLOG=/dev/null\n"
        'say() { printf "phase: %s\\n" "$*"; }\n'
        f"{body}\n"
        'STATIC_IP="$1" STATIC_GW="$2" STATIC_DNS=""\n'
        "net_up\n"
    )
    return script


@pytest.fixture
def lan() -> Iterator[Lan]:
    with Lan(prefix="p6i") as network:
        yield network


def net_up(node: Node, script: Path, static_ip: str = "", gw: str = "") -> str:
    result = node.run([str(BUSYBOX), "sh", str(script), static_ip, gw], timeout=120)
    assert result.returncode == 0, describe(result)
    return result.stdout


def test_a_global_ipv6_address_is_network_up(lan: Lan, harness: Path) -> None:
    node = lan.add_node("boot", ipv4=False, ipv6=True)
    assert net_up(node, harness) == f"phase: network up: eth0 {node.address6}\n"


def test_phase_ip_takes_an_ipv6_prefix(lan: Lan, harness: Path) -> None:
    node = lan.add_node("boot", ipv4=False, ipv6=False)  # link-local only: no router
    out = net_up(node, harness, "fd00:213:99::7/64", "fd00:213:99::1")
    assert out == (
        "phase: static address fd00:213:99::7/64 on eth0\nphase: network up: eth0 fd00:213:99::7\n"
    )
    route = node.run(["ip", "-6", "route", "show", "default"], timeout=30)
    assert "default via fd00:213:99::1 dev eth0" in route.stdout, describe(route)


def test_link_local_only_is_enough(lan: Lan, harness: Path) -> None:
    node = lan.add_node("boot", ipv4=False, ipv6=False)
    expected = f"phase: network up: eth0 {node.link_local()} (link-local only)\n"
    assert net_up(node, harness) == expected


def test_a_tentative_address_is_waited_for(lan: Lan, harness: Path) -> None:
    node = lan.add_node("boot", ipv4=False, ipv6=False)
    # The address SLAAC would add, still in duplicate address detection (~1 s).
    subprocess.run(
        ["ip", "netns", "exec", node.netns, "sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=1"],
        check=True,
        timeout=30,
    )
    node.run(["ip", "addr", "add", "fd00:213:98::9/64", "dev", "eth0"], timeout=30)
    tentative = node.run(["ip", "-6", "-o", "addr", "show", "dev", "eth0", "tentative"], 30)
    assert "fd00:213:98::9" in tentative.stdout, describe(tentative)
    assert net_up(node, harness) == "phase: network up: eth0 fd00:213:98::9\n"


def test_duplicate_address_detection_is_made_quick_before_the_link_comes_up(
    lan: Lan, harness: Path
) -> None:
    """One probe at once (no random 0-1 s delay) and 100 ms of listening for an answer."""
    node = lan.add_node("boot", ipv4=False, ipv6=False)
    net_up(node, harness)
    for knob, value in (
        ("conf/eth0/router_solicitation_delay", "0"),
        ("neigh/eth0/retrans_time_ms", "100"),
    ):
        read = node.run(["cat", f"/proc/sys/net/ipv6/{knob}"], timeout=30)
        assert read.stdout.strip() == value, describe(read)
