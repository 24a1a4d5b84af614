"""The USB stick (issue 15, docs/usb.md): one image file, attached to QEMU as a USB mass-storage
device on an xHCI controller (no -kernel, no -initrd), boots with real firmware:

- OVMF with Secure Boot on and Microsoft's keys enrolled (Debian's OVMF_CODE_4M.secboot.fd +
  OVMF_VARS_4M.ms.fd): shim -> GRUB -> Debian's signed generic kernel, all Debian-signed, the
  kernel in lockdown; stage 1 finds the provider by mDNS on a namespace LAN (test_boot_lan's
  harness), fetches, and kexec_file_load accepts the Debian-signed stage-2 kernel; the same
  kernel with its signature stripped is refused with kexec-boot's one line, and no kexec;
- SeaBIOS (legacy BIOS): GRUB i386-pc from the protective MBR and the BIOS boot partition;
  the rollback state lands on the stick's own state partition (phase.statedev=PARTUUID=...)
  and survives to a second boot, which refuses an older manifest.

The image itself: layout, reproducibility, an unsigned kernel refused, shellcheck.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import REPO
from .netns import discovered_url, network_up
from .test_arm64_boot import ARM64_CPU
from .test_boot_lan import HTTP_PORT, BootLan
from .test_e2e_qemu import BOOT_DEADLINE, sh, terminate, wait_for

SCRIPTS = REPO / "scripts"
USB_BUILD = REPO / "build" / "usb"
KERNEL_DIR = USB_BUILD / "kernel"
DEBS = USB_BUILD / "debs"
OVMF = Path("/usr/share/OVMF")
OVMF_MS_VARS = OVMF / "OVMF_VARS_4M.ms.fd"
AAVMF = Path("/usr/share/AAVMF")
STAGE2_CMDLINE = "quiet phase.stage2=yes marker=usb-2b81"
# Baked into the test sticks: no provider named (mDNS finds it), a short discovery.
STICK_CMDLINE = "phase.arch=x86_64 phase.timeout=5"


def generic_kernel() -> Path:
    """Debian's signed generic kernel in build/usb/kernel (what make usb-kernel fetches)."""
    deps = subprocess.run(
        ["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True, timeout=60
    ).stdout
    match = re.search(r"Depends: (linux-image-[0-9]\S*-amd64)\n", deps)
    version = KERNEL_DIR / "version"
    if match is None:
        assert version.exists(), "no linux-image-amd64 in apt's lists and no cached kernel"
    elif version.exists() and f"linux-image-{version.read_text().strip()}" != match.group(1):
        shutil.rmtree(KERNEL_DIR)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    if match is not None:
        env["KERNEL_PACKAGE"] = match.group(1)
    subprocess.run(
        [str(SCRIPTS / "fetch-kernel.sh"), str(KERNEL_DIR)], check=True, env=env, timeout=600
    )
    return KERNEL_DIR / "vmlinuz"


def strip_signature(signed: Path, out: Path) -> None:
    """The kernel without its Authenticode signature (what sbattach --remove does): the
    certificate table's directory entry zeroed and the table cut off the end."""
    data = bytearray(signed.read_bytes())
    pe = struct.unpack_from("<I", data, 0x3C)[0]
    entry = pe + 24 + 112 + 4 * 8  # PE32+ optional header: data directory 4, certificates
    offset, size = struct.unpack_from("<II", data, entry)
    assert size > 0 and offset + size == len(data), "the signature is not at the end"
    struct.pack_into("<II", data, entry, 0, 0)
    out.write_bytes(bytes(data[:offset]))


def build_stick(
    images: dict[str, Path], out: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(SCRIPTS / "build-usb.sh"),
            *("--kernel", str(images["kernel"]), "--initramfs", str(images["stage1"])),
            *("--debs", str(DEBS), "--output", str(out), *extra),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )


def require(tools: tuple[str, ...], firmware: Path, package: str) -> None:
    """Fail (never skip) when a tool or the firmware file is missing."""
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} missing: run scripts/install-deps")
    if not firmware.exists():
        pytest.fail(f"{firmware.parent.name} missing: run scripts/install-deps ({package})")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Signed generic kernel, a fresh key, stage 1 trusting only it (with the generic kernel's
    drivers), stage 2, the stick, and the providers' artifacts (signed and unsigned stage 2)."""
    require(("qemu-system-x86_64", "sfdisk", "mformat", "grub-mkimage"), OVMF_MS_VARS, "ovmf")
    work = tmp_path_factory.mktemp("usb")
    kernel = generic_kernel()
    version = (KERNEL_DIR / "version").read_text().strip()
    key = work / "signing.key"
    sh(sys.executable, "-m", "phase_client", "plasmd", "keygen", "--out", str(key))
    keys = work / "keys"
    keys.mkdir()
    shutil.copy(f"{key}.pub", keys / "usb.pub")
    pyz = work / "phase.pyz"
    sh(sys.executable, str(SCRIPTS / "build-zipapp.py"), "--output", str(pyz))
    stage1 = work / "initramfs.cpio.zst"
    sh(
        str(SCRIPTS / "build-initramfs.sh"),
        *("--modules", str(KERNEL_DIR / "modules" / version)),
        *("--zipapp", str(pyz), "--keys", str(keys), "--output", str(stage1)),
    )
    stage2 = work / "stage2.cpio.zst"
    sh(str(SCRIPTS / "build-initramfs.sh"), "--stage2", "--output", str(stage2))
    built = {"kernel": kernel, "key": key, "stage1": stage1, "stage2": stage2}
    stick = work / "phase-usb.img"
    result = build_stick(built, stick, "--cmdline", STICK_CMDLINE)
    assert result.returncode == 0, result.stderr + result.stdout
    for name, stage2_kernel in (("art", kernel), ("art-unsigned", work / "unsigned-vmlinuz")):
        if name == "art-unsigned":
            strip_signature(kernel, stage2_kernel)
        combo = work / name / "stable" / "x86_64"
        combo.mkdir(parents=True)
        shutil.copy(stage2_kernel, combo / "vmlinuz")
        shutil.copy(stage2, combo / "initramfs.img")
        (combo / "cmdline").write_text(STAGE2_CMDLINE + "\n")
    return {**built, "stick": stick, "art": work / "art", "art-unsigned": work / "art-unsigned"}


