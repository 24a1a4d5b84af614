"""The real OS image, booted directly under QEMU (TCG): Debian's generic kernel, the image's own
initramfs.img followed by a newc cpio holding phase/rootfs.sqfs (what stage 1 will hand to
kexec), and systemd coming up in the squashfs+overlay root until phase-os-up.service prints
its PHASE-OS-UP line and powers off. The negatives: no rootfs in the initrd, and a rootfs that
is not the one phase.rootfs_sha256 names: one line, then a shell (never a kernel panic).

The image is built by ``plasmd image build`` into build/os/stable/x86_64 (what ``make os-image``
writes), as root, and reused across runs while its inputs are unchanged (~2 min to build).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from phase_client.manifest import parse_manifest

from .conftest import REPO
from .test_e2e_qemu import start_logged, terminate, wait_for

pytestmark = [pytest.mark.qemu, pytest.mark.slow]

IMAGE = REPO / "build" / "os" / "stable" / "x86_64"
APT_CACHE = REPO / "build" / "os" / ".apt-cache"
BUILD_TIMEOUT = 1800  # seconds; ~2 min on an idle 2-core machine with the .deb cache warm
BOOT_DEADLINE = 400  # seconds to PHASE-OS-UP; ~35 s on an idle 2-core machine under TCG
SHELL_DEADLINE = 180
NO_ROOTFS_LINE = "phase-os: no root filesystem at /phase/rootfs.sqfs"


def console_line(log: str, marker: str) -> str | None:
    """The serial console's line that starts with ``marker`` (phase-os-up's lines), from the
    marker on: the serial getty's prompt ("phase-os login: ") may come first on that line."""
    found = re.search(rf"(?:^|login: )({re.escape(marker)}.*)$", log, re.M)
    return found.group(1).strip() if found else None


