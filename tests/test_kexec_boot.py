"""initramfs/kexec-boot under busybox ash and dash, and the check it relies on (phase-verify
--check-dir, --stage-into). The re-check runs the real zipapp through a phase-verify symlink;
loading uses the real kexec binary where that is safe (a file that is no kernel: nothing can be
loaded), or a stand-in that records what it was given (what a real load would read). The full
load + execute path runs under QEMU in test_e2e_qemu.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from phase_client.keys import SigningKey
from phase_client.manifest import build_document, dump_document, sign_document

from .conftest import REPO, run_tool

KEXEC_BOOT = REPO / "initramfs" / "kexec-boot"
KEY = SigningKey.from_seed(b"\x21" * 32)
CMDLINE = "console=ttyS0 quiet"
VERSION = "2026.11.24"
# What stage adds after the signed cmdline: the version the booted system reports.
VERSION_WORD = f"phase.version={VERSION}"
# Every shell trap at once: echo escapes (dash: \c ends the output, \n a newline), a leading
# -n, printf directives, quotes, command substitution, backquotes, globs, backslashes, UTF-8.
TRICKY_CMDLINE = (
    "-n console=ttyS0 a=\\c b=\\n c=%s%d d=\"x y\" e='q' f=$(touch PWNED) g=`id` "
    "h=* i=\\\\ j=\\t k=\u00e9 l=[a-z]? m=~ n=$HOME"
)
SHELLS = [
    pytest.param(["busybox", "sh"], id="busybox-ash"),
    pytest.param(["dash"], id="dash"),
]


def fetch_dir(
    path: Path,
    kernel: bytes = b"K" * 4096,
    initramfs: bytes | None = b"I" * 2048,
    key: SigningKey = KEY,
    cmdline: str = CMDLINE,
    rootfs: bytes | None = None,
    dtb: bytes | None = None,
) -> Path:
    """A directory as phase-fetch writes it: files named after artifacts, manifest, cmdline.
    ``initramfs=None``: a manifest that names none (likewise rootfs and dtb, named only when
    given)."""
    path.mkdir(parents=True, exist_ok=True)
    now = int(time.time())
    artifacts = {}
    files = [
        ("kernel", kernel, "vmlinuz"),
        ("initramfs", initramfs, "i.img"),
        ("rootfs", rootfs, "rootfs.sqfs"),
        ("dtb", dtb, "board.dtb"),
    ]
    for name, data, file in files:
        if data is None:
            continue
        (path / name).write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        artifacts[name] = {"hash": f"sha256:{digest}", "size": len(data), "path": file}
    document = build_document(
        version=VERSION,
        sequence=3,
        channel="stable",
        arch="x86_64",
        created_at=now - 60,
        expires_at=now + 86400,
        cmdline=cmdline,
        artifacts=artifacts,
    )
    (path / "manifest.json").write_bytes(dump_document(sign_document(document, key)))
    (path / "cmdline").write_text(cmdline + "\n")
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
    shell: list[str],
    tools: Path,
    tmp_path: Path,
    *argv: str,
    path: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """kexec-boot with a clean environment; TMPDIR (where it stages) is ``tmp_path/run``."""
    if shutil.which(shell[0]) is None:
        pytest.fail(f"{shell[0]} missing (busybox-static and dash are Debian packages)")
    proc_cmdline = tmp_path / "proc-cmdline"
    # phase.x=* must stay a word, not a glob expanded in kexec-boot's working directory.
    proc_cmdline.write_text(
        "BOOT_IMAGE=/vmlinuz root=/dev/sda1 console=tty0 phase.channel=stable phase.x=* "
        # The running image's own: never carried over to the next one.
        "phase.version=0.9-old phase.rootfs_sha256=00ff"
    )
    (tmp_path / "run").mkdir(exist_ok=True)
    env = {
        "TMPDIR": str(tmp_path / "run"),
        "KEXEC_BOOT_LOCKDOWN": str(tmp_path / "lockdown"),  # absent: not locked down
        **(env or {}),
        "PATH": path or f"{tools / 'bin'}:/usr/bin:/bin",
        "PHASE_KEYS_DIR": str(tools / "keys"),
        "PHASE_PYZ_ROOT": str(tmp_path / "pyz"),
        "KEXEC_BOOT_PROC_CMDLINE": str(proc_cmdline),
        "KEXEC_BOOT_SYSCTL": str(tmp_path / "kexec_load_disabled"),
    }
    (tmp_path / "phase.x=GLOB-EXPANDED").touch()  # what phase.x=* would expand to in cwd
    env = {k: v for k, v in env.items() if v}  # TMPDIR="" leaves it unset
    return subprocess.run(
        [*shell, str(KEXEC_BOOT), *argv],
        capture_output=True,
        encoding="utf-8",
        timeout=120,
        env=env,
        cwd=tmp_path,
    )


def staged_in(result: subprocess.CompletedProcess[str]) -> Path:
    """The private directory kexec-boot staged into, from its first line."""
    found = re.search(r"; files match; staged in (\S+)$", result.stdout.splitlines()[0])
    assert found, result.stdout
    return Path(found.group(1))


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
        ("cmdline", lambda p: p.unlink()),
        ("cmdline", lambda p: p.write_text(CMDLINE + "  \n")),
        ("kernel", lambda p: (p.rename(p.with_name("k")), p.symlink_to("k"))),
        ("kernel", lambda p: (p.unlink(), os.mkfifo(p))),
        ("initramfs", lambda p: p.write_bytes(b"")),
    ],
    ids=[
        "kernel-bytes",
        "kernel-size",
        "initramfs-missing",
        "cmdline",
        "cmdline-missing",
        "cmdline-spaces",
        "kernel-symlink-to-the-right-bytes",
        "kernel-fifo",
        "initramfs-empty",
    ],
)
def test_check_dir_refuses_any_change(tmp_path: Path, name: str, change: object) -> None:
    """Every artifact must be a regular file (not a link, not a FIFO that would block the
    reader) with the signed bytes, and DIR/cmdline the manifest's cmdline exactly."""
    directory = fetch_dir(tmp_path / "d")
    change(directory / name)  # type: ignore[operator]
    result = check(directory)
    assert result.returncode == 1
    err = result.stderr.decode()
    assert err.startswith("FAILED: integrity: ") and name in err, err
    assert len(err.strip().splitlines()) == 1
    as_json = check(directory, "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["error"]["reason"] == "integrity"


def test_check_dir_refuses_an_artifact_the_manifest_does_not_name(tmp_path: Path) -> None:
    """An earlier fetch's initramfs, or a planted one, beside a manifest that names none."""
    directory = fetch_dir(tmp_path / "d", initramfs=None)
    assert check(directory).returncode == 0
    (directory / "initramfs").write_bytes(b"I" * 2048)
    result = check(directory)
    assert result.returncode == 1
    assert result.stderr.decode().strip() == (
        f"FAILED: integrity: {directory}/initramfs: not named by the manifest"
    )


def stage(directory: Path, private: Path) -> subprocess.CompletedProcess[bytes]:
    return check(directory, "--stage-into", str(private))


def test_stage_into_copies_exactly_what_kexec_loads(tmp_path: Path) -> None:
    directory = fetch_dir(tmp_path / "d", cmdline=TRICKY_CMDLINE)
    private = tmp_path / "private"
    result = stage(directory, private)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert sorted(os.listdir(private)) == ["cmdline", "initrd", "kernel"]
    assert (private / "kernel").read_bytes() == (directory / "kernel").read_bytes()
    assert (private / "initrd").read_bytes() == (directory / "initramfs").read_bytes()
    assert (private / "cmdline").read_bytes() == f"{TRICKY_CMDLINE} {VERSION_WORD}".encode()
    # Kernel only: no initrd at all, whatever DIR held before.
    kernel_only = fetch_dir(tmp_path / "k", initramfs=None, cmdline="")
    assert stage(kernel_only, tmp_path / "p2").returncode == 0
    assert sorted(os.listdir(tmp_path / "p2")) == ["cmdline", "kernel"]
    assert (tmp_path / "p2" / "cmdline").read_bytes() == VERSION_WORD.encode()


def test_stage_into_refuses_and_leaves_nothing(tmp_path: Path) -> None:
    directory = fetch_dir(tmp_path / "d")
    (directory / "initramfs").write_bytes(b"I" * 2047 + b"!")
    result = stage(directory, tmp_path / "private")
    assert result.returncode == 1 and b"initramfs: sha256 differs" in result.stderr
    assert not (tmp_path / "private").exists()  # removed again, half a copy is never left
    # A directory that exists already may be anyone's: never staged into.
    directory = fetch_dir(tmp_path / "ok")
    (tmp_path / "taken").mkdir()
    result = stage(directory, tmp_path / "taken")
    assert result.returncode == 2 and os.listdir(tmp_path / "taken") == []
    assert b"already exists" in result.stderr and len(result.stderr.splitlines()) == 1
    # A parent others can write to (not sticky) could swap the directory after the copy.
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    result = stage(directory, shared / "private")
    assert result.returncode == 2 and b"not safe for a private staging directory" in result.stderr
    assert os.listdir(shared) == []
    result = run_tool("verify", str(directory / "manifest.json"), "--key", KEY.public.keyid,
                      "--stage-into", str(tmp_path / "x"))  # fmt: skip
    assert result.returncode == 2 and b"--stage-into needs --check-dir" in result.stderr


# --- kexec-boot -----------------------------------------------------------------------------


@pytest.mark.parametrize("shell", SHELLS)
def test_dry_run_prints_the_exact_commands(shell: list[str], tools: Path, tmp_path: Path) -> None:
    d = fetch_dir(tmp_path / "img")
    result = run_kexec_boot(shell, tools, tmp_path, "--dry-run", "--append", "extra=1", str(d))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("kexec-boot: VERIFIED stable/x86_64 version 2026.11.24 sequence 3")
    stage = staged_in(result)
    assert stage.parent == tmp_path / "run" and re.fullmatch(
        r"kexec-boot\.[0-9a-f]{16}", stage.name
    )
    cmdline = (
        f"console=ttyS0 quiet {VERSION_WORD} extra=1 console=tty0 phase.channel=stable phase.x=*"
    )
    assert lines[1:] == [
        f"kexec -s -l {stage}/kernel --initrd={stage}/initrd '--command-line={cmdline}'",
        "# if kexec -s (kexec_file_load) fails:",
        f"kexec -l {stage}/kernel --initrd={stage}/initrd '--command-line={cmdline}'",
        "sync",
        "kexec -e",
    ]
    assert os.listdir(tmp_path / "run") == []  # a dry run removes what it staged


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(
    ("mode", "first"),
    [
        ("[none] integrity confidentiality", "-l -i"),
        ("none [integrity] confidentiality", "-s -l"),
        ("none integrity [confidentiality]", "-s -l"),
        ("", "-s -l"),  # a kernel that says nothing: not known, as if locked down
    ],
)
def test_the_load_order_follows_the_lockdown_mode(
    shell: list[str], mode: str, first: str, tools: Path, tmp_path: Path
) -> None:
    """Not locked down: kexec_load without purgatory's re-hash first (the staged copy was
    hashed; kexec_file_load's signature check would be advisory), then kexec_file_load.
    Locked down or not known: kexec_file_load first, as lockdown requires."""
    d = fetch_dir(tmp_path / "img")
    (tmp_path / "lockdown").write_text(mode + "\n")
    result = run_kexec_boot(shell, tools, tmp_path, "--dry-run", str(d))
    assert result.returncode == 0, result.stderr
    stage = staged_in(result)
    cmdline = f"console=ttyS0 quiet {VERSION_WORD} console=tty0 phase.channel=stable phase.x=*"
    load = f"{stage}/kernel --initrd={stage}/initrd '--command-line={cmdline}'"
    expected = (
        [f"kexec -l -i {load}", "# if kexec -l (kexec_load) fails:", f"kexec -s -l {load}"]
        if first == "-l -i"
        else [f"kexec -s -l {load}", "# if kexec -s (kexec_file_load) fails:", f"kexec -l {load}"]
    )
    assert result.stdout.splitlines()[1:] == [*expected, "sync", "kexec -e"]


# kexec on a kernel without CONFIG_KEXEC (no kexec_load) but with kexec_file_load: kexec -s
# loads; records each call.
FILE_LOAD_ONLY_KEXEC = """#!/bin/sh
printf '%s\\n' "$*" >>"$RECORD/calls"
case "$1" in
    -s) exit 0 ;;
    -e) exit 0 ;;
esac
echo "kexec_load failed: Function not implemented" >&2
exit 1
"""


@pytest.mark.parametrize("shell", SHELLS)
def test_not_locked_down_without_kexec_load_falls_back_to_kexec_file_load(
    shell: list[str], tools: Path, tmp_path: Path
) -> None:
    d = fetch_dir(tmp_path / "img")
    fake, record = fake_kexec(tmp_path, FILE_LOAD_ONLY_KEXEC)
    (tmp_path / "lockdown").write_text("[none] integrity confidentiality\n")
    result = run_kexec_boot(
        shell, tools, tmp_path, str(d),
        path=f"{tools / 'bin'}:{fake}:/usr/bin:/bin", env={"RECORD": str(record)},
    )  # fmt: skip
    # The fake kexec -e returns: with a real one this process would be gone.
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stderr == "kexec-boot: kexec -e returned: the new kernel did not start\n"
    assert (
        "kexec-boot: kexec -l -i failed (this kernel does not implement that kexec system call); "
        "trying kexec -s -l" in result.stdout
    ), result.stdout
    calls = (record / "calls").read_text().splitlines()
    assert [c.split()[:2] for c in calls] == [["-l", "-i"], ["-s", "-l"], ["-e"]], calls
    assert "kexec-boot: kernel loaded; kexec -e" in result.stdout
    assert os.listdir(tmp_path / "run") == []


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
def test_the_signed_cmdline_reaches_kexec_byte_for_byte(
    shell: list[str], tools: Path, tmp_path: Path
) -> None:
    d = fetch_dir(tmp_path / "img", cmdline=TRICKY_CMDLINE)
    result = run_kexec_boot(shell, tools, tmp_path, "--dry-run", "--append", "x=\\c", str(d))
    assert result.returncode == 0, result.stderr
    words = shlex.split(result.stdout.splitlines()[1])  # the line pastes into a shell as is
    assert words[-1] == (
        f"--command-line={TRICKY_CMDLINE} {VERSION_WORD} x=\\c console=tty0 "
        "phase.channel=stable phase.x=*"
    )
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("shell", SHELLS)
def test_no_signed_cmdline_file_no_boot(shell: list[str], tools: Path, tmp_path: Path) -> None:
    """DIR/cmdline deleted: the command line comes from the manifest, and the missing file is a
    difference from what phase-fetch wrote."""
    d = fetch_dir(tmp_path / "img")
    (d / "cmdline").unlink()
    result = run_kexec_boot(shell, tools, tmp_path, "--dry-run", str(d))
    assert result.returncode == 1 and result.stdout == ""
    err = result.stderr.strip()
    assert err.startswith("kexec-boot: refusing to boot: ") and f"{d}/cmdline" in err, err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("shell", SHELLS)
def test_only_what_the_manifest_names_is_loaded(
    shell: list[str], tools: Path, tmp_path: Path
) -> None:
    """Manifest B names a kernel only: no --initrd, and an initramfs lying in DIR (an earlier
    fetch's, or planted) is a refusal, never an initrd."""
    d = fetch_dir(tmp_path / "img", initramfs=None)
    result = run_kexec_boot(shell, tools, tmp_path, "--dry-run", str(d))
    assert result.returncode == 0, result.stderr
    assert "--initrd" not in result.stdout
    (d / "initramfs").write_bytes(b"planted")
    result = run_kexec_boot(shell, tools, tmp_path, "--dry-run", str(d))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip() == (
        f"kexec-boot: refusing to boot: {d} does not match its signed manifest: "
        f"FAILED: integrity: {d}/initramfs: not named by the manifest"
    )


# A stand-in for kexec: a real load would replace the machine. It first does what an attacker
# with write access to DIR would do between the check and the load (rewrites DIR/kernel and
# DIR/initramfs), then records what it was given and the bytes of those files, and fails.
FAKE_KEXEC = """#!/bin/sh
printf 'evil' >"$DIR/kernel"
printf 'evil' >"$DIR/initramfs"
for arg in "$@"; do printf '%s\\000' "$arg"; done >"$RECORD/args"
for arg in "$@"; do
    case "$arg" in
        --initrd=*) cat "${arg#--initrd=}" >"$RECORD/initrd" ;;
        -*) ;;
        *) cat "$arg" >"$RECORD/kernel" ;;
    esac
done
printf 'Cannot determine the file type of %s\\n' "$1" >&2
exit 1
"""


def fake_kexec(tmp_path: Path, script: str) -> tuple[Path, Path]:
    """A bin dir holding ``script`` as kexec, and the empty dir it records into."""
    fake, record = tmp_path / "fakebin", tmp_path / "record"
    fake.mkdir()
    record.mkdir()
    (fake / "kexec").write_text(script)
    (fake / "kexec").chmod(0o755)
    return fake, record


@pytest.mark.parametrize("shell", SHELLS)
def test_kexec_loads_the_bytes_that_were_hashed(
    shell: list[str], tools: Path, tmp_path: Path
) -> None:
    kernel, initramfs = os.urandom(8192), os.urandom(4096)
    d = fetch_dir(tmp_path / "img", kernel=kernel, initramfs=initramfs, cmdline=TRICKY_CMDLINE)
    fake, record = fake_kexec(tmp_path, FAKE_KEXEC)
    result = run_kexec_boot(
        shell,
        tools,
        tmp_path,
        str(d),
        path=f"{tools / 'bin'}:{fake}:/usr/bin:/bin",
        env={"DIR": str(d), "RECORD": str(record)},
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "kexec-boot: cannot load the kernel: the kernel file is not in a format kexec can load"
    )
    assert (d / "kernel").read_bytes() == b"evil"  # changed after the check...
    assert (record / "kernel").read_bytes() == kernel  # ...but kexec read the checked bytes
    assert (record / "initrd").read_bytes() == initramfs
    args = (record / "args").read_bytes().decode().split("\0")[:-1]
    stage = staged_in(result)
    assert args[:3] == ["-l", f"{stage}/kernel", f"--initrd={stage}/initrd"]  # the fallback
    assert args[3].startswith(f"--command-line={TRICKY_CMDLINE} {VERSION_WORD} console=tty0 ")
    assert not stage.exists()  # removed after the failed load
    assert os.listdir(tmp_path / "run") == []


def unpack_carried(initrd: bytes, offset: int, into: Path) -> list[str]:
    """GNU cpio reads the carry archive that starts at ``offset`` into ``into``: its names."""
    into.mkdir()
    listed = subprocess.run(
        ["cpio", "-t", "--quiet"], input=initrd[offset:], capture_output=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    unpacked = subprocess.run(
        ["cpio", "-id", "--quiet", "--no-absolute-filenames"],
        input=initrd[offset:],
        capture_output=True,
        cwd=into,
        timeout=60,
    )
    assert unpacked.returncode == 0, unpacked.stderr
    return listed.stdout.decode().split()


def test_stage_carries_the_rootfs_in_the_initrd(tmp_path: Path) -> None:
    """initrd = the initramfs, zeros to a 4-byte boundary, then a newc cpio (what the kernel
    unpacks beside the initramfs) with the signed manifest and every artifact in the mirror
    layout, and phase/rootfs.sqfs linking to the rootfs there; the dtb is staged on its own;
    the cmdline tells the new system the rootfs's signed hash."""
    initramfs, rootfs, dtb = os.urandom(2047), os.urandom(70001), os.urandom(999)
    d = fetch_dir(tmp_path / "d", initramfs=initramfs, rootfs=rootfs, dtb=dtb)
    private = tmp_path / "private"
    result = stage(d, private)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(private)) == ["cmdline", "dtb", "initrd", "kernel"]
    assert (private / "dtb").read_bytes() == dtb
    initrd = (private / "initrd").read_bytes()
    assert initrd[:2047] == initramfs and initrd[2047:2048] == b"\0"
    assert initrd[2048:2054] == b"070701"  # the carry archive starts on the boundary
    names = unpack_carried(initrd, 2048, tmp_path / "unpacked")
    combo = "phase/mirror/stable/x86_64"
    assert sorted(names) == sorted(
        ["phase", "phase/mirror", "phase/mirror/stable", combo, "phase/rootfs.sqfs"]
        + [f"{combo}/{f}" for f in ("manifest.json", "vmlinuz", "i.img", "rootfs.sqfs")]
        + [f"{combo}/board.dtb"]
    )
    unpacked = tmp_path / "unpacked"
    assert (unpacked / "phase" / "rootfs.sqfs").read_bytes() == rootfs  # through the link
    assert (unpacked / combo / "manifest.json").read_bytes() == (d / "manifest.json").read_bytes()
    assert (unpacked / combo / "vmlinuz").read_bytes() == (d / "kernel").read_bytes()
    assert (unpacked / combo / "i.img").read_bytes() == initramfs
    assert (unpacked / combo / "board.dtb").read_bytes() == dtb
    assert len(initrd) % 4 == 0
    sha = hashlib.sha256(rootfs).hexdigest()
    expected = f"{CMDLINE} {VERSION_WORD} phase.rootfs_sha256={sha}"
    assert (private / "cmdline").read_bytes() == expected.encode()


def test_stage_adds_no_word_the_signed_cmdline_already_has(tmp_path: Path) -> None:
    """An image whose signed cmdline already says phase.version=<its version> (what plasmd
    image build writes) gets it once; a version that is not one plain word is not added."""
    d = fetch_dir(tmp_path / "d", cmdline=f"quiet {VERSION_WORD}")
    assert stage(d, tmp_path / "p1").returncode == 0
    assert (tmp_path / "p1" / "cmdline").read_text() == f"quiet {VERSION_WORD}"
    document = json.loads((d / "manifest.json").read_bytes())
    del document["signatures"]
    document["version"] = "1.0 beta"
    (d / "manifest.json").write_bytes(dump_document(sign_document(document, KEY)))
    assert stage(d, tmp_path / "p2").returncode == 0
    assert (tmp_path / "p2" / "cmdline").read_text() == f"quiet {VERSION_WORD}"


def test_stage_refuses_a_changed_rootfs_and_leaves_nothing(tmp_path: Path) -> None:
    rootfs = os.urandom(4096)
    d = fetch_dir(tmp_path / "d", rootfs=rootfs)
    (d / "rootfs").write_bytes(rootfs[:-1] + bytes([rootfs[-1] ^ 1]))
    result = stage(d, tmp_path / "private")
    assert result.returncode == 1 and b"rootfs: sha256 differs" in result.stderr, result.stderr
    assert not (tmp_path / "private").exists()


def meminfo(path: Path, available_kib: int) -> Path:
    path.write_text(
        f"MemTotal:        1000000 kB\nMemFree:          500000 kB\n"
        f"MemAvailable:   {available_kib:8d} kB\nBuffers:            1000 kB\n"
    )
    return path


@pytest.mark.parametrize("shell", SHELLS)
def test_too_little_memory_is_one_line_before_anything_is_staged(
    shell: list[str], tools: Path, tmp_path: Path
) -> None:
    """MemAvailable below three times the staged size (the private copy, then kexec's buffer
    and its segments) plus the headroom: refused with the numbers, nothing staged, nothing
    loaded, DIR untouched."""
    kernel, initramfs, rootfs = b"K" * 4096, b"I" * 2048, os.urandom(3 << 20)
    d = fetch_dir(tmp_path / "img", kernel=kernel, initramfs=initramfs, rootfs=rootfs)
    # kernel, initrd (initramfs + the carry archive: manifest, kernel, initramfs, rootfs again
    # and ~1 KiB of headers); three times, plus the 32 MiB headroom.
    carried = len(kernel) + len(initramfs) + len(rootfs)
    staged = len(kernel) + len(initramfs) + carried
    needed_mib = (3 * staged + (32 << 20)) >> 20  # 41
    assert (3 * (staged + 4096) + (32 << 20)) >> 20 == needed_mib
    low = meminfo(tmp_path / "meminfo-low", 20 << 10)
    result = run_kexec_boot(
        shell, tools, tmp_path, "--dry-run", str(d), env={"KEXEC_BOOT_MEMINFO": str(low)}
    )
    assert result.returncode == 1 and result.stdout == "", result
    err = result.stderr.strip()
    assert err == (
        "kexec-boot: refusing to boot: phase-verify: not enough memory to stage and load this "
        f"image: needs {needed_mib} MiB, has 20 MiB available"
    ), err
    assert os.listdir(tmp_path / "run") == []
    assert (d / "rootfs").read_bytes() == rootfs
    enough = meminfo(tmp_path / "meminfo-ok", (needed_mib + 1) << 10)
    result = run_kexec_boot(
        shell, tools, tmp_path, "--dry-run", str(d), env={"KEXEC_BOOT_MEMINFO": str(enough)}
    )
    assert result.returncode == 0, result.stderr


def test_consume_removes_the_fetched_files_once_staged(tools: Path, tmp_path: Path) -> None:
    """--consume: the artifact files in DIR go once everything is staged (what kexec loads is
    the staged copy), and the memory check counts their room as freed; not on a dry run, not
    when the check fails."""
    kernel, initramfs, rootfs = b"K" * 4096, b"I" * 2048, os.urandom(3 << 20)
    d = fetch_dir(tmp_path / "img", kernel=kernel, initramfs=initramfs, rootfs=rootfs)
    staged = 2 * (len(kernel) + len(initramfs)) + len(rootfs)
    needed_mib = (3 * staged - len(kernel + initramfs + rootfs) + (32 << 20)) >> 20  # 38
    honest = "".join(line for line in FAKE_KEXEC.splitlines(True) if "evil" not in line)
    fake, record = fake_kexec(tmp_path, honest)
    env = {
        "DIR": str(d),
        "RECORD": str(record),
        "KEXEC_BOOT_MEMINFO": str(meminfo(tmp_path / "meminfo", (needed_mib + 1) << 10)),
    }
    path = f"{tools / 'bin'}:{fake}:/usr/bin:/bin"
    shell = ["busybox", "sh"]
    # A dry run consumes nothing, so it needs the room for DIR too (41 MiB).
    result = run_kexec_boot(shell, tools, tmp_path, "--dry-run", "--consume", str(d), env=env)
    assert result.returncode == 1 and "needs 41 MiB, has 39 MiB" in result.stderr, result.stderr
    plenty = {**env, "KEXEC_BOOT_MEMINFO": str(meminfo(tmp_path / "plenty", 42 << 10))}
    result = run_kexec_boot(shell, tools, tmp_path, "--dry-run", "--consume", str(d), env=plenty)
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(d)) == ["cmdline", "initramfs", "kernel", "manifest.json", "rootfs"]
    # A changed rootfs: refused, and DIR keeps everything.
    (d / "rootfs").write_bytes(rootfs[:-1] + b"!")
    result = run_kexec_boot(shell, tools, tmp_path, "--consume", str(d), path=path, env=env)
    assert result.returncode == 1 and "rootfs: sha256 differs" in result.stderr, result.stderr
    assert len(os.listdir(d)) == 5
    (d / "rootfs").write_bytes(rootfs)
    result = run_kexec_boot(shell, tools, tmp_path, "--consume", str(d), path=path, env=env)
    assert result.returncode == 1, result.stderr  # the stand-in kexec cannot load
    assert sorted(os.listdir(d)) == ["cmdline", "manifest.json"]
    unpack_carried((record / "initrd").read_bytes(), 2048, tmp_path / "unpacked")
    assert (tmp_path / "unpacked" / "phase" / "rootfs.sqfs").read_bytes() == rootfs


