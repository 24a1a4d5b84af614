"""The real OS on arm64 through the whole chain (issue 16): ``plasmd image build --arch arm64``
on this x86_64 host, then an arm64 machine boots it.

The image is built as a user builds it (docs/os-image.md): mmdebstrap --arch=arm64 runs the
arm64 packages' scripts under qemu-user-static, through a binfmt_misc handler; where none is
registered, this fixture registers Debian's (``systemd-binfmt``) for the build and removes it
after. The result is cached in build/os/stable/arm64 by its inputs, like x86_64's.

Then test_boot_lan's namespace LAN: ``plasmd serve --artifacts build/os`` offers it by mDNS,
and a ``qemu-system-aarch64 -M virt`` machine (TCG, 2 GiB) with Debian's arm64 cloud kernel and
our arm64 stage 1 gets an address by DHCP, discovers the provider, fetches and verifies the
kernel, the image's initramfs and its squashfs root, and kexecs Debian's generic arm64 kernel;
the image mounts the root it carried, systemd reaches multi-user.target and phase-os-up.service
says ``PHASE-OS-UP state=running`` on ttyAMA0 (the same assertions as x86_64's chain boot).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from . import test_arm64_boot, test_e2e_qemu
from .test_arm64_boot import boot_arm64
from .test_boot_lan import BootLan, lan  # noqa: F401 (the LAN fixture)
from .test_e2e_qemu import terminate, wait_for
from .test_os_boot_chain import CHAIN_DEADLINE, MEMORY, OS_ARTIFACTS, assert_booted_the_os
from .test_os_image import build_image

pytestmark = [pytest.mark.qemu, pytest.mark.netns, pytest.mark.slow]

images = test_e2e_qemu.images
arm64_images = test_arm64_boot.arm64_images

IMAGE = OS_ARTIFACTS / "stable" / "arm64"
BINFMT = Path("/proc/sys/fs/binfmt_misc")
HANDLER = "qemu-aarch64"
HTTP_PORT = test_arm64_boot.HTTP_PORT


def binfmt_enabled() -> bool:
    try:
        return (BINFMT / HANDLER).read_text().splitlines()[0] == "enabled"
    except (OSError, IndexError):
        return False


@pytest.fixture(scope="module")
def binfmt_handler() -> Iterator[None]:
    """Debian's qemu-aarch64 binfmt handler, registered for the build when it is not already
    (and removed after, leaving the machine as it was)."""
    if binfmt_enabled():
        yield
        return
    for tool in ("qemu-aarch64-static", "arch-test"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} missing: run scripts/install-deps (qemu-user-static arch-test)")
    if not (BINFMT / "register").exists():
        subprocess.run(
            ["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)],
            check=True,
            capture_output=True,
            timeout=30,
        )
    conf = Path(f"/usr/lib/binfmt.d/{HANDLER}.conf")
    subprocess.run(
        ["/usr/lib/systemd/systemd-binfmt", str(conf)], check=True, capture_output=True, timeout=30
    )
    assert binfmt_enabled(), f"systemd-binfmt {conf} registered no {HANDLER} handler"
    try:
        yield
    finally:
        (BINFMT / HANDLER).write_text("-1")


@pytest.fixture(scope="module")
def arm64_image(binfmt_handler: None) -> dict[str, Any]:
    """``plasmd image build --arch arm64`` (or the cached one); its summary."""
    return build_image(IMAGE, "--arch", "arm64")


def test_the_real_os_boots_on_arm64_through_the_chain(
    lan: BootLan,  # noqa: F811
    arm64_images: dict[str, Path],
    arm64_image: dict[str, Any],
    tmp_path: Path,
) -> None:
    assert arm64_image["arch"] == "arm64", arm64_image
    provider = lan.provider(
        "prov1", {**arm64_images, "art": OS_ARTIFACTS}, "--no-dht", arch="arm64"
    )
    url = f"http://{provider.node.address}:{HTTP_PORT}/stable/arm64/manifest.json"
    serial = tmp_path / "serial.log"
    started = time.monotonic()
    boot_arm64(lan, arm64_images, serial, memory=MEMORY)
    assert lan.qemu is not None
    try:
        log = wait_for(
            serial, r"PHASE-OS-TIME [^\n]*\n", lan.qemu, time.monotonic() + CHAIN_DEADLINE
        ).replace("\r", "")
    finally:
        terminate(lan.qemu)
    assert "-cloud-arm64," in log.split("phase: Phase Boot stage 1: ", 1)[1].split("\n", 1)[0]
    assert_booted_the_os(log, arm64_image, url)
    assert arm64_image["kernel"].endswith("-arm64"), arm64_image["kernel"]
    took = time.monotonic() - started
    sys.stderr.write(f"\narm64 chain: PHASE-OS-TIME {took:.0f} s after QEMU started\n")
