"""arm64 end to end (issue 16): the design documents' task 4.5 under qemu-system-aarch64.

    hub namespace:  bridge ── tap ── QEMU aarch64 -M virt (Debian's arm64 kernel + our arm64
                       │                initramfs, TCG) ── then a QEMU x86_64 VM on another tap
                       ├── veth ── dhcp   busybox udhcpd
                       └── veth ── prov1  plasmd serve: stable/arm64 AND stable/x86_64 (mDNS)

The arm64 VM's command line names neither provider nor arch: the initramfs (built on this x86_64
host from Debian's arm64 packages, scripts/build-initramfs.sh --arch arm64) gets an address by
DHCP, finds the provider by mDNS for its own arch (uname -m: aarch64 = arm64), fetches and
verifies the arm64 image, and kexec-boot decompresses its gzip-compressed Image and kexecs it;
the arm64 stage 2 prints its marker on ttyAMA0. Then an x86_64 VM boots from the same provider
and gets the x86_64 image. A machine asking for the wrong arch is refused by the signed
manifest (tests without QEMU, against a real plasmd on loopback).

-cpu max,pauth-impdef=on: QEMU's "max" CPU with its own pointer-authentication algorithm instead
of QARMA, which TCG computes slowly (the same boot to stage 1's first fetch: 33 s -> 14 s).
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import test_e2e_qemu
from .conftest import REPO
from .netns import discovered_url, network_up
from .test_boot_lan import BootLan
from .test_e2e_qemu import BOOT_DEADLINE, sh, start_logged, static_server, terminate, wait_for

SCRIPTS = REPO / "scripts"
KERNEL_DIR = REPO / "build" / "boot" / "kernel-arm64"
ARM64_CMDLINE = "console=ttyAMA0 quiet phase.stage2=yes marker=arm64-4b1d"
X86_CMDLINE = "console=ttyS0 quiet phase.stage2=yes marker=x86-9e27"
HTTP_PORT = 8080
ARM64_CPU = "max,pauth-impdef=on"

# The x86_64 e2e's images (kernel, key, zipapp, stage 1 and 2), built once for this module too:
# the arm64 stage 1 uses the same zipapp and trusts the same key.
images = test_e2e_qemu.images


@pytest.fixture(scope="module")
def arm64_images(
    images: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Debian's arm64 kernel, our arm64 stage 1 (trusting the e2e key) and the arm64 marker
    stage 2; and the provider's artifacts: stable/arm64 (the kernel gzip-compressed, as other
    distributions ship arm64 kernels: kexec-boot must decompress it) and stable/x86_64."""
    if shutil.which("qemu-system-aarch64") is None:
        pytest.fail("qemu-system-aarch64 missing: run scripts/install-deps (qemu-system-arm)")
    work = tmp_path_factory.mktemp("arm64")
    subprocess.run(
        [str(SCRIPTS / "fetch-kernel.sh"), str(KERNEL_DIR)],
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "ARCH": "arm64"},
        check=True,
        capture_output=True,
        timeout=600,
    )
    version = (KERNEL_DIR / "version").read_text().strip()
    stage1 = work / "initramfs-arm64.cpio.zst"
    sh(
        *(str(SCRIPTS / "build-initramfs.sh"), "--arch", "arm64"),
        *("--modules", str(KERNEL_DIR / "modules" / version), "--zipapp", str(images["pyz"])),
        *("--keys", str(images["keys"]), "--output", str(stage1)),
    )
    stage2 = work / "stage2-arm64.cpio.zst"
    sh(str(SCRIPTS / "build-initramfs.sh"), "--arch", "arm64", "--stage2", "--output", str(stage2))
    art = work / "art"
    arm = art / "stable" / "arm64"
    arm.mkdir(parents=True)
    (arm / "vmlinuz").write_bytes(gzip.compress((KERNEL_DIR / "vmlinuz").read_bytes(), 6, mtime=0))
    shutil.copy(stage2, arm / "initramfs.img")
    (arm / "cmdline").write_text(ARM64_CMDLINE + "\n")
    x86 = art / "stable" / "x86_64"
    x86.mkdir(parents=True)
    shutil.copy(images["kernel"], x86 / "vmlinuz")
    shutil.copy(images["stage2"], x86 / "initramfs.img")
    (x86 / "cmdline").write_text(X86_CMDLINE + "\n")
    return {
        **images,
        "arm64_kernel": KERNEL_DIR / "vmlinuz",
        "arm64_stage1": stage1,
        "art": art,
    }


