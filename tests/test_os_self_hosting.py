"""Self-hosting (issue 14): a machine that booted the OS serves it to the next ones. u-root's
server-VM/client-VM pattern, on a namespace LAN and a second LAN routed behind it:

    LAN 1:  bridge ── tap0 ── VM1 (stage 1 → the OS, then plasmd.service in mirror mode)
               ├── tap1 ── VM2 (stage 1 → the OS, powers off)
               ├── veth ── prov1  plasmd serve --artifacts build/os (mDNS + DHT, the key)
               └── veth ── router  busybox udhcpd on both LANs, IPv4 forwarding
    LAN 2:  bridge ── tap2 ── VM3 (stage 1 → the OS, powers off), and the router's eth1

VM1 boots from prov1 (found by mDNS; its DHT node joins through prov1, phase.bootstrap=) and
comes up serving what stage 1 carried across kexec: the signed manifest and every artifact
(/run/phase/mirror). prov1 is then killed (-9). Two machines with nothing but the stick boot
at the same time: VM2 on LAN 1 finds VM1 by mDNS; VM3 on LAN 2, where no mDNS from LAN 1
arrives, is given only VM1 as a DHT bootstrap node and finds VM1's provider record. Both
fetch, verify (the same signed manifest, byte for byte: VM1 holds no signing key) and boot the
same image. Everything runs under TCG on 2 cores; VM1 keeps running while VM2 and VM3 boot.
"""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from . import test_e2e_qemu, test_os_image
from .netns import discovered_url
from .test_boot_lan import BootLan, lan  # noqa: F401 (the LAN fixture)
from .test_e2e_qemu import terminate, wait_for
from .test_os_boot_chain import CHAIN_DEADLINE, MEMORY, OS_ARTIFACTS, assert_booted_the_os
from .test_os_image import console_line

pytestmark = [pytest.mark.qemu, pytest.mark.netns, pytest.mark.slow]

images = test_e2e_qemu.images
image = test_os_image.image


def verified_line(log: str) -> str:
    """Stage 1's 'Verified manifest ...' line without its source URL and timestamp."""
    found = re.search(r"INFO (Verified manifest stable/x86_64 .*?) from http://", log)
    assert found is not None, log
    return found.group(1)


def test_a_booted_machine_serves_the_next_ones(
    lan: BootLan,  # noqa: F811
    images: dict[str, Path],
    image: dict[str, Any],
    tmp_path: Path,
) -> None:
    built = {**images, "art": OS_ARTIFACTS}
    provider = lan.provider("prov1", built)
    assert provider.node.address is not None
    lan2 = lan.add_routed_segment()
    serial1, serial2, serial3 = (tmp_path / f"vm{n}.log" for n in (1, 2, 3))
    vm1 = lan.boot(built, serial1, f"phase.bootstrap={provider.node.address}:4001", MEMORY)
    # PHASE-OS-TIME: the last line phase-os-up prints.
    log1 = wait_for(serial1, r"PHASE-OS-TIME .*\n", vm1, time.monotonic() + CHAIN_DEADLINE)
    # prov1 answers both by mDNS and in the DHT (VM1 has its node as phase.bootstrap=).
    assert_booted_the_os(log1, image, provider.manifest_url, via="(mdns|dht)")
    assert re.search(r"(?:^|login: )PHASE-OS-SERVE plasmd=active", log1, re.M), log1
    address = re.search(r"(?:^|login: )PHASE-OS-NET .*en\w+=(10\.213\.\d+\.\d+)/24", log1, re.M)
    assert address is not None, log1
    vm1_host = address.group(1)
    vm1_url = f"http://{vm1_host}:8080/stable/x86_64/manifest.json"

    # VM1's /status: it serves the image it booted, as a mirror.
    offered = json.loads(http_get(lan, f"http://{vm1_host}:8080/status"))["offered"]
    assert [(o["channel"], o["arch"], o["version"], o["mirror"]) for o in offered] == [
        ("stable", "x86_64", image["version"], True)
    ], offered

    # The original provider is gone for good; VM2 and VM3 have nothing but the stick.
    provider.proc.send_signal(signal.SIGKILL)
    provider.proc.wait(timeout=30)
    vm2 = lan.boot(built, serial2, "phase.test=poweroff", MEMORY)
    vm3 = lan.boot(
        built, serial3, f"phase.test=poweroff phase.bootstrap={vm1_host}:4001", MEMORY, lan2
    )
    try:
        deadline = time.monotonic() + CHAIN_DEADLINE
        log2 = wait_for(serial2, r"PHASE-OS-TIME .*\n", vm2, deadline)
        log3 = wait_for(serial3, r"PHASE-OS-TIME .*\n", vm3, deadline)
        assert vm1.poll() is None, "VM1 must keep running (it is the provider now)"
    finally:
        terminate(vm2)
        terminate(vm3)
    version = re.escape(image["version"])
    found = rf"phase: discovered {discovered_url(vm1_url)} via mdns \(version {version}\)"
    assert re.search(found, log2), log2
    assert f"phase: discovered {vm1_url} via dht (version {image['version']})" in log3, log3
    assert "via mdns" not in log3, log3  # LAN 2 hears no mDNS from LAN 1
    for log in (log2, log3):
        # The dead origin's record may still be in the DHT (killed, its TTL not over): the
        # probe may name it while skipping it, but nothing is ever fetched from it.
        assert not re.search(rf"phase: discovered {provider.found_url}", log), log
        assert not re.search(rf"phase: fetching {provider.found_url}", log), log
        # The same signed manifest (version, sequence, signer) VM1 booted, then the same OS.
        assert verified_line(log) == verified_line(log1), (log1, log)
        assert console_line(log, "PHASE-OS-UP ") == (
            f"PHASE-OS-UP state=running kernel={image['kernel']} root=overlay "
            f"version={image['version']}"
        ), log
    assert "Kernel panic" not in log1 + log2 + log3


def http_get(lan: BootLan, url: str) -> str:  # noqa: F811
    """GET from inside the LAN (the router's namespace), like a machine there would."""
    result = lan.router.run(
        ["python3", "-c", "import sys, urllib.request; "
         "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=30).read().decode())",
         url],
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout
