"""The whole boot on an IPv6-only LAN: no IPv4 address anywhere, no DHCP server.

    hub namespace:  bridge ── tap ── QEMU (Debian's kernel + our initramfs, TCG)
                       ├── veth ── router  router advertisements for fd00:213:<n>::/64 (SLAAC)
                       └── veth ── prov1   plasmd serve --bind :: (HTTP, mDNS)

The VM's command line names no provider and no address: the kernel configures an address from
the router advertisement (SLAAC); phase-boot finds the provider by mDNS (AAAA) on the link
while stage 1 still waits for an address (at its link-local address, docs/boot.md), or once
it has one, at its ULA; through the DHT it waits for the SLAAC address. phase-fetch
downloads over IPv6, kexec-boot hands off, stage 2 prints its marker.
The images are the e2e's (``tests/test_e2e_qemu.py``); the LAN is ``tests/netns.py``'s.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from . import test_e2e_qemu
from .netns import Lan, discovered_url, network_up
from .test_boot_lan import STAGE2_CMDLINE, lan_images
from .test_e2e_qemu import BOOT_DEADLINE, sh, terminate, wait_for

pytestmark = [pytest.mark.qemu, pytest.mark.netns, pytest.mark.slow]

images = test_e2e_qemu.images
__all__ = ["images", "lan_images"]  # module fixtures, built once here too

HTTP_PORT = 8080
DHT_PORT = 4001
START_TIMEOUT = 120.0


def boot_ipv6_only(
    built: dict[str, Path], work: Path, serve_args: tuple[str, ...], phase_args: str, ready: str
) -> tuple[str, str]:
    """The LAN of the module docstring, the provider started with ``serve_args`` and ready once
    its log says ``ready``, then the VM with ``phase_args`` (``{provider}`` in them: the
    provider's ULA address): (serial console, that address) once stage 2 has printed its
    command line."""
    with Lan(prefix="p6b") as lan:
        node = lan.add_node("prov1", ipv4=False, ipv6=True)
        # The provider keeps only its static ULA: with a SLAAC address beside it, which of the
        # two its mDNS URL names depends on when the router's advertisement arrives.
        done = node.run(["sh", "-c", "echo 0 > /proc/sys/net/ipv6/conf/eth0/autoconf"])
        assert done.returncode == 0, done.stderr
        router = lan.add_node("router", ipv4=False, ipv6=True)
        lan.advertise_prefix(router)
        log = work / "prov1.log"
        with log.open("wb") as out:
            provider = node.popen(
                node.python(
                    *("plasmd", "serve", "--artifacts", str(built["art"])),
                    *("--port", str(HTTP_PORT), "--key", str(built["key"])),
                    *("--state-dir", str(work / "state"), "--bind", "::", *serve_args),
                ),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for(log, ready, provider, time.monotonic() + START_TIMEOUT)

        tap = f"tap{lan.suffix}0"
        sh("ip", "-n", lan.hub, "tuntap", "add", "dev", tap, "mode", "tap")
        sh("ip", "-n", lan.hub, "link", "set", tap, "master", lan.segments[0].bridge, "up")
        serial = work / "serial.log"
        extra = phase_args.format(provider=node.address6)
        cmdline = (
            f"console=ttyS0 panic=-1 cryptomgr.notests phase.arch=x86_64 phase.timeout=5 {extra}"
        )
        with serial.open("wb") as out:
            qemu = subprocess.Popen(
                [
                    *("ip", "netns", "exec", lan.hub, "qemu-system-x86_64", "-accel", "tcg"),
                    *("-cpu", "max", "-m", "1024", "-smp", "1", "-display", "none"),
                    *("-no-reboot", "-monitor", "none", "-serial", f"file:{serial}"),
                    *("-kernel", str(built["kernel"]), "-initrd", str(built["stage1"])),
                    *("-append", cmdline.strip()),
                    *("-netdev", f"tap,id=lan,ifname={tap},script=no,downscript=no"),
                    *("-device", "virtio-net-pci,netdev=lan,mac=52:54:00:12:36:56"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            text = wait_for(
                serial, r"PHASE-STAGE2-CMDLINE .*\n", qemu, time.monotonic() + BOOT_DEADLINE
            )
        finally:
            terminate(qemu)
            terminate(provider)
            subprocess.run(["ip", "-n", lan.hub, "link", "del", tap], capture_output=True)
        prefix = lan.segments[0].prefix6.split("::", 1)[0]
        # SLAAC: an address in the advertised prefix, none from DHCP (there is no server); or
        # the link first
        assert re.search(network_up(rf"{prefix}:[0-9a-f:]+"), text), text
        assert node.address6 is not None
        return text, node.address6


def assert_booted(text: str, url: str, source: str) -> None:
    url = discovered_url(url)
    assert re.search(rf"phase: discovered {url} via {source} \(version ", text), text
    assert re.search(rf"phase: fetching {url}", text), text
    assert re.search(r"INFO kernel: \d+ bytes verified", text), text
    assert "kexec-boot: kernel loaded; kexec -e" in text, text
    assert text.index("kexec -e") < text.index("PHASE-STAGE2-OK"), text
    line = re.search(r"PHASE-STAGE2-CMDLINE (.*)", text)
    assert line is not None and line.group(1).startswith(STAGE2_CMDLINE + " "), text


def test_vm_boots_on_an_ipv6_only_lan_by_slaac_and_mdns(
    lan_images: dict[str, Path], tmp_path: Path
) -> None:
    text, address = boot_ipv6_only(
        lan_images, tmp_path, ("--no-dht",), "", "mDNS: advertising stable/x86_64"
    )
    url = f"http://[{address}]:{HTTP_PORT}/stable/x86_64/manifest.json"
    assert_booted(text, url, "mdns")


def test_vm_boots_on_an_ipv6_only_lan_through_the_dht(
    lan_images: dict[str, Path], tmp_path: Path
) -> None:
    """No mDNS at all: the VM's phase.bootstrap names the provider's DHT node by its ULA."""
    text, address = boot_ipv6_only(
        lan_images,
        tmp_path,
        ("--no-mdns", "--dht-port", str(DHT_PORT)),
        f"phase.bootstrap=[{{provider}}]:{DHT_PORT}",
        r"DHT: (published stable/x86_64|stable/x86_64 held only)",
    )
    url = f"http://[{address}]:{HTTP_PORT}/stable/x86_64/manifest.json"
    assert_booted(text, url, "dht")
    assert f"phase: discovered {url} via dht" in text, text  # DHT records are never link-local
    # No answer on the link (no mDNS): the boot waited for the SLAAC address.
    assert "phase: nobody answered on the link yet: waiting for DHCP" in text, text
    assert re.search(r"phase: network up: eth0 fd00:213:", text), text
