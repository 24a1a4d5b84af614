"""scripts/kexec-boot under busybox ash and dash, and the check it relies on (phase-verify
--check-dir). The re-check runs the real zipapp through a phase-verify symlink; loading uses the
real kexec binary where that is safe (a file that is no kernel: nothing can be loaded). The full
load + execute path runs under QEMU in test_e2e_qemu.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from phase_client.keys import SigningKey
from phase_client.manifest import build_document, dump_document, sign_document

from .conftest import REPO, run_tool

KEXEC_BOOT = REPO / "scripts" / "kexec-boot"
KEY = SigningKey.from_seed(b"\x21" * 32)
CMDLINE = "console=ttyS0 quiet"
SHELLS = [
    pytest.param(["busybox", "sh"], id="busybox-ash"),
    pytest.param(["dash"], id="dash"),
]


def fetch_dir(
    path: Path, kernel: bytes = b"K" * 4096, initramfs: bytes = b"I" * 2048, key: SigningKey = KEY
) -> Path:
    """A directory as phase-fetch writes it: files named after artifacts, manifest, cmdline."""
    path.mkdir(parents=True, exist_ok=True)
    now = int(time.time())
    artifacts = {}
    for name, data, file in (("kernel", kernel, "vmlinuz"), ("initramfs", initramfs, "i.img")):
        (path / name).write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        artifacts[name] = {"hash": f"sha256:{digest}", "size": len(data), "path": file}
    document = build_document(
        version="2026.11.24",
        sequence=3,
        channel="stable",
        arch="x86_64",
        created_at=now - 60,
        expires_at=now + 86400,
        cmdline=CMDLINE,
        artifacts=artifacts,
    )
    (path / "manifest.json").write_bytes(dump_document(sign_document(document, key)))
    (path / "cmdline").write_text(CMDLINE + "\n")
    return path


@pytest.fixture(scope="module")
def tools(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bin dir whose phase-verify is a symlink to a freshly built zipapp."""
    work = tmp_path_factory.mktemp("tools")
    pyz = work / "phase.pyz"
    subprocess.run(
        [
            *(sys.executable, str(REPO / "scripts" / "build-zipapp.py")),
            *("--output", str(pyz), "--python", f"{sys.executable} -IS"),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    bin_dir = work / "bin"
    bin_dir.mkdir()
    (bin_dir / "phase-verify").symlink_to(pyz)
    keys = work / "keys"
    keys.mkdir()
    (keys / "k.pub").write_text(KEY.public.keyid + "\n")
    return work


def run_kexec_boot(
    shell: list[str], tools: Path, tmp_path: Path, *argv: str, path: str | None = None
) -> subprocess.CompletedProcess[str]:
    if shutil.which(shell[0]) is None:
        pytest.fail(f"{shell[0]} missing (busybox-static and dash are Debian packages)")
    proc_cmdline = tmp_path / "proc-cmdline"
    # phase.x=* must stay a word, not a glob expanded in kexec-boot's working directory.
    proc_cmdline.write_text(
        "BOOT_IMAGE=/vmlinuz root=/dev/sda1 console=tty0 phase.channel=stable phase.x=*"
    )
    env = {
        "PATH": path or f"{tools / 'bin'}:/usr/bin:/bin",
        "PHASE_KEYS_DIR": str(tools / "keys"),
        "PHASE_PYZ_ROOT": str(tmp_path / "pyz"),
        "KEXEC_BOOT_PROC_CMDLINE": str(proc_cmdline),
        "KEXEC_BOOT_SYSCTL": str(tmp_path / "kexec_load_disabled"),
    }
    (tmp_path / "phase.x=GLOB-EXPANDED").touch()  # what phase.x=* would expand to in cwd
    return subprocess.run(
        [*shell, str(KEXEC_BOOT), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )


# --- phase-verify --check-dir ---------------------------------------------------------------


def check(directory: Path, *extra: str) -> subprocess.CompletedProcess[bytes]:
    manifest = str(directory / "manifest.json")
    return run_tool(
        "verify", manifest, "--key", KEY.public.keyid, "--check-dir", str(directory), *extra
    )


def test_check_dir_accepts_what_phase_fetch_wrote(tmp_path: Path) -> None:
    result = check(fetch_dir(tmp_path / "d"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().startswith("VERIFIED stable/x86_64")


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("kernel", lambda p: p.write_bytes(b"K" * 4095 + b"X")),  # same size, other bytes
        ("kernel", lambda p: p.write_bytes(b"K" * 4097)),  # one byte more
        ("initramfs", lambda p: p.unlink()),
        ("cmdline", lambda p: p.write_text("console=ttyS0 init=/bin/sh\n")),
    ],
    ids=["kernel-bytes", "kernel-size", "initramfs-missing", "cmdline"],
)
def test_check_dir_refuses_any_change(tmp_path: Path, name: str, change: object) -> None:
    directory = fetch_dir(tmp_path / "d")
    change(directory / name)  # type: ignore[operator]
    result = check(directory)
    assert result.returncode == 1
    err = result.stderr.decode()
    assert err.startswith("FAILED: integrity: ") and name in err, err
    assert len(err.strip().splitlines()) == 1
    as_json = check(directory, "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["reason"] == "integrity"


# --- kexec-boot -----------------------------------------------------------------------------


@pytest.mark.parametrize("shell", SHELLS)
def test_dry_run_prints_the_exact_commands(shell: list[str], tools: Path, tmp_path: Path) -> None:
    d = fetch_dir(tmp_path / "img")
    result = run_kexec_boot(shell, tools, tmp_path, "--dry-run", "--append", "extra=1", str(d))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("kexec-boot: VERIFIED stable/x86_64 version 2026.11.24 sequence 3")
    assert lines[0].endswith("; files match")
    cmdline = "console=ttyS0 quiet extra=1 console=tty0 phase.channel=stable phase.x=*"
    assert lines[1:] == [
        f"kexec -s -l {d}/kernel --initrd={d}/initramfs '--command-line={cmdline}'",
        "# if kexec -s (kexec_file_load) fails:",
        f"kexec -l {d}/kernel --initrd={d}/initramfs '--command-line={cmdline}'",
        "sync",
        "kexec -e",
    ]


@pytest.mark.parametrize("shell", SHELLS)
def test_refuses_a_changed_kernel(shell: list[str], tools: Path, tmp_path: Path) -> None:
    d = fetch_dir(tmp_path / "img")
    (d / "kernel").write_bytes(b"K" * 4095 + b"!")
    result = run_kexec_boot(shell, tools, tmp_path, "--dry-run", str(d))
    assert result.returncode == 1
    assert result.stdout == ""
    err = result.stderr.strip()
    assert err.startswith("kexec-boot: refusing to boot: ") and "sha256" in err, err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("shell", SHELLS)
def test_refuses_an_untrusted_manifest(shell: list[str], tools: Path, tmp_path: Path) -> None:
    d = fetch_dir(tmp_path / "img")
    other = SigningKey.from_seed(b"\x22" * 32)
    document = json.loads((d / "manifest.json").read_bytes())
    del document["signatures"]
    (d / "manifest.json").write_bytes(dump_document(sign_document(document, other)))
    result = run_kexec_boot(shell, tools, tmp_path, "--dry-run", str(d))
    assert result.returncode == 1
    assert "refusing to boot" in result.stderr and "signature" in result.stderr


@pytest.mark.parametrize("shell", SHELLS)
def test_direct_kernel_mode(shell: list[str], tools: Path, tmp_path: Path) -> None:
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"k")
    result = run_kexec_boot(
        shell, tools, tmp_path, "--dry-run", "--kernel", str(kernel), "--cmdline", "a=b c='d e'"
    )
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first == (
        f"kexec -s -l {kernel} '--command-line=a=b c='\\''d e'\\'' console=tty0 "
        "phase.channel=stable phase.x=*'"
    )


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--bogus"],
        ["--append"],
        ["a", "b"],
        ["--kernel", "/nonexistent"],
        ["--kernel", "/etc/hostname", "/tmp"],
        ["/nonexistent-dir"],
    ],
)
def test_usage_errors_exit_2_with_one_line(tools: Path, tmp_path: Path, argv: list[str]) -> None:
    result = run_kexec_boot(["busybox", "sh"], tools, tmp_path, *argv)
    assert result.returncode == 2, result
    assert result.stderr.startswith("kexec-boot: ") and len(result.stderr.splitlines()) == 1


def test_help(tools: Path, tmp_path: Path) -> None:
    result = run_kexec_boot(["busybox", "sh"], tools, tmp_path, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: kexec-boot")
    assert "exit codes:" in result.stdout


def test_not_a_fetch_dir(tools: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = run_kexec_boot(["busybox", "sh"], tools, tmp_path, str(tmp_path / "empty"))
    assert result.returncode == 1
    assert "manifest.json missing" in result.stderr


def test_kexec_missing(tools: Path, tmp_path: Path) -> None:
    d = fetch_dir(tmp_path / "img")
    # Debian installs kexec in /usr/sbin: leave it out of PATH.
    path = f"{tools / 'bin'}:/usr/bin:/bin"
    result = run_kexec_boot(["busybox", "sh"], tools, tmp_path, str(d), path=path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "kexec-boot: kexec not found (install kexec-tools)"
    )


def test_kexec_load_disabled(tools: Path, tmp_path: Path) -> None:
    if shutil.which("kexec", path="/usr/sbin:/sbin") is None:
        pytest.fail("kexec missing: install kexec-tools (scripts/install-deps)")
    d = fetch_dir(tmp_path / "img")
    (tmp_path / "kexec_load_disabled").write_text("1\n")
    path = f"{tools / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin"
    result = run_kexec_boot(["busybox", "sh"], tools, tmp_path, str(d), path=path)
    assert result.returncode == 1
    assert "kexec is disabled on this kernel (kernel.kexec_load_disabled=1" in result.stderr


def test_real_kexec_refuses_a_file_that_is_no_kernel(tools: Path, tmp_path: Path) -> None:
    """The real kexec binary, given bytes that are no kernel: it loads nothing (so this is safe
    on any machine), kexec-boot says so in one line and never runs kexec -e."""
    if shutil.which("kexec", path="/usr/sbin:/sbin") is None:
        pytest.fail("kexec missing: install kexec-tools (scripts/install-deps)")
    d = fetch_dir(tmp_path / "img", kernel=os.urandom(8192))
    path = f"{tools / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin"
    result = run_kexec_boot(["busybox", "sh"], tools, tmp_path, str(d), path=path)
    assert result.returncode == 1
    assert "kexec -s failed" in result.stdout and "trying kexec -l" in result.stdout
    assert "kexec -e" not in result.stdout
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("kexec-boot: cannot load the kernel: ")
    assert "not in a format kexec can load" in last or "not permitted" in last, last


def test_shell_scripts_pass_shellcheck() -> None:
    """The boot scripts are POSIX sh (busybox ash in the initramfs): shellcheck -s sh clean."""
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck missing: run scripts/install-deps")
    scripts = [
        REPO / "scripts" / name for name in ("kexec-boot", "build-initramfs.sh", "fetch-kernel.sh")
    ] + [REPO / "initramfs" / name for name in ("init", "udhcpc.script", "stage2-init")]
    result = subprocess.run(
        ["shellcheck", "-s", "sh", "-S", "warning", *map(str, scripts)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout
