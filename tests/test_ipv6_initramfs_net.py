"""Stage 1's network bring-up (``net_up`` of ``initramfs/init``) on IPv6 LANs, run by busybox sh
in a network namespace (``tests/netns.py``): the function as the initramfs has it, cut out of
the script, with ``say`` printing and DHCPv4 answered by nobody (a stand-in ``udhcpc`` that
fails at once instead of after 8 s of unanswered discovers: an IPv6-only LAN has no server).

- a global (here unique-local, as SLAAC would give) IPv6 address is "network up";
- with only a link-local address, ``phase.ip=`` with an IPv6 prefix is applied;
- without it, the link-local address is enough (mDNS and a provider on the link);
- an IPv6 address still in duplicate address detection is waited for, not taken;
- with a global IPv6 address, a DHCPv4 lease is waited for only ``DHCP4_AFTER_SLAAC`` seconds
  (a stand-in ``udhcpc`` that never gets an answer: the boot goes on while it still runs).
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


def write_harness(work: Path, udhcpc: str) -> Path:
    """``net_up`` and the functions it calls, cut out of the init, with ``udhcpc`` (a shell
    script's body) standing in for busybox's DHCPv4 client."""
    assert BUSYBOX, "busybox is needed (the initramfs runs on it)"
    init = (REPO / "initramfs" / "init").read_text()
    bin_dir = work / "bin"
    bin_dir.mkdir()
    for applet in ("ip", "awk", "head", "tr", "cat", "sleep", "printf"):
        (bin_dir / applet).symlink_to(BUSYBOX)
    (bin_dir / "udhcpc").write_text(f"#!{BUSYBOX} sh\n{udhcpc}\n")
    (bin_dir / "udhcpc").chmod(0o755)
    names = ("ethernet_ifaces", "ipv6_addr", "wait_for_leases", "quick_dad")
    # The stand-in by its path: busybox sh runs its own applet before any file named udhcpc on
    # PATH (a shell function of that name, run in the background, would keep the test's pipe
    # open: busybox sh does not apply its redirection).
    up = function(init, "net_up").replace(" udhcpc -i ", f" {bin_dir / 'udhcpc'} -i ")
    assert str(bin_dir) in up, "net_up no longer starts udhcpc -i"
    body = "\n".join([*(function(init, name) for name in names), up])
    script = work / "net_up.sh"
    script.write_text(
        f"PATH={bin_dir}\nLOG=/dev/null\nDHCP4_AFTER_SLAAC=1\n"
        'say() { printf "phase: %s\\n" "$*"; }\n'
        f"{body}\n"
        'STATIC_IP="$1" STATIC_GW="$2" STATIC_DNS=""\n'
        "net_up\n"
    )
    return script


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A DHCPv4 client that gives up at once: the IPv6 paths without the 8 s of discovers.
    return write_harness(tmp_path_factory.mktemp("net_up"), "exit 1")


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


def test_a_slaac_address_ends_the_wait_for_a_dhcpv4_lease(lan: Lan, tmp_path: Path) -> None:
    """An IPv6-only LAN: nobody answers DHCPv4, and udhcpc would send discovers for 8 s. Once
    the interface has a global address, the lease is waited for DHCP4_AFTER_SLAAC s (1 here)
    and no longer: net_up says so and returns while udhcpc still runs in the background. The
    stand-in udhcpc runs until the test lets it end (30 s at most), and says if it ended on its
    own: without the watcher, net_up would wait for it."""
    stop, ended = tmp_path / "stop", tmp_path / "ended"
    udhcpc = (
        f"i=0; while [ $i -lt 300 ]; do [ -e {stop} ] && exit 1; sleep 0.1; i=$((i + 1)); done\n"
        f": >{ended}\nexit 1"
    )
    harness = write_harness(tmp_path, udhcpc)
    node = lan.add_node("boot", ipv4=False, ipv6=True)
    try:
        out = net_up(node, harness)
        assert not ended.exists(), "net_up waited for udhcpc's own end"
    finally:
        stop.touch()
    assert out == (
        "phase: no DHCPv4 lease after 1s; going on with IPv6 (DHCP goes on trying)\n"
        f"phase: network up: eth0 {node.address6}\n"
    )
