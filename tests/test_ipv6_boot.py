"""The whole boot on an IPv6-only LAN: no IPv4 address anywhere, no DHCP server.

    hub namespace:  bridge ── tap ── QEMU (Debian's kernel + our initramfs, TCG)
                       ├── veth ── router  router advertisements for fd00:213:<n>::/64 (SLAAC)
                       └── veth ── prov1   plasmd serve --bind :: (HTTP, mDNS)

The VM's command line names no provider and no address: the kernel configures an address from
the router advertisement (SLAAC), stage 1 waits for it, phase-discover finds the provider by
mDNS (AAAA), phase-fetch downloads over IPv6, kexec-boot hands off, stage 2 prints its marker.
The images are the e2e's (``tests/test_e2e_qemu.py``); the LAN is ``tests/netns.py``'s.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from . import test_e2e_qemu
from .netns import Lan
from .test_boot_lan import STAGE2_CMDLINE, lan_images
from .test_e2e_qemu import BOOT_DEADLINE, sh, terminate, wait_for

pytestmark = [pytest.mark.qemu, pytest.mark.netns, pytest.mark.slow]

images = test_e2e_qemu.images
__all__ = ["images", "lan_images"]  # module fixtures, built once here too

HTTP_PORT = 8080
START_TIMEOUT = 120.0


def test_vm_boots_on_an_ipv6_only_lan_by_slaac_and_mdns(
    lan_images: dict[str, Path], tmp_path: Path
) -> None:
    with Lan(prefix="p6b") as lan:
        router = lan.add_node("router", ipv4=False, ipv6=True)
        lan.advertise_prefix(router)
        node = lan.add_node("prov1", ipv4=False, ipv6=True)
        log = tmp_path / "prov1.log"
        with log.open("wb") as out:
            provider = node.popen(
                node.python(
                    *("plasmd", "serve", "--artifacts", str(lan_images["art"])),
                    *("--port", str(HTTP_PORT), "--key", str(lan_images["key"])),
                    *("--state-dir", str(tmp_path / "state"), "--bind", "::", "--no-dht"),
                ),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        wait_for(log, "mDNS: advertising stable/x86_64", provider, deadline)

        tap = f"tap{lan.suffix}0"
        sh("ip", "-n", lan.hub, "tuntap", "add", "dev", tap, "mode", "tap")
        sh("ip", "-n", lan.hub, "link", "set", tap, "master", lan.segments[0].bridge, "up")
        serial = tmp_path / "serial.log"
        cmdline = "console=ttyS0 panic=-1 phase.arch=x86_64 phase.timeout=5"
        with serial.open("wb") as out:
            qemu = subprocess.Popen(
                [
                    *("ip", "netns", "exec", lan.hub, "qemu-system-x86_64", "-accel", "tcg"),
                    *("-cpu", "max", "-m", "1024", "-smp", "1", "-display", "none"),
                    *("-no-reboot", "-monitor", "none", "-serial", f"file:{serial}"),
                    *("-kernel", str(lan_images["kernel"]), "-initrd", str(lan_images["stage1"])),
                    *("-append", cmdline),
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
    # SLAAC: an address in the advertised prefix, none from DHCP (there is no server)
    assert re.search(rf"phase: network up: eth0 {prefix}:[0-9a-f:]+\n", text), text
    url = f"http://[{node.address6}]:{HTTP_PORT}/stable/x86_64/manifest.json"
    assert f"phase: discovered {url} via mdns (version " in text, text
    assert f"phase: fetching {url}" in text, text
    assert re.search(r"INFO kernel: \d+ bytes verified", text), text
    assert "kexec-boot: kernel loaded; kexec -e" in text, text
    assert text.index("kexec -e") < text.index("PHASE-STAGE2-OK"), text
    line = re.search(r"PHASE-STAGE2-CMDLINE (.*)", text)
    assert line is not None and line.group(1).startswith(STAGE2_CMDLINE + " "), text