def build_image(out: Path, *extra: str) -> dict[str, Any]:
    """``plasmd image build --out out`` (or the cached image); its summary (files, kernel...)."""
    if os.geteuid() != 0:
        pytest.fail("the OS image build needs root (mmdebstrap): run the tests as root")
    result = subprocess.run(
        [
            *(sys.executable, "-m", "phase_client", "plasmd", "image", "build", *extra),
            *("--out", str(out), "--apt-cache", str(APT_CACHE), "--json"),
        ],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    summary: dict[str, Any] = json.loads(result.stdout)
    for name in ("vmlinuz", "initramfs.img", "rootfs.sqfs", "cmdline", "version"):
        assert (out / name).is_file(), name
    assert (out / "cmdline").read_text().strip() == f"phase.version={summary['version']}"
    return summary


@pytest.fixture(scope="module")
def image() -> dict[str, Any]:
    """Build (or find current) the OS image; return its stamp (files, kernel version...)."""
    if shutil.which("qemu-system-x86_64") is None:
        pytest.fail("qemu-system-x86_64 missing: run scripts/install-deps (qemu-system-x86)")
    return build_image(IMAGE)


def rootfs_cpio(directory: Path) -> Path:
    """A newc cpio holding phase/rootfs.sqfs: what stage 1 appends to initramfs.img."""
    tree = directory / "carry"
    (tree / "phase").mkdir(parents=True)
    (tree / "phase" / "rootfs.sqfs").symlink_to(IMAGE / "rootfs.sqfs")
    out = directory / "rootfs.cpio"
    with out.open("wb") as handle:
        subprocess.run(
            ["cpio", "--quiet", "-o", "-H", "newc", "-L", "--owner=0:0", "--reproducible"],
            input=b"phase\nphase/rootfs.sqfs\n",
            stdout=handle,
            cwd=tree,
            check=True,
            timeout=300,
        )
    return out


def initrd(directory: Path, with_rootfs: bool) -> Path:
    out = directory / ("initrd-full" if with_rootfs else "initrd-bare")
    parts = [IMAGE / "initramfs.img"] + ([rootfs_cpio(directory)] if with_rootfs else [])
    with out.open("wb") as handle:
        for part in parts:
            with part.open("rb") as source:
                shutil.copyfileobj(source, handle, 1 << 20)
    return out


def qemu(
    initrd_path: Path, append: str, serial: Path, memory: int = 2048, interactive: bool = False
) -> subprocess.Popen[bytes]:
    console = ["-serial", "stdio"] if interactive else ["-serial", f"file:{serial}"]
    with serial.open("wb") as out:
        return subprocess.Popen(
            [
                *("qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-smp", "1"),
                *("-m", str(memory), "-nographic", "-no-reboot", "-monitor", "none", *console),
                *("-kernel", str(IMAGE / "vmlinuz"), "-initrd", str(initrd_path)),
                *("-append", append, "-nic", "user,model=virtio-net-pci"),
            ],
            stdin=subprocess.PIPE if interactive else subprocess.DEVNULL,
            stdout=out if interactive else subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


def staged_initrd(directory: Path) -> tuple[Path, str]:
    """What stage 1 hands to kexec for build/os, made the way it does (phase-verify
    --stage-into, a throw-away key): the initrd (initramfs.img, then the carry archive with the
    rootfs and the mirror) and the command line. Returns (initrd, cmdline)."""
    key, fetched, staged = directory / "k", directory / "fetched", directory / "staged"
    fetched.mkdir()
    py = [sys.executable, "-m", "phase_client"]
    subprocess.run([*py, "plasmd", "keygen", "--out", str(key)], check=True, timeout=60,
                   capture_output=True)  # fmt: skip
    subprocess.run(
        [*py, "plasmd", "manifest", "generate", "--artifacts", str(IMAGE.parent.parent),
         "--channel", "stable", "--arch", "x86_64", "--key", str(key),
         "--output", str(fetched / "manifest.json")],
        check=True, timeout=300, capture_output=True, cwd=REPO,
    )  # fmt: skip
    # Copies, as phase-fetch writes them (phase-verify follows no link).
    files = {"kernel": "vmlinuz", "initramfs": "initramfs.img", "rootfs": "rootfs.sqfs"}
    for name, filename in files.items():
        shutil.copyfile(IMAGE / filename, fetched / name)
    cmdline = json.loads((fetched / "manifest.json").read_bytes()).get("cmdline", "")
    (fetched / "cmdline").write_text(cmdline + "\n")
    subprocess.run(
        [*py, "verify", str(fetched / "manifest.json"), "--key", f"{key}.pub",
         "--check-dir", str(fetched), "--stage-into", str(staged)],
        check=True, timeout=300, capture_output=True,
    )  # fmt: skip
    return staged / "initrd", (staged / "cmdline").read_text()


def test_os_image_boots_to_multi_user_and_reports(image: dict[str, Any], tmp_path: Path) -> None:
    """Booted directly from the initrd stage 1 would hand to kexec (so the mirror travels
    too), with phase.serve=0: the system comes up, reports, and does not serve."""
    full, cmdline = staged_initrd(tmp_path)
    # The manifest's version is the last phase.version= (the booted system reads that one).
    versions = re.findall(r"phase\.version=(\S+)", cmdline)
    assert versions and "phase.rootfs_sha256=" in cmdline, cmdline
    append = f"console=ttyS0 {cmdline} phase.test=poweroff phase.serve=0"
    serial = tmp_path / "serial.log"
    started = time.monotonic()
    proc = qemu(full, append, serial)
    try:
        log = wait_for(serial, r"PHASE-OS-UP .*\n", proc, started + BOOT_DEADLINE)
        up = time.monotonic() - started
        log = wait_for(serial, r"reboot: Power down", proc, time.monotonic() + 120)
        proc.wait(timeout=60)
    finally:
        terminate(proc)
    # Carried, but not served: the opt-out is the condition that stopped plasmd.service.
    assert console_line(log, "PHASE-OS-SERVE ") == "PHASE-OS-SERVE plasmd=inactive", log
    assert "ConditionKernelCommandLine=!phase.serve=0" in log, log
    assert "phase-os: root filesystem sha256 matches phase.rootfs_sha256" in log, log
    assert "phase-os: root filesystem mounted (squashfs under a tmpfs overlay)" in log, log
    assert "PHASE-OS-TARGET multi-user.target=active" in log, log
    line = console_line(log, "PHASE-OS-UP ")
    expected = (
        f"PHASE-OS-UP state=running kernel={image['kernel']} root=overlay version={versions[-1]}"
    )
    assert line == expected, log
    # networkd's DHCP on the virtio NIC (an en* name) got QEMU's user-network address.
    assert re.search(r"(?:^|login: )PHASE-OS-NET .*en\w+=10\.0\.2\.15/24", log, re.M), log
    assert "PHASE-OS-POWEROFF" in log and "reboot: Power down" in log, log
    assert proc.returncode == 0
    assert "Kernel panic" not in log
    timing = console_line(log, "PHASE-OS-TIME ")
    sys.stderr.write(
        f"\nOS image: PHASE-OS-UP {up:.1f} s after QEMU started "
        f"({timing or 'no systemd-analyze line'})\n"
    )


def test_initramfs_without_rootfs_says_so_and_gives_a_shell(
    image: dict[str, Any], tmp_path: Path
) -> None:
    bare = initrd(tmp_path, with_rootfs=False)
    serial = tmp_path / "serial.log"
    proc = qemu(bare, "console=ttyS0 panic=-1", serial, interactive=True)
    assert proc.stdin is not None
    deadline = time.monotonic() + SHELL_DEADLINE
    try:
        log = wait_for(serial, r"leave it \(exit\) to try again", proc, deadline)
        assert NO_ROOTFS_LINE in log, log
        proc.stdin.write(b"echo SHELL-$((6*7))\n")
        proc.stdin.flush()
        log = wait_for(serial, r"SHELL-42", proc, deadline)
        assert re.search(r"^SHELL-42", log, re.M), log
        assert proc.poll() is None, "PID 1 must keep running"
    finally:
        terminate(proc)
    assert "Kernel panic" not in log and "Attempted to kill init" not in log, log
    # One line says what is wrong, before the shell.
    assert log.count(NO_ROOTFS_LINE) == 1, log


def test_rootfs_not_matching_the_signed_hash_is_not_mounted(
    image: dict[str, Any], tmp_path: Path
) -> None:
    full = initrd(tmp_path, with_rootfs=True)
    wrong = "0" * 64
    serial = tmp_path / "serial.log"
    proc = qemu(full, f"console=ttyS0 panic=-1 phase.rootfs_sha256={wrong}", serial)
    try:
        log = wait_for(serial, r"leave it \(exit\) to try again", proc, time.monotonic() + 300)
        assert proc.poll() is None, "PID 1 must keep running"
    finally:
        terminate(proc)
    sha = image["files"]["rootfs.sqfs"]["sha256"]
    assert (
        f"phase-os: the root filesystem at /phase/rootfs.sqfs is not the signed one "
        f"(sha256 {sha}, expected {wrong})"
    ) in log, log
    assert "root filesystem mounted" not in log and "Welcome to" not in log, log
    assert "Kernel panic" not in log


def test_too_little_memory_for_the_rootfs_is_one_line(
    image: dict[str, Any], tmp_path: Path
) -> None:
    """384 MiB cannot hold the initrd and its unpacked copy (the image needs ~448): the kernel
    stops unpacking, and the init says so instead of failing to mount a cut-off squashfs."""
    full = initrd(tmp_path, with_rootfs=True)
    serial = tmp_path / "serial.log"
    proc = qemu(full, "console=ttyS0 panic=-1", serial, memory=384)
    try:
        log = wait_for(serial, r"leave it \(exit\) to try again", proc, time.monotonic() + 300)
        assert proc.poll() is None, "PID 1 must keep running"
    finally:
        terminate(proc)
    assert re.search(
        r"^phase-os: the kernel could not unpack the whole initrd \(Initramfs unpacking "
        r"failed: [^)]*\): too little memory \(\d+ MiB\)",
        log,
        re.M,
    ), log
    assert "Welcome to" not in log and "Kernel panic" not in log, log


def test_same_inputs_give_the_same_image(image: dict[str, Any], tmp_path: Path) -> None:
    """Rebuilt from the same inputs and SOURCE_DATE_EPOCH, every file has the same bytes (the
    manifest's hashes can be re-signed). Debian's archive moves (security updates): if the
    package versions differ from the cached image's, a second fresh build is the reference."""

    def fresh(name: str) -> dict[str, Any]:
        result = subprocess.run(
            [
                *(sys.executable, "-m", "phase_client", "plasmd", "image", "build", "--force"),
                *("--out", str(tmp_path / name / "stable" / "x86_64")),
                *("--apt-cache", str(APT_CACHE), "--json", "--quiet"),
            ],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
            cwd=REPO,
            env={**os.environ, "SOURCE_DATE_EPOCH": str(image["epoch"])},
        )
        assert result.returncode == 0, result.stderr
        summary: dict[str, Any] = json.loads(result.stdout)
        return summary

    first = fresh("a")
    reference = image
    if (first["cache_key"], first["debian_packages_sha256"]) != (
        image["cache_key"],
        image["debian_packages_sha256"],
    ):
        reference = fresh("b")  # the archive or the tree changed since the cached build
    assert first["cache_key"] == reference["cache_key"]
    for name, info in reference["files"].items():
        assert first["files"][name] == info, name


def test_interrupted_build_leaves_nothing(image: dict[str, Any], tmp_path: Path) -> None:
    """SIGTERM while mmdebstrap has its chroot mounted: exit 130, 'interrupted', the temporary
    tree unmounted and removed, no output directory, no process of the build left."""
    out = tmp_path / "stable" / "x86_64"
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "phase_client", "plasmd", "image", "build", "--force"),
            *("--out", str(out), "--apt-cache", str(APT_CACHE)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 300
        mounted = False
        while time.monotonic() < deadline and proc.poll() is None and not mounted:
            mounted = str(out.parent) in Path("/proc/self/mountinfo").read_text()
            time.sleep(0.2)
        assert mounted, "mmdebstrap never mounted its chroot"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert err.decode().splitlines()[-1] == "plasmd: interrupted", err
    assert str(out.parent) not in Path("/proc/self/mountinfo").read_text()
    left = sorted(p.name for p in out.parent.iterdir())
    assert left == [".x86_64.build.log", ".x86_64.lock"], left
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, timeout=30)
    assert str(out.parent) not in ps.stdout, ps.stdout


def test_plasmd_serve_offers_the_image_as_is(image: dict[str, Any], tmp_path: Path) -> None:
    """build/os is an artifacts directory: plasmd serve signs a manifest naming the kernel,
    initramfs and rootfs with the image's hashes, its version and its cmdline."""
    log = tmp_path / "plasmd.log"
    proc = start_logged(
        [
            *(sys.executable, "-m", "phase_client", "plasmd", "serve"),
            *("--artifacts", str(IMAGE.parent.parent), "--bind", "127.0.0.1", "--port", "0"),
            *("--state-dir", str(tmp_path / "state"), "--no-mdns", "--no-dht"),
        ],
        log,
    )
    try:
        text = wait_for(log, r"Advertising stable/x86_64", proc, time.monotonic() + 120)
        match = re.search(r"Listening on http://127\.0\.0\.1:(\d+)/", text)
        assert match and proc.poll() is None, text
        url = f"http://127.0.0.1:{match.group(1)}/stable/x86_64/manifest.json"
        with urllib.request.urlopen(url, timeout=30) as response:
            manifest = parse_manifest(response.read())
    finally:
        terminate(proc)
    assert manifest.version == image["version"]
    assert manifest.cmdline == f"phase.version={image['version']}"
    files = {"kernel": "vmlinuz", "initramfs": "initramfs.img", "rootfs": "rootfs.sqfs"}
    assert set(manifest.artifacts) == set(files)
    for name, filename in files.items():
        artifact = manifest.artifacts[name]
        assert artifact.path == filename
        assert artifact.size == image["files"][filename]["size"]
        assert artifact.hash == "sha256:" + image["files"][filename]["sha256"]