def partitions(image: Path) -> list[dict[str, str]]:
    dump = sh("sfdisk", "--json", str(image))
    return list(json.loads(dump)["partitiontable"]["partitions"])


def partition(image: Path, number: int) -> dict[str, str]:
    """Partition ``number`` (p1, p2...: GPT entry ``number``; the arm64 stick has no p1)."""
    (part,) = [p for p in partitions(image) if re.search(rf"\D{number}$", p["node"])]
    return part


def partition_bytes(image: Path, number: int, out: Path) -> Path:
    part = partition(image, number)
    with image.open("rb") as src, out.open("wb") as dst:
        src.seek(int(part["start"]) * 512)
        dst.write(src.read(int(part["size"]) * 512))
    return out


def esp_files(image: Path, tmp_path: Path, efi_arch: str) -> tuple[Path, str]:
    """The ESP (p2) of ``image`` holds shim as BOOT<arch>.EFI, GRUB beside it, grub.cfg, the
    kernel, the initramfs and phase.cfg, and no shim fallback (it would write boot entries into
    the machine's NVRAM). Returns the ESP's bytes (a file) and its listing."""
    esp = partition_bytes(image, 2, tmp_path / "esp.img")
    listing = sh("mdir", "-/", "-b", "-i", str(esp), "::/")
    boot = f"EFI/BOOT/BOOT{efi_arch.upper()}.EFI"
    for path in (boot, f"EFI/BOOT/grub{efi_arch}.efi", "EFI/debian/grub.cfg"):
        assert f"::/{path}" in listing, listing
    for path in ("boot/vmlinuz", "boot/initramfs.cpio.zst", "phase.cfg"):
        assert f"::/{path}" in listing, listing
    assert f"::/EFI/BOOT/fb{efi_arch}.efi" not in listing, listing
    return esp, listing


# -- the image, no QEMU ------------------------------------------------------------------------


