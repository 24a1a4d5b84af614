"""The arm64 USB stick (issue 16, docs/usb.md): `make usb ARCH=arm64`'s image, attached to
qemu-system-aarch64 (-M virt, TCG) as a USB mass-storage device on an xHCI controller, no
-kernel, booted by AAVMF (Debian's qemu-efi-aarch64) on test_boot_lan's namespace LAN where
`plasmd serve` offers stable/arm64 by mDNS:

- Secure Boot off (AAVMF_CODE.fd + AAVMF_VARS.fd): firmware -> shim -> Debian's signed GRUB ->
  Debian's signed generic arm64 kernel -> our arm64 initramfs -> DHCP, mDNS, verified fetch,
  kexec -> the arm64 stage-2 marker on ttyAMA0;
- Secure Boot on (AAVMF_VARS.ms.fd: Microsoft's keys enrolled, Secure Boot enabled): the same
  chain is accepted link by link (shimaa64.efi is signed by Microsoft's UEFI CA 2011), the kernel
  locks down, stage 1 fetches and verifies; then the kexec is refused: Debian bookworm's arm64
  kernel has no kexec_file_load (CONFIG_KEXEC_FILE is not set), the only call Secure Boot
  allows (lockdown and IMA's policy refuse kexec_load): kexec-boot says so in one line and does
  not try kexec_load. No stage 2 under Secure Boot on arm64 with this kernel (docs/usb.md).

The stick's initramfs is make usb-initramfs ARCH=arm64's (build/usb, cached by its inputs; it
trusts the development key build/boot/dev-key, which signs the provider's manifests here).
The image itself: layout, same inputs same bytes, the signed binaries' signers.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest

from . import test_usb
from .conftest import REPO
from .netns import discovered_url, network_up
from .test_e2e_qemu import sh, wait_for
from .test_usb import (
    AAVMF,
    DEBS,
    SCRIPTS,
    StickLan,
    build_stick,
    esp_files,
    partition,
    partition_bytes,
    partitions,
    require,
    run_until,
    stick_copy,
)

USB_BUILD = REPO / "build" / "usb"
KERNEL_DIR = USB_BUILD / "kernel-arm64"
DEV_KEY = REPO / "build" / "boot" / "dev-key" / "signing.key"
STAGE2_CMDLINE = "console=ttyAMA0 quiet phase.stage2=yes marker=usb-arm64-7c3e"
# Baked into the test sticks: no provider, no arch named (mDNS finds it; uname -m says arm64).
STICK_CMDLINE = "phase.timeout=5"
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
AAVMF_MS_VARS = AAVMF / "AAVMF_VARS.ms.fd"

lan = test_usb.lan


def make_usb_initramfs() -> None:
    """`make usb-initramfs ARCH=arm64`: Debian's signed generic arm64 kernel and our arm64
    stage 1 in build/usb (a cache hit takes seconds), trusting the development key."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"KEYS", "ROOT", "ARCH", "USB_CMDLINE", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"}
    }
    result = subprocess.run(
        ["make", "-s", "usb-initramfs", "ARCH=arm64"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr + result.stdout


@pytest.fixture(scope="module")
def arm64_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The arm64 stick (make usb-initramfs's products + scripts/build-usb.sh --arch arm64), the
    arm64 marker stage 2, and a provider's artifacts: stable/arm64 is Debian's signed generic
    arm64 kernel (its vmlinuz: an uncompressed, signed EFI-stub Image) with the marker
    initramfs; stable/x86_64 a stand-in (one provider, two arches: the machine takes its own)."""
    require(("qemu-system-aarch64", "sfdisk", "mformat", "make"), AAVMF_MS_VARS, "qemu-efi-aarch64")
    work = tmp_path_factory.mktemp("usb-arm64")
    started = time.monotonic()
    make_usb_initramfs()
    stage2 = work / "stage2-arm64.cpio.zst"
    sh(str(SCRIPTS / "build-initramfs.sh"), "--arch", "arm64", "--stage2", "--output", str(stage2))
    built = {
        "kernel": KERNEL_DIR / "vmlinuz",
        "stage1": USB_BUILD / "initramfs-arm64.cpio.zst",
        "key": DEV_KEY,
    }
    stick = work / "phase-usb-arm64.img"
    result = build_stick(built, stick, "--arch", "arm64", "--cmdline", STICK_CMDLINE)
    assert result.returncode == 0, result.stderr + result.stdout
    print(f"\narm64 stick built in {time.monotonic() - started:.1f} s: {result.stdout.strip()}")
    art = work / "art"
    arm = art / "stable" / "arm64"
    arm.mkdir(parents=True)
    shutil.copy(built["kernel"], arm / "vmlinuz")
    shutil.copy(stage2, arm / "initramfs.img")
    (arm / "cmdline").write_text(STAGE2_CMDLINE + "\n")
    x86 = art / "stable" / "x86_64"
    x86.mkdir(parents=True)
    (x86 / "vmlinuz").write_bytes(b"an x86_64 kernel stand-in\n" * 100)
    (x86 / "initramfs.img").write_bytes(b"an x86_64 initramfs stand-in\n" * 100)
    (x86 / "cmdline").write_text("console=ttyS0\n")
    return {**built, "stick": stick, "stage2": stage2, "art": art}


def pe_signers(path: Path) -> tuple[int, bytes]:
    """A PE file's machine type and its Authenticode certificate table (empty: unsigned)."""
    data = path.read_bytes()
    pe = struct.unpack_from("<I", data, 0x3C)[0]
    assert data[pe : pe + 4] == b"PE\0\0", path
    machine = struct.unpack_from("<H", data, pe + 4)[0]
    offset, size = struct.unpack_from("<II", data, pe + 24 + 112 + 4 * 8)
    return machine, data[offset : offset + size]


# -- the image, no QEMU ------------------------------------------------------------------------


@pytest.mark.slow
def test_arm64_layout_esp_and_state_no_bios_code(
    arm64_images: dict[str, Path], tmp_path: Path
) -> None:
    image = arm64_images["stick"]
    table = partitions(image)
    # p2 the ESP and p3 the state, at x86_64's offsets; GPT entry 1 (BIOS boot) stays empty.
    assert [(p["node"][-1], p["type"]) for p in table] == [("2", ESP_TYPE), ("3", LINUX_TYPE)]
    assert [int(p["start"]) for p in table] == [4096, 4096 + 128 * 2048], table
    assert image.stat().st_size == 147 * 1024 * 1024
    mbr = image.read_bytes()[:512]
    assert mbr[510:] == b"\x55\xaa" and mbr[0x1BE + 4] == 0xEE, "protective MBR"
    assert mbr[:440] == bytes(440), "no BIOS boot code on arm64"
    esp, listing = esp_files(image, tmp_path, "aa64")
    assert "BOOTX64.EFI" not in listing and "grubx64.efi" not in listing, listing
    # Each link of the chain is an arm64 PE signed by whom the firmware or shim trusts.
    signers = {
        "EFI/BOOT/BOOTAA64.EFI": b"Microsoft Corporation UEFI CA 2011",
        "EFI/BOOT/grubaa64.efi": b"Debian Secure Boot CA",
        "boot/vmlinuz": b"Debian Secure Boot CA",
    }
    for path, signer in signers.items():
        out = tmp_path / path.replace("/", "_")
        sh("mcopy", "-i", str(esp), f"::/{path}", str(out))
        machine, certificates = pe_signers(out)
        assert machine == 0xAA64 and signer in certificates, (path, hex(machine))
    cfg = sh("mtype", "-i", str(esp), "::/EFI/debian/grub.cfg")
    state_uuid = partition(image, 3)["uuid"].lower()
    assert f"phase.statedev=PARTUUID={state_uuid}" in cfg, cfg
    assert STICK_CMDLINE in cfg and 'grub_cpu" = arm64' in cfg and "ttyAMA0" in cfg, cfg
    state = partition_bytes(image, 3, tmp_path / "state.img")
    assert "PHASE-STATE" in sh("dumpe2fs", "-h", str(state))


@pytest.mark.slow
def test_arm64_same_inputs_same_bytes(arm64_images: dict[str, Path], tmp_path: Path) -> None:
    again = tmp_path / "again.img"
    result = build_stick(arm64_images, again, "--arch", "arm64", "--cmdline", STICK_CMDLINE)
    assert result.returncode == 0, result.stderr
    assert again.read_bytes() == arm64_images["stick"].read_bytes()
    assert not list(tmp_path.glob("*.work.*")), "no work directory left behind"
    refused = build_stick(arm64_images, tmp_path / "x.img", "--arch", "riscv64")
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr == "build-usb: --arch riscv64: x86_64 or arm64 (try --help)\n"
    helped = subprocess.run(
        [str(SCRIPTS / "build-usb.sh"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert "--arch ARCH        x86_64 (default) or arm64 (aarch64)" in helped.stdout
    assert helped.stdout.endswith("Exit codes: 0 built, 1 a build step failed, 2 usage.\n")
    # Debian's arm64 shim and GRUB, cached beside x86_64's under their own arch's names.
    assert {p.name.split("_")[0] for p in DEBS.glob("*_arm64.deb")} >= {
        "shim-signed",
        "grub-efi-arm64-signed",
    }


# -- booting the stick -------------------------------------------------------------------------


def arm64_provider(lan: StickLan, images: dict[str, Path]) -> str:
    """plasmd serve (mDNS) on the LAN offering stable/arm64 (and the x86_64 stand-in); the arm64
    manifest's URL."""
    provider = lan.provider("prov1", images, "--no-dht")
    wait_for(provider.log, r"mDNS: advertising stable/arm64", provider.proc, time.monotonic() + 60)
    return f"http://{provider.node.address}:{test_usb.HTTP_PORT}/stable/arm64/manifest.json"


def assert_chain_to_verified_fetch(log: str, url: str) -> None:
    """Firmware, shim (its MOK table reaches the kernel), GRUB, the generic kernel from the
    stick, stage 1 on its state partition, DHCP, mDNS, the verified fetch."""
    assert "UEFI firmware" in log, log
    assert re.search(r'BdsDxe: starting Boot\w+ "UEFI QEMU QEMU USB HARDDRIVE', log), log
    assert "Welcome to GRUB!" in log and "phase: loading the kernel and the initramfs" in log, log
    assert "EFI stub: Booting Linux Kernel..." in log, log
    assert re.search(r"efi: EFI v[\d.]+ by EDK II\n?.*\n?.*MOKvar=", log), log
    assert re.search(r"phase: Phase Boot stage 1: \S+-arm64, ", log), log
    assert "-cloud-arm64" not in log, log
    assert re.search(r"EXT4-fs \(sd[a-z]3\): mounted", log), log
    assert re.search(network_up(), log), log
    assert re.search(rf"phase: discovered {discovered_url(url)} via mdns \(version ", log), log
    assert re.search(r"INFO Verified manifest stable/arm64 .* sequence \d+ from http://", log), log
    assert "phase: manifest verified, artifacts fetched and checked" in log, log


ARM64_MARKS = {
    "GRUB": "Welcome to GRUB!",
    "kernel": r"Booting Linux on physical CPU",
    "stage 1": "phase: Phase Boot stage 1",
    "fetched": "phase: manifest verified",
}


@pytest.mark.qemu
@pytest.mark.netns
@pytest.mark.slow
def test_arm64_stick_boots_through_aavmf_to_the_arm64_stage2(
    lan: StickLan, arm64_images: dict[str, Path], tmp_path: Path
) -> None:
    """AAVMF without Secure Boot: the whole chain, the kexec and the stage-2 marker."""
    url = arm64_provider(lan, arm64_images)
    serial = tmp_path / "serial.log"
    stick = stick_copy(arm64_images, tmp_path)
    lan.boot_stick(stick, "aavmf", serial)
    marks = {**ARM64_MARKS, "kexec": "kexec -e"}
    log = run_until(lan, serial, r"PHASE-STAGE2-CMDLINE .*\n", label="arm64 aavmf", marks=marks)
    assert_chain_to_verified_fetch(log.replace("\r", ""), url)
    assert "secureboot: Secure boot disabled" in log, log
    assert "UEFI Secure Boot is enabled" not in log and "locked down" not in log, log
    assert "kexec-boot: kernel loaded; kexec -e" in log, log
    assert log.index("kexec -e") < log.index("PHASE-STAGE2-OK"), log
    assert re.search(r"PHASE-STAGE2-OK kernel=6\.\S+-arm64 ", log), log
    line = re.search(r"PHASE-STAGE2-CMDLINE (.*)", log)
    assert line is not None and line.group(1).startswith(STAGE2_CMDLINE + " "), log
    # The rollback state landed on the stick's own p3.
    state = partition_bytes(stick, 3, tmp_path / "state.img")
    accepted = sh("debugfs", "-R", "cat /phase/accepted.json", str(state))
    assert re.search(r'"sequence": \d+', accepted), accepted


@pytest.mark.qemu
@pytest.mark.netns
@pytest.mark.slow
def test_arm64_stick_secure_boot_chain_verifies_and_lockdown_refuses_kexec(
    lan: StickLan, arm64_images: dict[str, Path], tmp_path: Path
) -> None:
    """AAVMF with Secure Boot on and Microsoft's keys: Microsoft-signed shim, Debian-signed
    GRUB and kernel are accepted, the kernel locks down; stage 1 fetches and verifies; the
    kexec is refused (no kexec_file_load in Debian's arm64 kernel, kexec_load forbidden by
    lockdown), said in one line without trying kexec_load, and stage 1 retries."""
    url = arm64_provider(lan, arm64_images)
    serial = tmp_path / "serial.log"
    lan.boot_stick(stick_copy(arm64_images, tmp_path), "aavmf-secure-boot", serial)
    log = run_until(
        lan,
        serial,
        r"attempt 1 failed; retrying",
        label="arm64 aavmf secure boot",
        marks=ARM64_MARKS,
    )
    assert_chain_to_verified_fetch(log.replace("\r", ""), url)
    assert "EFI stub: UEFI Secure Boot is enabled." in log, log
    assert "secureboot: Secure boot enabled" in log, log
    assert "Kernel is locked down from EFI Secure Boot" in log, log
    assert (
        "kexec-boot: cannot load the kernel: this kernel has no kexec_file_load (kexec -s) and "
        "its lockdown (Secure Boot) forbids kexec_load: boot with Secure Boot off, or from a "
        "kernel built with CONFIG_KEXEC_FILE"
    ) in log.replace("\r\n", "\n").replace("\n", ""), log
    # kexec_load was not tried (IMA's Secure Boot policy would have said so on the console).
    assert "impossible to appraise a kernel image" not in log, log
    assert "trying kexec -l" not in log, log
    assert "phase: ERROR kexec-boot failed (exit 1)" in log, log
    assert "PHASE-STAGE2" not in log and "kexec -e" not in log, log