@pytest.mark.parametrize(("machine", "loads_dtb"), [("aarch64", True), ("x86_64", False)])
def test_dtb_goes_to_kexec_where_the_arch_uses_one(
    machine: str, loads_dtb: bool, tools: Path, tmp_path: Path
) -> None:
    d = fetch_dir(tmp_path / "img", dtb=b"\xd0\x0d\xfe\xed" + b"\0" * 60)
    result = run_kexec_boot(
        ["busybox", "sh"], tools, tmp_path, "--dry-run", str(d),
        env={"KEXEC_BOOT_MACHINE": machine},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    stage = staged_in(result)
    load = result.stdout.splitlines()[1]
    assert (f" --dtb={stage}/dtb " in load) == loads_dtb, load


FAKE_KEXEC_ROOTFS = FAKE_KEXEC.replace(
    "printf 'evil' >\"$DIR/initramfs\"\n",
    "printf 'evil' >\"$DIR/initramfs\"\nprintf 'evil' >\"$DIR/rootfs\"\n",
)


def test_kexec_loads_the_rootfs_that_was_hashed(tools: Path, tmp_path: Path) -> None:
    """DIR/rootfs rewritten between the check and the load: the initrd kexec reads still
    carries the signed rootfs."""
    rootfs = os.urandom(65536)
    d = fetch_dir(tmp_path / "img", initramfs=b"I" * 2048, rootfs=rootfs)
    fake, record = fake_kexec(tmp_path, FAKE_KEXEC_ROOTFS)
    result = run_kexec_boot(
        ["busybox", "sh"], tools, tmp_path, str(d),
        path=f"{tools / 'bin'}:{fake}:/usr/bin:/bin",
        env={"DIR": str(d), "RECORD": str(record)},
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert (d / "rootfs").read_bytes() == b"evil"
    initrd = (record / "initrd").read_bytes()
    assert initrd[:2048] == b"I" * 2048
    unpack_carried(initrd, 2048, tmp_path / "unpacked")
    assert (tmp_path / "unpacked" / "phase" / "rootfs.sqfs").read_bytes() == rootfs


def test_stages_under_run_without_tmpdir(tools: Path, tmp_path: Path) -> None:
    """The initramfs sets no TMPDIR: the private directory goes on /run (a tmpfs there)."""
    d = fetch_dir(tmp_path / "img")
    result = run_kexec_boot(
        ["busybox", "sh"], tools, tmp_path, "--dry-run", str(d), env={"TMPDIR": ""}
    )
    assert result.returncode == 0, result.stderr
    stage = staged_in(result)
    assert stage.parent == Path("/run" if os.access("/run", os.W_OK) else "/tmp")
    assert not stage.exists()


def test_refuses_to_stage_under_an_unsafe_directory(tools: Path, tmp_path: Path) -> None:
    d = fetch_dir(tmp_path / "img")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    result = run_kexec_boot(
        ["dash"], tools, tmp_path, "--dry-run", str(d), env={"TMPDIR": str(shared)}
    )
    assert result.returncode == 1 and result.stdout == ""
    err = result.stderr.strip()
    assert (
        err.startswith("kexec-boot: refusing to boot: phase-verify: ")
        and len(err.splitlines()) == 1
    )
    assert "not safe for a private staging directory" in err
    assert os.listdir(shared) == []


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
    # Every shell script of the project: the stick's, the OS image's and their builders.
    scripts = [
        *(REPO / "scripts" / n for n in ("build-initramfs.sh", "build-os-initramfs.sh")),
        REPO / "scripts" / "pack-cpio.sh",
        REPO / "scripts" / "fetch-kernel.sh",
        *(REPO / "initramfs" / n for n in ("kexec-boot", "init", "udhcpc.script", "stage2-init")),
        REPO / "initramfs" / "os-init",
        REPO / "packaging" / "phase-os-up",
    ]
    result = subprocess.run(
        ["shellcheck", "-s", "sh", "-S", "warning", *map(str, scripts)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout


def refusing_kexec(file_load_error: str) -> str:
    """A kexec whose kexec -s (kexec_file_load) fails with ``file_load_error`` and whose
    kexec_load fails with EPERM, as under lockdown; records each call."""
    return f"""#!/bin/sh
printf '%s\\n' "$*" >>"$RECORD/calls"
case "$1" in
    -s) echo "kexec_file_load failed: {file_load_error}" >&2 ;;
    *) echo "kexec_load failed: Operation not permitted" >&2 ;;
esac
exit 1
"""


# kexec under lockdown with an unsigned kernel (Linux 6.1: kexec_file_load fails with ENODATA).
LOCKED_DOWN_KEXEC = refusing_kexec("No data available")


@pytest.mark.parametrize("shell", SHELLS)
def test_a_rejected_signature_is_one_line_and_no_fallback(
    shell: list[str], tools: Path, tmp_path: Path
) -> None:
    d = fetch_dir(tmp_path / "img")
    fake, record = fake_kexec(tmp_path, LOCKED_DOWN_KEXEC)
    result = run_kexec_boot(
        shell, tools, tmp_path, str(d),
        path=f"{tools / 'bin'}:{fake}:/usr/bin:/bin", env={"RECORD": str(record)},
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "kexec-boot: cannot load the kernel: the kernel's signature was rejected "
        "(lockdown / kexec signature enforcement)"
    )
    calls = (record / "calls").read_text().splitlines()
    assert len(calls) == 1 and calls[0].startswith("-s -l "), calls  # no kexec -l after it
    assert "trying kexec -l" not in result.stdout
    assert os.listdir(tmp_path / "run") == []


# No kexec_file_load (kexec -s: ENOSYS), then kexec_load refused.
NO_FILE_LOAD_KEXEC = refusing_kexec("Function not implemented")


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize(
    "mode", ["none [integrity] confidentiality", "none integrity [confidentiality]", "[none] x"]
)
def test_no_kexec_file_load_under_lockdown_is_one_line_without_kexec_load(
    shell: list[str], mode: str, tools: Path, tmp_path: Path
) -> None:
    """Debian 12's arm64 kernels have no kexec_file_load; under Secure Boot's lockdown kexec_load
    is forbidden too: one line naming both, and no kexec_load attempt. Not locked down: the
    fallback to kexec_load is tried (and here refused)."""
    d = fetch_dir(tmp_path / "img")
    fake, record = fake_kexec(tmp_path, NO_FILE_LOAD_KEXEC)
    (tmp_path / "lockdown").write_text(mode + "\n")
    result = run_kexec_boot(
        shell, tools, tmp_path, str(d),
        path=f"{tools / 'bin'}:{fake}:/usr/bin:/bin", env={"RECORD": str(record)},
    )  # fmt: skip
    assert result.returncode == 1
    calls = (record / "calls").read_text().splitlines()
    if mode.startswith("[none]"):  # kexec_load first (refused here), then kexec_file_load
        assert [c.split()[:2] for c in calls] == [["-l", "-i"], ["-s", "-l"]], calls
        assert result.stderr.strip() == (
            "kexec-boot: cannot load the kernel: this kernel does not implement that kexec "
            "system call"
        )
        return
    assert len(calls) == 1 and calls[0].startswith("-s -l "), calls
    assert result.stderr.strip() == (
        "kexec-boot: cannot load the kernel: this kernel has no kexec_file_load (kexec -s) and "
        "its lockdown (Secure Boot) forbids kexec_load: boot with Secure Boot off, or from a "
        "kernel built with CONFIG_KEXEC_FILE"
    )
    assert os.listdir(tmp_path / "run") == []


# --- arm64: Image.gz, device tree, no kexec_file_load -------------------------------------------


def arm64_image(size: int = 64 * 1024) -> bytes:
    """Bytes with an arm64 Image header's magic ("ARMd" at byte 56): 4 KiB random, then zeros
    (a large one compresses to little)."""
    body = bytearray(size)
    body[: min(size, 4096)] = os.urandom(min(size, 4096))
    body[56:60] = b"ARMd"
    return bytes(body)


# kexec as on Debian's arm64 cloud kernel (no CONFIG_KEXEC_FILE: kexec-tools 2.0.25 says so);
# kexec -l is attempted. Records each call and the kernel file's bytes (the last argument not
# an option).
ARM64_KEXEC = """#!/bin/sh
printf '%s\\n' "$*" >>"$RECORD/calls"
for arg in "$@"; do
    case "$arg" in
        -*) ;;
        *) cat "$arg" >"$RECORD/kernel" ;;
    esac
done
case "$1" in
    -s) echo "syscall kexec_file_load not available." >&2 ;;
    *) echo "kexec_load failed: Invalid argument" >&2 ;;
esac
exit 1
"""


def arm64_env(tmp_path: Path, record: Path, fdt: bool = True, acpi: bool = False) -> dict[str, str]:
    """The environment of an aarch64 machine for kexec-boot: its device tree and/or ACPI."""
    (tmp_path / "fdt").write_bytes(b"\xd0\x0d\xfe\xed" + b"\0" * 60)
    (tmp_path / "acpi").mkdir(exist_ok=True)
    return {
        "KEXEC_BOOT_MACHINE": "aarch64",
        "RECORD": str(record),
        "KEXEC_BOOT_FDT": str(tmp_path / ("fdt" if fdt else "no-fdt")),
        "KEXEC_BOOT_ACPI": str(tmp_path / ("acpi" if acpi else "no-acpi")),
    }


@pytest.mark.parametrize("shell", SHELLS)
def test_arm64_gzip_kernel_is_decompressed_from_the_hashed_copy(
    shell: list[str], tools: Path, tmp_path: Path
) -> None:
    """An Image.gz kernel on arm64: the staged (hashed) copy is decompressed in the private
    staging directory, its size and sha256 printed, and kexec loads that Image; kexec -s's
    ENOSYS (no kexec_file_load in the kernel) is explained and kexec -l tried."""
    import gzip

    image = arm64_image()
    d = fetch_dir(tmp_path / "img", kernel=gzip.compress(image, mtime=0))
    fake, record = fake_kexec(tmp_path, ARM64_KEXEC)
    path = f"{tools / 'bin'}:{fake}:/usr/bin:/bin"
    result = run_kexec_boot(
        shell, tools, tmp_path, str(d), path=path, env=arm64_env(tmp_path, record)
    )
    stage = staged_in(result)
    lines = result.stdout.splitlines()
    assert len(lines) > 2, (result.stdout, result.stderr)
    assert lines[1] == (
        f"kexec-boot: kernel is a gzip-compressed Image ({(d / 'kernel').stat().st_size} bytes): "
        f"decompressed to {stage}/Image, {len(image)} bytes, "
        f"sha256 {hashlib.sha256(image).hexdigest()}"
    ), result.stdout
    assert lines[2] == (
        f"kexec-boot: no dtb artifact: the new kernel gets this machine's device tree "
        f"({tmp_path}/fdt)"
    )
    assert (
        "kexec -s failed (this kernel does not implement that kexec system call); "
        "trying kexec -l -i" in result.stdout
    )
    assert (record / "kernel").read_bytes() == image
    calls = (record / "calls").read_text().splitlines()
    assert [c.split()[:3] for c in calls] == [
        ["-s", "-l", f"{stage}/Image"],
        ["-l", "-i", f"{stage}/Image"],
    ], calls
    assert f"{stage}/kernel" not in "".join(calls)
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == "kexec-boot: cannot load the kernel: kexec_load failed: Invalid argument"
    )
    assert os.listdir(tmp_path / "run") == []  # the Image went with the staging directory


def test_arm64_plain_image_and_x86_gzip_are_loaded_as_they_are(tools: Path, tmp_path: Path) -> None:
    import gzip

    d = fetch_dir(tmp_path / "img", kernel=arm64_image())
    env = arm64_env(tmp_path, tmp_path)
    result = run_kexec_boot(["busybox", "sh"], tools, tmp_path, "--dry-run", str(d), env=env)
    assert result.returncode == 0, result.stderr
    assert f" {staged_in(result)}/kernel " in result.stdout and "gzip" not in result.stdout
    # x86_64 boots bzImages; a gzip file there is kexec's to judge, not decompressed here.
    d = fetch_dir(tmp_path / "x86", kernel=gzip.compress(b"K" * 4096, mtime=0))
    env = {"KEXEC_BOOT_MACHINE": "x86_64"}
    result = run_kexec_boot(["busybox", "sh"], tools, tmp_path, "--dry-run", str(d), env=env)
    assert result.returncode == 0, result.stderr
    assert f" {staged_in(result)}/kernel " in result.stdout and "gzip" not in result.stdout


@pytest.mark.parametrize(
    ("kernel", "available_mib", "line"),
    [
        (
            b"\x1f\x8b" + b"\0" * 100,
            1000,
            "cannot decompress the gzip-compressed kernel (corrupt, or no room in ",
        ),
        (None, 1000, "the decompressed kernel is not an Image for aarch64 (no Image header magic)"),
        (
            None,
            40,
            "cannot decompress the gzip-compressed kernel: it needs 64 MiB, 40 MiB available",
        ),
    ],
    ids=["corrupt", "not-an-image", "no-room"],
)
def test_arm64_gzip_kernel_failures_are_one_line(
    tools: Path, tmp_path: Path, kernel: bytes | None, available_mib: int, line: str
) -> None:
    import gzip

    if kernel is None:
        big = available_mib < 64
        kernel = gzip.compress(arm64_image(64 << 20) if big else b"\0" * 4096, mtime=0)
    d = fetch_dir(tmp_path / "img", kernel=kernel)
    fake, record = fake_kexec(tmp_path, ARM64_KEXEC)
    env = {
        **arm64_env(tmp_path, record),
        "KEXEC_BOOT_MEMINFO": str(meminfo(tmp_path / "meminfo", available_mib << 10)),
    }
    path = f"{tools / 'bin'}:{fake}:/usr/bin:/bin"
    result = run_kexec_boot(["busybox", "sh"], tools, tmp_path, str(d), path=path, env=env)
    assert result.returncode == 1
    assert result.stderr.strip().startswith(f"kexec-boot: {line}"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (record / "calls").exists()  # nothing was loaded
    assert os.listdir(tmp_path / "run") == []


@pytest.mark.parametrize(
    ("fdt", "acpi", "line"),
    [
        (
            False,
            True,
            "kexec-boot: no dtb artifact: the new kernel gets this machine's ACPI tables",
        ),
        (False, False, None),
    ],
    ids=["acpi", "neither"],
)
def test_arm64_without_a_dtb_artifact(
    tools: Path, tmp_path: Path, fdt: bool, acpi: bool, line: str | None
) -> None:
    d = fetch_dir(tmp_path / "img", kernel=arm64_image())
    env = arm64_env(tmp_path, tmp_path, fdt=fdt, acpi=acpi)
    result = run_kexec_boot(["busybox", "sh"], tools, tmp_path, "--dry-run", str(d), env=env)
    if line is not None:
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[1] == line
        assert "--dtb" not in result.stdout
    else:
        assert result.returncode == 1
        assert result.stderr.strip() == (
            "kexec-boot: no device tree for the new kernel: the manifest has no dtb artifact and "
            f"this machine has neither {tmp_path}/no-fdt nor ACPI tables"
        )
    assert os.listdir(tmp_path / "run") == []


def test_arm64_direct_kernel_gzip_is_decompressed_too(tools: Path, tmp_path: Path) -> None:
    """--kernel FILE.gz on arm64: decompressed into a private directory of its own, removed
    after the dry run."""
    import gzip

    image = arm64_image()
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(gzip.compress(image, mtime=0))
    env = arm64_env(tmp_path, tmp_path)
    result = run_kexec_boot(
        ["busybox", "sh"], tools, tmp_path, "--dry-run", "--kernel", str(kernel), env=env
    )
    assert result.returncode == 0, result.stderr
    found = re.search(r"decompressed to (\S+)/Image, (\d+) bytes", result.stdout)
    assert found and int(found.group(2)) == len(image), result.stdout
    assert f"kexec -s -l {found.group(1)}/Image " in result.stdout
    assert os.listdir(tmp_path / "run") == []


@pytest.mark.parametrize(("machine", "loads_dtb"), [("aarch64", True), ("x86_64", False)])
def test_direct_mode_dtb_goes_to_kexec_where_the_arch_uses_one(
    machine: str, loads_dtb: bool, tools: Path, tmp_path: Path
) -> None:
    """phase-boot's hand-off: --kernel K --dtb D (its staged copies)."""
    (tmp_path / "k").write_bytes(arm64_image())
    (tmp_path / "d.dtb").write_bytes(b"\xd0\x0d\xfe\xed" + b"\0" * 60)
    argv = ["--dry-run", "--kernel", str(tmp_path / "k"), "--dtb", str(tmp_path / "d.dtb")]
    env = {**arm64_env(tmp_path, tmp_path), "KEXEC_BOOT_MACHINE": machine}
    result = run_kexec_boot(["busybox", "sh"], tools, tmp_path, *argv, env=env)
    assert result.returncode == 0, result.stderr
    load = next(line for line in result.stdout.splitlines() if line.startswith("kexec -s -l "))
    assert (f" --dtb={tmp_path}/d.dtb " in load) == loads_dtb, load
    assert "no dtb artifact" not in result.stdout
    missing = run_kexec_boot(
        ["busybox", "sh"], tools, tmp_path, "--kernel", str(tmp_path / "k"), "--dtb", "nope",
        env=env,
    )  # fmt: skip
    assert missing.returncode == 2 and missing.stderr.strip() == "kexec-boot: dtb nope not found"