@pytest.mark.slow
def test_layout_gpt_esp_state_and_bios_boot(images: dict[str, Path], tmp_path: Path) -> None:
    image = images["stick"]
    table = partitions(image)
    assert [p["type"] for p in table] == [
        "21686148-6449-6E6F-744E-656564454649",  # BIOS boot: GRUB's core.img
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",  # EFI system partition
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4",  # Linux data: the state
    ], table
    mbr = image.read_bytes()[:512]
    assert mbr[510:] == b"\x55\xaa" and mbr[0x1BE + 4] == 0xEE, "protective MBR"
    assert mbr[0x1BE] == 0x80, "protective partition marked active for picky BIOSes"
    assert struct.unpack_from("<Q", mbr, 0x5C)[0] == int(table[0]["start"]), "boot.img -> core"
    esp, _ = esp_files(image, tmp_path, "x64")
    cfg = subprocess.run(
        ["mtype", "-i", str(esp), "::/EFI/debian/grub.cfg"], capture_output=True, text=True
    ).stdout
    state_uuid = table[2]["uuid"].lower()
    assert f"phase.statedev=PARTUUID={state_uuid}" in cfg, cfg
    assert STICK_CMDLINE in cfg and "source /phase.cfg" in cfg, cfg
    state = partition_bytes(image, 3, tmp_path / "state.img")
    assert "PHASE-STATE" in sh("dumpe2fs", "-h", str(state))


@pytest.mark.slow
def test_same_inputs_same_bytes(images: dict[str, Path], tmp_path: Path) -> None:
    again = tmp_path / "again.img"
    result = build_stick(images, again, "--cmdline", STICK_CMDLINE)
    assert result.returncode == 0, result.stderr
    assert again.read_bytes() == images["stick"].read_bytes()
    other = tmp_path / "other.img"
    assert build_stick(images, other, "--cmdline", "phase.channel=testing").returncode == 0
    # Another setting, other identifiers: two sticks in one machine never share a PARTUUID.
    assert partitions(other)[2]["uuid"] != partitions(again)[2]["uuid"]
    assert not list(tmp_path.glob("*.work.*")), "no work directory left behind"


@pytest.mark.slow
def test_unsigned_kernel_and_usage_errors_are_refused(
    images: dict[str, Path], tmp_path: Path
) -> None:
    unsigned = tmp_path / "unsigned-vmlinuz"
    strip_signature(images["kernel"], unsigned)
    out = tmp_path / "stick.img"
    result = build_stick({**images, "kernel": unsigned}, out)
    assert result.returncode == 1
    assert "carries no signature: Secure Boot needs Debian's signed kernel" in result.stderr
    assert not out.exists() and not list(tmp_path.glob("*.work.*"))
    result = subprocess.run(
        [str(SCRIPTS / "build-usb.sh"), "--output", str(out)], capture_output=True, text=True
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    helped = subprocess.run(
        [str(SCRIPTS / "build-usb.sh"), "--help"], capture_output=True, text=True
    )
    assert helped.returncode == 0 and "--esp-mib" in helped.stdout


def test_scripts_pass_shellcheck() -> None:
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck missing: run scripts/install-deps")
    result = subprocess.run(
        ["shellcheck", "-s", "sh", "-S", "warning", str(SCRIPTS / "build-usb.sh")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout


# -- booting the stick -------------------------------------------------------------------------


class StickLan(BootLan):
    """test_boot_lan's LAN; the VM boots a stick image through firmware instead of -kernel."""

    def boot_stick(
        self, image: Path, firmware: str, serial: Path, nics: tuple[str, ...] = ("virtio-net-pci",)
    ) -> subprocess.Popen[bytes]:
        """The stick on xHCI, booted by ``firmware`` (x86_64: ``bios``, ``uefi``,
        ``uefi-secure-boot``; arm64: ``aavmf``, ``aavmf-secure-boot``); one NIC per entry of
        ``nics`` (QEMU device names), each on a tap of its own on the LAN."""
        hub, index = self.lan.hub, len(self.vms)
        network = []
        for n, nic in enumerate(nics):
            tap = self.add_tap(f"tap{self.lan.suffix}{index}{n}")
            mac = f"52:54:00:12:{0x35 + n:02x}:{index + 0x56:02x}"
            network += ["-netdev", f"tap,id=lan{n},ifname={tap},script=no,downscript=no"]
            network += ["-device", f"{nic},netdev=lan{n},mac={mac}"]
        qemu = ["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", "1024"]
        if firmware == "bios":  # SeaBIOS, QEMU's default
            machine = ["-machine", "q35"]
        elif firmware.startswith("aavmf"):
            # arm64: AAVMF_CODE.ms.fd is AAVMF_CODE.fd; Secure Boot comes with the variable
            # store (Microsoft's keys enrolled, Secure Boot on), no SMM on arm64.
            secure = firmware == "aavmf-secure-boot"
            varsfile = self.work / f"vars-{index}.fd"
            shutil.copy(AAVMF / ("AAVMF_VARS.ms.fd" if secure else "AAVMF_VARS.fd"), varsfile)
            qemu = ["qemu-system-aarch64", "-M", "virt", "-cpu", ARM64_CPU, "-m", "1536"]
            machine = [
                *("-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={AAVMF}/AAVMF_CODE.fd"),
                *("-drive", f"if=pflash,format=raw,unit=1,file={varsfile}"),
            ]
        else:
            secure = firmware == "uefi-secure-boot"
            code = OVMF / ("OVMF_CODE_4M.secboot.fd" if secure else "OVMF_CODE_4M.fd")
            varsfile = self.work / f"vars-{index}.fd"
            shutil.copy(OVMF / ("OVMF_VARS_4M.ms.fd" if secure else "OVMF_VARS_4M.fd"), varsfile)
            machine = [
                *("-machine", "q35,smm=on" if secure else "q35"),
                *(["-global", "driver=cfi.pflash01,property=secure,value=on"] if secure else []),
                *("-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}"),
                *("-drive", f"if=pflash,format=raw,unit=1,file={varsfile}"),
            ]
        with serial.open("wb") as out:
            self.qemu = subprocess.Popen(
                [
                    *("ip", "netns", "exec", hub, *qemu),
                    *("-smp", "1", "-display", "none", *machine),
                    *("-no-reboot", "-monitor", "none", "-serial", f"file:{serial}"),
                    *("-device", "qemu-xhci,id=xhci"),
                    *("-drive", f"if=none,id=stick,format=raw,file={image}"),
                    *("-device", "usb-storage,bus=xhci.0,drive=stick,bootindex=0"),
                    *network,
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.vms.append(self.qemu)
        return self.qemu


@pytest.fixture
def lan(tmp_path: Path) -> Iterator[StickLan]:
    world = StickLan(tmp_path)
    try:
        yield world
    finally:
        world.close()


def edit_phase_cfg(image: Path, tmp_path: Path, text: str) -> None:
    """Replace /phase.cfg on the stick's ESP in place (mtools at the partition's offset)."""
    cfg = tmp_path / "phase.cfg"
    cfg.write_text(text)
    offset = int(partition(image, 2)["start"]) * 512
    sh("mcopy", "-o", "-i", f"{image}@@{offset}", str(cfg), "::/phase.cfg")


def stick_copy(images: dict[str, Path], tmp_path: Path) -> Path:
    copy = tmp_path / "stick.img"
    shutil.copy(images["stick"], copy)
    return copy


STAGE1_MARKS = {"stage 1": "phase: Phase Boot stage 1", "kexec": "kexec -e"}


def run_until(
    lan: StickLan, serial: Path, pattern: str, label: str = "", marks: dict[str, str] | None = None
) -> str:
    """Wait for ``pattern`` on the serial console, then stop the VM. With ``label``, print the
    seconds from QEMU's start to each of ``marks`` in turn (default: stage 1's first line and
    ``kexec -e``) and to ``pattern`` (run with -s to see them; docs/usb.md quotes them)."""
    assert lan.qemu is not None
    start = time.monotonic()
    deadline = start + BOOT_DEADLINE
    seen = []
    steps = {**(STAGE1_MARKS if marks is None else marks), "end": pattern} if label else {}
    try:
        for name, mark in (steps or {"end": pattern}).items():
            log = wait_for(serial, mark, lan.qemu, deadline)
            seen.append(f"{name} {time.monotonic() - start:.1f} s")
    finally:
        terminate(lan.qemu)
    if label:
        print(f"\nboot time {label}: {', '.join(seen)}")
    return log


def assert_stage1_reached_stage2(log: str, url: str) -> None:
    assert "phase: Phase Boot stage 1: " in log, log
    assert re.search(network_up(), log), log
    assert re.search(rf"phase: discovered {discovered_url(url)} via mdns", log), log
    assert "phase: manifest verified, artifacts fetched and checked" in log, log
    assert "kexec-boot: kernel loaded; kexec -e" in log, log
    assert log.index("kexec -e") < log.index("PHASE-STAGE2-OK"), log
    line = re.search(r"PHASE-STAGE2-CMDLINE (.*)", log)
    assert line is not None and line.group(1).startswith(STAGE2_CMDLINE + " "), log


@pytest.mark.qemu
@pytest.mark.netns
@pytest.mark.slow
def test_uefi_stick_boots_a_signed_stage2_without_secure_boot(
    lan: StickLan, images: dict[str, Path], tmp_path: Path
) -> None:
    """OVMF without Secure Boot (the same stick; with it on: the next test)."""
    provider = lan.provider("prov1", images, "--no-dht")
    serial = tmp_path / "serial.log"
    lan.boot_stick(stick_copy(images, tmp_path), "uefi", serial)
    log = run_until(lan, serial, r"PHASE-STAGE2-CMDLINE .*\n", label="uefi")
    assert "Welcome to GRUB!" in log, log  # Debian's signed GRUB (ours, for BIOS, says not)
    assert "secureboot: Secure boot disabled" in log, log
    assert "locked down" not in log, log
    assert_stage1_reached_stage2(log, provider.manifest_url)


@pytest.mark.qemu
@pytest.mark.netns
@pytest.mark.slow
def test_secure_boot_stick_boots_a_signed_stage2_with_nics_of_real_hardware(
    lan: StickLan, images: dict[str, Path], tmp_path: Path
) -> None:
    """OVMF with Secure Boot on and Microsoft's keys: Debian's signed shim, GRUB and kernel
    boot, the kernel locks down, and a Debian-signed stage 2 is kexec'd. The machine has NICs
    of real hardware, all three at once: Intel's 82574L (e1000e), Realtek's RTL8139C+ (8139cp)
    and a USB NIC beside the stick on the xHCI controller (cdc_subset): drivers of the generic
    kernel carried in the initramfs, loaded by their PCI or USB modalias; each gets its DHCP
    lease."""
    provider = lan.provider("prov1", images, "--no-dht")
    serial = tmp_path / "serial.log"
    nics = ("e1000e", "rtl8139", "usb-net,bus=xhci.0")
    lan.boot_stick(stick_copy(images, tmp_path), "uefi-secure-boot", serial, nics=nics)
    log = run_until(lan, serial, r"PHASE-STAGE2-CMDLINE .*\n", label="secure boot, 3 NICs")
    assert "Welcome to GRUB!" in log, log
    # The whole chain is Debian's signed binaries on Microsoft's keys: the kernel says so.
    assert "EFI stub: UEFI Secure Boot is enabled." in log, log
    assert "secureboot: Secure boot enabled" in log, log
    assert "Kernel is locked down from EFI Secure Boot" in log, log
    interfaces = []
    for driver in ("e1000e", "8139cp", "cdc_subset"):
        found = re.search(rf"\] {driver} \S+ (eth\d|usb\d): ", log)
        assert found is not None, (driver, log)
        interfaces.append(found.group(1))
    # Stage 1 asks DHCP on every interface at once, and may boot from a provider on the first
    # link before the leases are in (docs/boot.md): one interface up, either way, is the boot's.
    up = re.search(r"phase: (?:network|link) up: (\w+) ", log)
    assert up is not None and up.group(1) in interfaces, log
    assert "virtio_net" not in log, log
    assert_stage1_reached_stage2(log, provider.manifest_url)


@pytest.mark.qemu
@pytest.mark.netns
@pytest.mark.slow
def test_uefi_secure_boot_refuses_an_unsigned_stage2_kernel(
    lan: StickLan, images: dict[str, Path], tmp_path: Path
) -> None:
    lan.provider("prov1", {**images, "art": images["art-unsigned"]}, "--no-dht")
    serial = tmp_path / "serial.log"
    lan.boot_stick(stick_copy(images, tmp_path), "uefi-secure-boot", serial)
    log = run_until(lan, serial, r"attempt 1 failed; retrying")
    assert "Kernel is locked down from EFI Secure Boot" in log, log
    # The manifest and the files verify (they are what the provider signed) ...
    assert "phase: manifest verified, artifacts fetched and checked" in log, log
    # ... but lockdown's kexec_file_load wants a kernel signed by a key the kernel trusts. An
    # unsigned PE fails with ENODATA ("No data available"): kexec-boot says so in one line and
    # does not try kexec_load (lockdown forbids it, and its EPERM would hide the reason).
    assert "kexec_file: Enforced kernel signature verification failed" in log, log
    assert (
        "kexec-boot: cannot load the kernel: the kernel's signature was rejected "
        "(lockdown / kexec signature enforcement)"
    ) in log, log
    assert "trying kexec -l" not in log, log
    assert "phase: ERROR kexec-boot failed (exit 1)" in log, log
    assert "PHASE-STAGE2" not in log and "kexec -e" not in log, log


@pytest.mark.qemu
@pytest.mark.netns
@pytest.mark.slow
def test_bios_stick_boots_and_keeps_rollback_state_on_its_partition(
    lan: StickLan, images: dict[str, Path], tmp_path: Path
) -> None:
    provider = lan.provider("prov1", images, "--no-dht")
    stick = stick_copy(images, tmp_path)
    serial = tmp_path / "first.log"
    lan.boot_stick(stick, "bios", serial)
    log = run_until(lan, serial, r"PHASE-STAGE2-CMDLINE .*\n", label="bios")
    assert "GNU GRUB" in log and "EFI stub" not in log, log
    assert_stage1_reached_stage2(log, provider.manifest_url)
    assert "no rollback state kept" not in log, log
    state = partition_bytes(stick, 3, tmp_path / "state.img")
    accepted = sh("debugfs", "-R", "cat /phase/accepted.json", str(state))
    match = re.search(r'"sequence": (\d+)', accepted)
    assert match, accepted
    sequence = int(match.group(1))

    # Second boot from the same stick: an older, validly signed manifest is refused.
    terminate(provider.proc)
    old = tmp_path / "old"
    combo = old / "stable" / "x86_64"
    shutil.copytree(images["art"] / "stable" / "x86_64", combo)
    sh(
        *(sys.executable, "-m", "phase_client", "plasmd", "manifest", "generate"),
        *("--artifacts", str(old), "--channel", "stable", "--arch", "x86_64"),
        *("--sequence", str(sequence - 1), "--key", str(images["key"])),
        *("--output", str(combo / "manifest.json")),
    )
    static = provider.node.popen(
        [sys.executable, "-m", "http.server", "--directory", str(old), str(HTTP_PORT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Nothing advertises it: name it in the stick's phase.cfg, as a user would.
    url = f"http://{provider.node.address}:{HTTP_PORT}"
    edit_phase_cfg(stick, tmp_path, f'set phase_settings="phase.provider={url}"\n')
    try:
        serial = tmp_path / "second.log"
        lan.boot_stick(stick, "bios", serial)
        log = run_until(lan, serial, r"attempt 1 failed; retrying")
    finally:
        terminate(static)
    assert f"sequence {sequence - 1} is lower than {sequence}" in log, log
    assert "PHASE-STAGE2" not in log, log


@pytest.mark.qemu
@pytest.mark.netns
@pytest.mark.slow
def test_make_demo_usb_boots_the_os_from_the_stick_under_secure_boot() -> None:
    """``make demo USB=1`` (scripts/demo.sh with DEMO_USB=1): the demo's LAN and provider, and
    a VM that boots the stick image, not -kernel: OVMF with Secure Boot on checks shim, GRUB
    and Debian's kernel, the kernel locks down, stage 1 finds the provider by mDNS, and the
    real OS (its signed kernel kexec'd through kexec_file_load) comes up to PHASE-OS-UP."""
    result = subprocess.run(
        [str(SCRIPTS / "demo.sh")],
        cwd=REPO,
        capture_output=True,
        text=True,
        errors="replace",  # the firmware's and GRUB's screens are not UTF-8
        timeout=BOOT_DEADLINE + 1800,  # the OS image build, when it is not cached yet
        env={**os.environ, "PY": sys.executable, "DEMO_USB": "1"},
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "Welcome to GRUB!" in out, out  # Debian's signed GRUB from the stick's ESP
    assert "EFI stub: UEFI Secure Boot is enabled." in out, out
    assert "Kernel is locked down from EFI Secure Boot" in out, out
    assert "phase: Phase Boot stage 1: " in out, out
    assert re.search(r"phase: discovered http://\S+ via mdns \(version ", out), out
    assert "kexec-boot: kernel loaded; kexec -e" in out, out
    assert "phase-os: root filesystem mounted" in out, out
    lines = result.stdout.rstrip().splitlines()
    booted = r"^demo: booted from the USB stick with Secure Boot on \(Kernel is locked down"
    assert re.search(booted, result.stdout, re.M), out
    assert re.fullmatch(r"demo: OK, PHASE-OS-UP state=running kernel=\S+ root=overlay "
                        r"version=\S+", lines[-1]), out  # fmt: skip
    prefix = re.search(r"namespaces (phase-demo-[0-9a-f]+)-", out)
    assert prefix is not None, out
    left = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    assert not [name for name in left if name.startswith(prefix.group(1))], left