@pytest.fixture
def lan(tmp_path: Path) -> Iterator[BootLan]:
    world = BootLan(tmp_path)
    try:
        yield world
    finally:
        world.close()


def boot_arm64(
    lan: BootLan, built: dict[str, Path], serial: Path, args: str = "", memory: int = 1024
) -> None:
    """qemu-system-aarch64 -M virt in the hub namespace, on a tap of its own (virtio-net-pci),
    serial console (ttyAMA0, QEMU's PL011) to file; ``memory`` MiB."""
    index = len(lan.vms)
    tap = lan.add_tap(f"tap{lan.lan.suffix}{index}")
    cmdline = f"console=ttyAMA0 panic=-1 phase.timeout=5 {args}".strip()
    with serial.open("wb") as out:
        lan.qemu = subprocess.Popen(
            [
                *("ip", "netns", "exec", lan.lan.hub, "qemu-system-aarch64", "-M", "virt"),
                *("-cpu", ARM64_CPU, "-m", str(memory), "-smp", "1", "-display", "none"),
                *("-no-reboot", "-monitor", "none", "-serial", f"file:{serial}"),
                *("-kernel", str(built["arm64_kernel"]), "-initrd", str(built["arm64_stage1"])),
                *("-append", cmdline),
                *("-netdev", f"tap,id=lan,ifname={tap},script=no,downscript=no"),
                *("-device", f"virtio-net-pci,netdev=lan,mac=52:54:00:12:35:{index + 0x56:02x}"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    lan.vms.append(lan.qemu)


def stage2_log(lan: BootLan, serial: Path) -> str:
    assert lan.qemu is not None
    try:
        return wait_for(
            serial, r"PHASE-STAGE2-CMDLINE .*\n", lan.qemu, time.monotonic() + BOOT_DEADLINE
        )
    finally:
        terminate(lan.qemu)


def stamp(log: str, pattern: str) -> float:
    """The uptime stamp of the first ``[   12.34] ...pattern`` line (stage 1's clock)."""
    found = re.search(r"^\[\s*([\d.]+)\][^\n]*" + pattern, log, re.M)
    assert found is not None, (pattern, log)
    return float(found.group(1))


@pytest.mark.qemu
@pytest.mark.netns
@pytest.mark.slow
def test_arm64_and_x86_64_vms_each_boot_their_own_arch_from_one_provider(
    lan: BootLan, arm64_images: dict[str, Path], tmp_path: Path
) -> None:
    provider = lan.provider("prov1", arm64_images, "--no-dht")
    wait_for(provider.log, r"mDNS: advertising stable/arm64", provider.proc, time.monotonic() + 60)
    arm_url = f"http://{provider.node.address}:{HTTP_PORT}/stable/arm64/manifest.json"

    serial = tmp_path / "arm64.log"
    started = time.monotonic()
    boot_arm64(lan, arm64_images, serial)
    log = stage2_log(lan, serial)
    wall = time.monotonic() - started
    assert re.search(r"phase: Phase Boot stage 1: \S+-cloud-arm64,", log), log
    assert re.search(network_up(), log), log
    found_url = discovered_url(arm_url, provider.node.link_local())
    assert re.search(rf"phase: discovered {found_url} via mdns \(version ", log), log
    assert re.search(r"INFO Verified manifest stable/arm64 .* sequence \d+ from http://", log), log
    assert re.search(r"INFO kernel: \d+ bytes verified", log), log
    size = (arm64_images["art"] / "stable" / "arm64" / "vmlinuz").stat().st_size
    image = arm64_images["arm64_kernel"].read_bytes()
    import hashlib

    assert (
        f"kexec-boot: kernel is a gzip-compressed Image ({size} bytes): decompressed to "
    ) in log, log
    assert f"{len(image)} bytes, sha256 {hashlib.sha256(image).hexdigest()}" in log, log
    assert "kexec-boot: no dtb artifact: the new kernel gets this machine's device tree" in log
    assert "kexec-boot: kernel loaded; kexec -e" in log, log
    assert log.index("kexec -e") < log.index("PHASE-STAGE2-OK"), log
    assert re.search(r"PHASE-STAGE2-OK kernel=\S+-cloud-arm64 ", log), log
    line = re.search(r"PHASE-STAGE2-CMDLINE (.*)", log)
    assert line is not None, log
    assert line.group(1).startswith(ARM64_CMDLINE + " "), line.group(1)
    assert line.group(1).split().count("console=ttyAMA0") == 1
    timeline = {
        "init": stamp(log, "phase: Phase Boot stage 1"),
        "network": stamp(log, "phase: (?:network|link) up"),
        "fetching": stamp(log, "phase: fetching"),
        "verified": stamp(log, "phase: manifest verified"),
    }
    kexec = re.search(r"^\[\s*([\d.]+)\] kexec_core: Starting new kernel", log, re.M)
    (tmp_path.parent / "arm64-timeline.json").write_text(
        json.dumps({**timeline, "kexec": kexec and float(kexec.group(1)), "wall": wall}) + "\n"
    )
    print(f"arm64 boot: {timeline}, kexec at {kexec and kexec.group(1)}, wall {wall:.1f} s")

    # The x86_64 machine on the same LAN, same provider: its own arch's image.
    serial = tmp_path / "x86_64.log"
    lan.boot(arm64_images, serial)
    log = stage2_log(lan, serial)
    assert re.search(r"INFO Verified manifest stable/x86_64 .* sequence \d+ from http://", log), log
    assert re.search(r"PHASE-STAGE2-OK kernel=\S+-cloud-amd64 ", log), log
    line = re.search(r"PHASE-STAGE2-CMDLINE (.*)", log)
    assert line is not None and line.group(1).startswith(X86_CMDLINE + " "), log
    assert "arm64" not in line.group(1)


# --- the wrong arch is refused by the signature, not by luck (no QEMU) ------------------------


@pytest.fixture(scope="module")
def two_arch_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """A real ``plasmd serve`` on 127.0.0.1 offering stable/arm64 and stable/x86_64 (small
    stand-in artifacts: the signatures are what is tested), and its key."""
    work = tmp_path_factory.mktemp("two-arch")
    key = work / "signing.key"
    sh(sys.executable, "-m", "phase_client", "plasmd", "keygen", "--out", str(key))
    (work / "keys").mkdir()
    shutil.copy(f"{key}.pub", work / "keys" / "k.pub")
    for arch in ("arm64", "x86_64"):
        combo = work / "art" / "stable" / arch
        combo.mkdir(parents=True)
        (combo / "vmlinuz").write_bytes(f"{arch} kernel".encode() * 100)
        (combo / "initramfs.img").write_bytes(f"{arch} initramfs".encode() * 100)
        (combo / "cmdline").write_text(f"console=tty0 arch={arch}\n")
    log = work / "plasmd.log"
    proc = start_logged(
        [
            *(sys.executable, "-m", "phase_client", "plasmd", "serve"),
            *("--artifacts", str(work / "art"), "--bind", "127.0.0.1", "--port", "0"),
            *("--key", str(key), "--state-dir", str(work / "state"), "--no-mdns", "--no-dht"),
        ],
        log,
    )
    try:
        text = wait_for(log, r"Advertising stable/x86_64", proc, time.monotonic() + 60)
        text = wait_for(log, r"Advertising stable/arm64", proc, time.monotonic() + 60)
        port = re.search(r"Listening on http://127\.0\.0\.1:(\d+)/", text)
        assert port and proc.poll() is None, text
        yield {"url": f"http://127.0.0.1:{port.group(1)}", "keys": work / "keys", "work": work}
    finally:
        terminate(proc)


def fetch(
    manifest_url: str, arch: str, keys: object, out: Path
) -> subprocess.CompletedProcess[str]:
    """phase-fetch as the initramfs runs it, for a machine of ``arch``."""
    return subprocess.run(
        [
            *(sys.executable, "-m", "phase_client", "fetch", "--manifest", manifest_url),
            *("--arch", arch, "--channel", "stable", "--keys-dir", str(keys)),
            *("--output", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


@pytest.mark.parametrize("arch", ["arm64", "x86_64", "aarch64", "amd64"])
def test_each_arch_gets_its_own_signed_image(
    two_arch_provider: dict[str, object], tmp_path: Path, arch: str
) -> None:
    """Both offers verify for their own arch (uname's names too: aarch64, amd64)."""
    name = {"aarch64": "arm64", "amd64": "x86_64"}.get(arch, arch)
    url = f"{two_arch_provider['url']}/stable/{name}/manifest.json"
    result = fetch(url, arch, two_arch_provider["keys"], tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "kernel").read_bytes() == f"{name} kernel".encode() * 100
    assert (tmp_path / "out" / "cmdline").read_text().strip() == f"console=tty0 arch={name}"


def test_a_machine_asking_for_the_wrong_arch_is_refused(
    two_arch_provider: dict[str, object], tmp_path: Path
) -> None:
    """An x86_64 machine is refused the arm64 image three ways: asked at the arm64 URL (the
    signed arch differs), served it at the x86_64 URL by a mirror that swapped the files (the
    same), and served it with its arch field rewritten to x86_64 (the signature no longer
    verifies). Nothing is written in any case."""
    base, keys = str(two_arch_provider["url"]), two_arch_provider["keys"]
    arm = subprocess.run(
        ["curl", "-fsS", f"{base}/stable/arm64/manifest.json"],
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout
    url = f"{base}/stable/arm64/manifest.json"
    refused = fetch(url, "x86_64", keys, tmp_path / "a")
    assert refused.returncode == 1, refused.stderr
    wrong = "manifest is for arch 'arm64', not 'x86_64'"
    assert refused.stderr.splitlines()[-1] == f"phase-fetch: {url}: {wrong}", refused.stderr

    www = tmp_path / "www"
    (www / "stable" / "x86_64").mkdir(parents=True)
    (www / "stable" / "x86_64" / "manifest.json").write_bytes(arm)
    document = json.loads(arm)
    assert document["arch"] == "arm64"
    document["arch"] = "x86_64"
    (www / "stable" / "x86_64" / "forged.json").write_text(json.dumps(document))
    with static_server(www) as port:
        mirror = f"http://127.0.0.1:{port}/stable/x86_64"
        swapped = fetch(f"{mirror}/manifest.json", "x86_64", keys, tmp_path / "b")
        forged = fetch(f"{mirror}/forged.json", "x86_64", keys, tmp_path / "c")
    assert swapped.returncode == 1, swapped.stderr
    last = swapped.stderr.splitlines()[-1]
    assert last == f"phase-fetch: {mirror}/manifest.json: {wrong}", swapped.stderr
    assert forged.returncode == 1, forged.stderr
    last = forged.stderr.splitlines()[-1]
    assert last.startswith(
        f"phase-fetch: {mirror}/forged.json: no valid signature by a trusted key"
    )
    for out in ("a", "b", "c"):
        assert not (tmp_path / out).exists() or not list((tmp_path / out).iterdir())
