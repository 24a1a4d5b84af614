"""The real OS through the whole chain (issue 13).

``assert_booted_the_os`` is what a machine's serial console shows when stage 1 (Debian's cloud
kernel + our initramfs) got an address by DHCP, discovered the provider by mDNS, fetched and
verified the kernel, the image's initramfs and its 120 MB squashfs rootfs, and kexec-boot handed
them to the generic Debian kernel with the rootfs carried in the initrd; the image's early
userspace mounted it under a tmpfs overlay, systemd reached multi-user.target, and
phase-os-up.service printed ``PHASE-OS-UP state=running ...`` with the version stage 1 booted.
tests/test_os_self_hosting.py boots three machines that way on a namespace LAN (the first from
``plasmd serve --artifacts build/os``), and ``make demo`` (tests/test_boot_lan.py) one more.

The negative here runs on QEMU's user network: a provider whose rootfs is not the signed one
(same size, one byte differs) is refused by stage 1, which retries and never kexecs.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from . import test_e2e_qemu, test_os_image
from .netns import discovered_url
from .test_e2e_qemu import artifacts_dir, boot, sh, static_server, terminate, wait_for
from .test_os_image import console_line

pytestmark = [pytest.mark.qemu, pytest.mark.netns, pytest.mark.slow]

images = test_e2e_qemu.images
OS_ARTIFACTS = test_os_image.IMAGE.parent.parent  # build/os: <channel>/<arch>/ below
MEMORY = 2048  # MiB; docs/boot.md has the smallest that works, measured
CHAIN_DEADLINE = 900  # seconds to PHASE-OS-UP; ~75 s on an idle 2-core machine under TCG


def assert_booted_the_os(
    log: str, image: dict[str, Any], manifest_url: str, via: str = "mdns"
) -> None:
    """The serial console of one machine booted through the whole chain: stage 1 found
    ``manifest_url`` (by ``via``, a regex: mdns, dht), verified all three artifacts, staged
    them and kexec'd; the image's initramfs found the carried rootfs and checked it; systemd
    came up."""
    found = rf"phase: discovered {discovered_url(manifest_url)} via {via} \(version "
    assert re.search(found + re.escape(image["version"]) + r"\)", log), log
    for name in ("kernel", "initramfs", "rootfs"):
        assert re.search(rf"INFO {name}: \d+ bytes verified", log), (name, log)
    sha = image["files"]["rootfs.sqfs"]["sha256"]
    assert "kexec-boot: kernel loaded; kexec -e" in log, log
    loading = re.search(r"kexec-boot: loading .* command line: (.*)", log)
    assert loading is not None, log
    words = loading.group(1).split()
    # The signed cmdline (phase.version=) and the rootfs's signed hash, each once.
    assert words[:2] == [f"phase.version={image['version']}", f"phase.rootfs_sha256={sha}"], words
    assert [w for w in words if w.startswith(("phase.version=", "phase.rootfs"))] == words[:2]
    assert "phase-os: root filesystem sha256 matches phase.rootfs_sha256" in log, log
    assert "phase-os: root filesystem mounted (squashfs under a tmpfs overlay)" in log, log
    assert "PHASE-OS-TARGET multi-user.target=active" in log, log
    assert console_line(log, "PHASE-OS-UP ") == (
        f"PHASE-OS-UP state=running kernel={image['kernel']} root=overlay "
        f"version={image['version']}"
    ), log
    assert log.index("kexec -e") < log.index("phase-os: kernel ") < log.index("PHASE-OS-UP")
    # The booted system got its own address on the LAN from the same DHCP server.
    assert re.search(r"(?:^|login: )PHASE-OS-NET .*en\w+=10\.213\.\d+\.1\d\d/24", log, re.M), log
    assert "Kernel panic" not in log
    sys.stderr.write(f"\nchain: {console_line(log, 'PHASE-OS-TIME ') or 'no systemd-analyze'}\n")


def test_a_rootfs_not_the_signed_one_is_never_booted(
    images: dict[str, Path], tmp_path: Path
) -> None:
    """The manifest is valid and names a rootfs; the server's rootfs.sqfs has the signed size
    but one byte differs. Stage 1 refuses it (only the sha256 can tell), retries, never
    reaches kexec-boot."""
    root = tmp_path / "www"
    combo = artifacts_dir(root, images)
    rootfs = bytearray(os.urandom(1 << 20))
    (combo / "rootfs.sqfs").write_bytes(bytes(rootfs))
    sh(
        *(sys.executable, "-m", "phase_client", "plasmd", "manifest", "generate"),
        *("--artifacts", str(root), "--channel", "stable", "--arch", "x86_64"),
        *("--key", str(images["key"]), "--output", str(combo / "manifest.json")),
    )
    signed = hashlib.sha256(rootfs).hexdigest()
    assert signed in (combo / "manifest.json").read_text()
    rootfs[len(rootfs) // 2] ^= 0xFF
    (combo / "rootfs.sqfs").write_bytes(bytes(rootfs))
    serial = tmp_path / "serial.log"
    with static_server(root) as port:
        qemu = boot(images, port, serial)
        try:
            log = wait_for(
                serial, r"attempt 2 failed; retrying", qemu, time.monotonic() + CHAIN_DEADLINE
            )
            assert qemu.poll() is None, "PID 1 must keep running after a failed fetch"
        finally:
            terminate(qemu)
    assert re.search(r"INFO Verified manifest stable/x86_64", log), log
    assert re.search(r"rootfs.*(sha256|integrity|mismatch|does not match)", log, re.I), log
    assert "phase: attempt 1 failed; retrying in 2s" in log, log
    assert "kexec-boot" not in log and "phase-os:" not in log, log
