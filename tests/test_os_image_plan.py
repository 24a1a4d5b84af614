"""OS image builder without building: the pure plan (packages, sources, command lines, cache
key, prerequisites), the project inputs it hashes, the output/stamp rules, the CLI's one-line
refusals (exit 2), the early-userspace builder on a fake tree, and shellcheck of the scripts.
None of these needs root except where said (mknod in the initramfs builder)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from phase_client.errors import UsageError
from phase_client.image import build, inputs, plan
from phase_client.image.progress import Progress

from .conftest import REPO, run_tool

X86 = plan.ARCHES["x86_64"]


def spec(**overrides: object) -> plan.ImageSpec:
    fields: dict[str, object] = {"arch": X86, "epoch": 1764158400}
    fields.update(overrides)
    return plan.ImageSpec(**fields)  # type: ignore[arg-type]


# --- the plan ----------------------------------------------------------------------------------


def test_package_list_is_base_kernel_and_includes_sorted_once() -> None:
    packages = plan.package_list(spec(includes=("less", "udev", "openssh-server")))
    assert list(packages) == sorted(set(packages))
    for name in ("systemd-sysv", "udev", "iproute2", "kmod", "python3", "busybox-static"):
        assert name in packages
    assert "linux-image-amd64" in packages
    assert "less" in packages and "openssh-server" in packages
    assert packages.count("udev") == 1
    arm = plan.package_list(spec(arch=plan.ARCHES["arm64"]))
    assert "linux-image-arm64" in arm and "linux-image-amd64" not in arm


def test_parse_includes_splits_commas_and_repeats() -> None:
    assert plan.parse_includes(["less,vim", " curl ", "", "jq,,git"]) == (
        "less",
        "vim",
        "curl",
        "jq",
        "git",
    )
    assert plan.parse_includes([]) == ()
    assert plan.parse_includes(["libstdc++6,python3.11"]) == ("libstdc++6", "python3.11")


@pytest.mark.parametrize("bad", ["Bad", "a", "ab cd", "x;rm", "-opt", "a/b", "pkg=1.0", "é"])
def test_parse_includes_refuses_what_is_not_a_package_name(bad: str) -> None:
    with pytest.raises(UsageError, match="invalid package name"):
        plan.parse_includes([bad])


def test_check_arch_names_aliases_and_refuses_unknown() -> None:
    assert plan.check_arch("amd64") is X86
    assert plan.check_arch("x86_64") is X86
    assert plan.check_arch("aarch64").debian == "arm64"
    with pytest.raises(UsageError, match="unknown --arch 'sparc'"):
        plan.check_arch("sparc")


def test_a_foreign_arch_names_what_its_emulation_lacks() -> None:
    arm64 = plan.check_arch("arm64")
    tools = {"qemu-aarch64-static": "/usr/bin/qemu-aarch64-static", "arch-test": "/usr/bin/x"}
    ready = plan.foreign_prerequisites(arm64, "x86_64", lambda h: True, tools.get)
    assert ready is None
    assert plan.foreign_prerequisites(X86, "amd64", lambda h: False, {}.get) is None  # own arch
    nothing = plan.foreign_prerequisites(arm64, "x86_64", lambda h: False, {}.get)
    assert nothing == (
        "--arch arm64 on x86_64: mmdebstrap runs arm64's package scripts under emulation, and "
        "the qemu-aarch64 binfmt handler is not ready (apt-get install qemu-user-static "
        "arch-test; then /usr/lib/systemd/systemd-binfmt /usr/lib/binfmt.d/qemu-aarch64.conf)"
    )
    off = plan.foreign_prerequisites(arm64, "x86_64", lambda h: False, tools.get)
    assert off is not None and off.endswith(
        "(/usr/lib/systemd/systemd-binfmt /usr/lib/binfmt.d/qemu-aarch64.conf)"
    )


def test_checks_of_suite_version_mirror_compression() -> None:
    assert plan.check_suite("trixie") == "trixie"
    for bad in ("", "Bookworm", "a", "x/../y", "b w"):
        with pytest.raises(UsageError):
            plan.check_suite(bad)
    assert plan.check_version("2026.12.01-rc1") == "2026.12.01-rc1"
    for bad in ("", "-x", "a b", "x" * 65, "v\n"):
        with pytest.raises(UsageError):
            plan.check_version(bad)
    assert plan.check_mirror("http://deb.debian.org/debian/", "--mirror") == (
        "http://deb.debian.org/debian"
    )
    for bad in ("deb.debian.org", "ftp://x", "http://a b", "http://x'"):
        with pytest.raises(UsageError):
            plan.check_mirror(bad, "--mirror")
    with pytest.raises(UsageError):
        plan.check_compression("gzip")


def test_apt_sources() -> None:
    lines = plan.apt_sources(spec()).splitlines()
    assert lines == [
        "deb http://deb.debian.org/debian bookworm main",
        "deb http://deb.debian.org/debian bookworm-updates main",
        "deb http://deb.debian.org/debian-security bookworm-security main",
    ]
    assert plan.apt_sources(spec(suite="sid")).splitlines() == [
        "deb http://deb.debian.org/debian sid main"
    ]
    assert "security" not in plan.apt_sources(spec(security_mirror=None))


def test_cache_key_follows_every_input() -> None:
    hashes = {"packaging/phase-os-up": "aa", "phase_client/x.py": "bb"}
    key = plan.cache_key(spec(), hashes)
    assert key == plan.cache_key(spec(), dict(reversed(list(hashes.items()))))
    assert len(key) == 64
    # The order of --include does not matter; its content does.
    assert plan.cache_key(spec(includes=("jq", "less")), hashes) == plan.cache_key(
        spec(includes=("less", "jq")), hashes
    )
    different = [
        plan.cache_key(spec(suite="trixie"), hashes),
        plan.cache_key(spec(arch=plan.ARCHES["arm64"]), hashes),
        plan.cache_key(spec(includes=("less",)), hashes),
        plan.cache_key(spec(epoch=1), hashes),
        plan.cache_key(spec(version="v2"), hashes),
        plan.cache_key(spec(compression="xz"), hashes),
        plan.cache_key(spec(all_modules=True), hashes),
        plan.cache_key(spec(mirror="http://mirror.example/debian"), hashes),
        plan.cache_key(spec(), {**hashes, "packaging/phase-os-up": "ab"}),
        plan.cache_key(spec(), {**hashes, "initramfs/os-init": "cc"}),
    ]
    assert key not in different and len(set(different)) == len(different)


def test_version_and_cmdline() -> None:
    key = "0123456789abcdef" * 4
    assert plan.image_version(spec(), key) == "2025.11.26-01234567"
    assert plan.image_version(spec(version="v9"), key) == "v9"
    assert plan.kernel_cmdline("v9") == "phase.version=v9"


def test_mmdebstrap_argv() -> None:
    argv = plan.mmdebstrap_argv(spec(includes=("less",)), "/w/root", "/w/sources.list", None)
    assert argv[0] == "mmdebstrap" and argv[-3:] == ["bookworm", "/w/root", "/w/sources.list"]
    assert "--variant=minbase" in argv and "--architectures=amd64" in argv
    include = next(a for a in argv if a.startswith("--include="))
    assert include.removeprefix("--include=").split(",") == list(
        plan.package_list(spec(includes=("less",)))
    )
    assert not any("sync-in" in a for a in argv)
    cached = plan.mmdebstrap_argv(spec(), "/w/root", "/w/s", "/cache")
    assert "--setup-hook=sync-in /cache /var/cache/apt/archives/" in cached
    assert "--customize-hook=sync-out /var/cache/apt/archives /cache" in cached
    assert "--skip=download/empty" in cached
    assert plan.mmdebstrap_env(spec()) == {"SOURCE_DATE_EPOCH": "1764158400", "INITRD": "No"}


def test_mksquashfs_argv_is_reproducible() -> None:
    argv = plan.mksquashfs_argv(spec(), "/w/root", "/w/rootfs.sqfs")
    assert argv[:3] == ["mksquashfs", "/w/root", "/w/rootfs.sqfs"]
    for flag in ("-reproducible", "-noappend"):
        assert flag in argv
    assert argv[argv.index("-mkfs-time") + 1] == "1764158400"
    assert argv[argv.index("-all-time") + 1] == "1764158400"
    assert argv[argv.index("-comp") + 1] == "zstd"
    xz = plan.mksquashfs_argv(spec(compression="xz"), "r", "o")
    assert xz[xz.index("-comp") + 1] == "xz" and "-Xbcj" in xz


def test_prerequisites_are_one_line() -> None:
    def have_all(tool: str) -> str | None:
        return f"/usr/bin/{tool}"

    def lacks(*missing: str):  # type: ignore[no-untyped-def]
        return lambda tool: None if tool in missing else f"/usr/bin/{tool}"

    assert plan.missing_prerequisites(0, have_all) is None
    line = plan.missing_prerequisites(0, lacks("mmdebstrap", "mksquashfs"))
    assert line == (
        "cannot build an OS image: mmdebstrap, mksquashfs missing "
        "(apt-get install mmdebstrap squashfs-tools)"
    )
    line = plan.missing_prerequisites(1000, have_all)
    assert line is not None and "root needed" in line and "\n" not in line
    both = plan.missing_prerequisites(1000, lacks("mksquashfs"))
    assert both is not None and "squashfs-tools" in both and "root needed" in both


# --- inputs ------------------------------------------------------------------------------------


def fake_project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    for name in plan.BUILD_INPUTS:
        source = REPO / name
        if source.is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    for item in plan.PROJECT_FILES:
        (root / item.source).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / item.source, root / item.source)
    (root / "phase_client").mkdir()
    (root / "phase_client" / "a.py").write_text("x = 1\n")
    (root / "phase_client" / "__pycache__").mkdir()
    (root / "phase_client" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"junk")
    return root


def test_input_hashes_cover_project_files_not_caches(tmp_path: Path) -> None:
    root = fake_project(tmp_path)
    first = inputs.input_hashes(root)
    assert "packaging/phase-os-up.service" in first and "initramfs/os-init" in first
    assert "scripts/build-os-initramfs.sh" in first and "phase_client/a.py" in first
    assert not any("__pycache__" in name for name in first)
    assert first["dist:PyNaCl"] != "absent" and first["python"].startswith("3.")
    assert first["initramfs/os-init"].endswith("+x")
    (root / "phase_client" / "__pycache__" / "b.pyc").write_bytes(b"more junk")
    assert inputs.input_hashes(root) == first
    (root / "packaging" / "phase-os-up").write_text("#!/bin/sh\necho changed\n")
    changed = inputs.input_hashes(root)
    assert changed["packaging/phase-os-up"] != first["packaging/phase-os-up"]
    os.chmod(root / "initramfs" / "os-init", 0o644)
    assert not inputs.input_hashes(root)["initramfs/os-init"].endswith("+x")


def test_default_epoch(tmp_path: Path) -> None:
    assert inputs.default_epoch(tmp_path, {"SOURCE_DATE_EPOCH": "1700000000"}) == 1700000000
    with pytest.raises(UsageError, match="not an integer"):
        inputs.default_epoch(tmp_path, {"SOURCE_DATE_EPOCH": "yesterday"})
    with pytest.raises(UsageError, match="out of range"):
        inputs.default_epoch(tmp_path, {"SOURCE_DATE_EPOCH": str(2**40)})
    # Outside a git work tree: the fixed fallback, the same every time.
    assert inputs.default_epoch(tmp_path, {}) == inputs.FALLBACK_EPOCH
    # In this repository: a commit date.
    assert inputs.default_epoch(REPO, {}) > 1700000000


def test_project_root_is_this_tree() -> None:
    assert inputs.project_root() == REPO


# --- output rules ------------------------------------------------------------------------------


def test_mounts_under_reads_mountinfo_deepest_first() -> None:
    info = "\n".join(
        [
            "22 1 0:21 / /proc rw - proc proc rw",
            "30 25 0:5 / /w/x.build-1/root/dev rw - devtmpfs udev rw",
            "31 30 0:6 / /w/x.build-1/root/dev/pts rw - devpts devpts rw",
            "32 25 0:7 / /w/x.build-10/root/proc rw - proc proc rw",
            r"33 25 0:8 / /w/x.build-1/with\040space rw - tmpfs t rw",
        ]
    )
    assert build.mounts_under(Path("/w/x.build-1"), info) == [
        "/w/x.build-1/root/dev/pts",
        "/w/x.build-1/root/dev",
        "/w/x.build-1/with space",
    ]
    assert build.mounts_under(Path("/elsewhere"), info) == []


def write_image(directory: Path, key: str) -> None:
    directory.mkdir(parents=True)
    files = {}
    for name in plan.OUTPUT_FILES:
        (directory / name).write_bytes(name.encode())
        files[name] = {"size": len(name), "sha256": "x"}
    stamp = {"format": plan.FORMAT, "cache_key": key, "files": files}
    (directory / plan.STAMP).write_text(json.dumps(stamp))


def test_current_stamp_needs_the_key_and_every_file(tmp_path: Path) -> None:
    out = tmp_path / "stable" / "x86_64"
    assert build.current_stamp(out, "k1") is None
    write_image(out, "k1")
    assert build.current_stamp(out, "k1") is not None
    assert build.current_stamp(out, "k2") is None
    (out / "rootfs.sqfs").write_bytes(b"truncated")
    assert build.current_stamp(out, "k1") is None
    (out / "rootfs.sqfs").unlink()
    assert build.current_stamp(out, "k1") is None


def test_check_output_never_takes_a_foreign_directory(tmp_path: Path) -> None:
    build.check_output(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    build.check_output(tmp_path / "empty")
    write_image(tmp_path / "image", "k")
    build.check_output(tmp_path / "image")
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "thesis.tex").write_text("precious")
    with pytest.raises(UsageError, match="not an image built by 'plasmd image build'"):
        build.check_output(tmp_path / "home")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        build.check_output(tmp_path / "file")


def test_build_lock_refuses_a_second_build(tmp_path: Path) -> None:
    with (
        build.build_lock(tmp_path, "x86_64"),
        pytest.raises(UsageError, match=r"another image build into .* is running$"),
        build.build_lock(tmp_path, "x86_64"),
    ):
        pass
    with build.build_lock(tmp_path, "x86_64"):
        pass


def test_build_lock_waits_for_the_other_build_then_goes_on(tmp_path: Path) -> None:
    # Another process holds the lock for a moment: the second build says it waits, then gets it.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(tmp_path / '.x86_64.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(1.5)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        said: list[str] = []
        with build.build_lock(tmp_path, "x86_64", wait=60, on_wait=lambda: said.append("w")):
            pass
        assert said == ["w"]  # it found the lock held, said so once, and got it later
    finally:
        holder.kill()
        holder.wait()
    with (
        build.build_lock(tmp_path, "x86_64"),
        pytest.raises(UsageError, match=r"is still running after 1 s$"),
        build.build_lock(tmp_path, "x86_64", wait=0.6),
    ):
        pass


def test_remove_tree_removes_plain_trees(tmp_path: Path) -> None:
    tree = tmp_path / "t"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "f").write_text("x")
    os.symlink("/etc", tree / "link-out")
    build.remove_tree(tree)
    assert not tree.exists() and Path("/etc/passwd").exists()
    build.remove_tree(tmp_path / "absent")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_apt_partial_directories_are_normalized(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\n_apt:x:42:65534::/nonexistent:/usr/sbin/nologin\n"
    )
    lists = tmp_path / "var/lib/apt/lists/partial"
    archives = tmp_path / "var/cache/apt/archives/partial"
    lists.mkdir(parents=True)
    archives.mkdir(parents=True)
    os.chmod(lists, 0o755)
    build.normalize_apt_dirs(tmp_path)
    for path in (lists, archives):
        info = path.stat()
        assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (42, 0, 0o700)


def test_progress_lines_plain_tty_and_quiet() -> None:
    def run(tty: bool, quiet: bool = False) -> str:
        stream = io.StringIO()
        progress = Progress(stream, 2, tty=tty, quiet=quiet)
        with progress.step("first"):
            pass
        with pytest.raises(RuntimeError), progress.step("second"):
            raise RuntimeError
        return stream.getvalue()

    plain = run(tty=False).splitlines()
    assert plain[0] == "[1/2] first ..." and plain[1].startswith("[1/2] first ... done in ")
    assert plain[2] == "[2/2] second ..." and "FAILED after" in plain[3]
    assert "\r" not in run(tty=False)
    tty = run(tty=True)
    assert tty.startswith("[1/2] first ...") and "\r\x1b[K[1/2] first ... done in" in tty
    assert run(tty=False, quiet=True) == ""


# --- the CLI -----------------------------------------------------------------------------------


def one_line_exit_2(result: subprocess.CompletedProcess[bytes]) -> str:
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert err.count("\n") == 1 and err.startswith("plasmd: "), err
    assert "Traceback" not in err
    return err


def test_cli_missing_tools_is_one_line_exit_2(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path / "empty-bin")}
    out = tmp_path / "art" / "stable" / "x86_64"
    result = run_tool("plasmd", "image", "build", "--out", str(out), env=env)
    err = one_line_exit_2(result)
    assert "mmdebstrap" in err and "mksquashfs" in err and "apt-get install" in err
    assert not (tmp_path / "art").exists()


def test_cli_without_root_is_one_line_exit_2(tmp_path: Path) -> None:
    out = tmp_path / "art" / "stable" / "x86_64"
    argv = [sys.executable, "-m", "phase_client", "plasmd", "image", "build", "--out", str(out)]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.fail("setpriv missing (util-linux)")
        argv = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
        os.chmod(tmp_path, 0o755)
    result = subprocess.run(argv, capture_output=True, timeout=60, cwd=REPO)
    err = one_line_exit_2(result)
    assert "root needed" in err, err
    assert not (tmp_path / "art").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--include", "good,Bad Name"], "invalid package name"),
        (["--arch", "sparc"], "unknown --arch"),
        (["--suite", "Bookworm"], "invalid --suite"),
        (["--version", "has space"], "invalid --version"),
        (["--mirror", "deb.debian.org"], "invalid --mirror"),
        (["--apt-cache", "a b"], "white space"),
    ],
)
def test_cli_bad_arguments_are_one_line_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = run_tool("plasmd", "image", "build", "--out", str(tmp_path / "o"), *args)
    assert message in one_line_exit_2(result)


def test_cli_help_names_outputs_and_exit_codes() -> None:
    result = run_tool("plasmd", "image", "build", "--help")
    text = result.stdout.decode()
    assert result.returncode == 0
    for word in ("--out", "--include", "--suite", "rootfs.sqfs", "exit codes", "130", "--json"):
        assert word in text, word
    top = run_tool("plasmd", "--help").stdout.decode()
    assert "image" in top


# --- the early userspace builder and the scripts ---------------------------------------------


def fake_tree(tmp_path: Path, kver: str = "6.1.0-99-amd64") -> Path:
    """A root tree with busybox and a modules directory whose modules.dep names squashfs (no
    deps), overlay (depends on a made-up helper) and loop built in."""
    root = tmp_path / "root"
    (root / "usr" / "bin").mkdir(parents=True)
    busybox = shutil.which("busybox") or "/bin/busybox"
    shutil.copy(busybox, root / "usr" / "bin" / "busybox")
    mods = root / "usr" / "lib" / "modules" / kver
    for rel in ("kernel/fs/squashfs/squashfs.ko", "kernel/fs/overlayfs/overlay.ko"):
        (mods / rel).parent.mkdir(parents=True, exist_ok=True)
        (mods / rel).write_bytes(b"not really a module " + rel.encode())
    (mods / "kernel/lib/helper.ko").parent.mkdir(parents=True)
    (mods / "kernel/lib/helper.ko").write_bytes(b"helper")
    (mods / "kernel/sound/snd.ko").parent.mkdir(parents=True)
    (mods / "kernel/sound/snd.ko").write_bytes(b"unwanted")
    (mods / "modules.dep").write_text(
        "kernel/fs/squashfs/squashfs.ko:\n"
        "kernel/fs/overlayfs/overlay.ko: kernel/lib/helper.ko\n"
        "kernel/lib/helper.ko:\n"
        "kernel/sound/snd.ko:\n"
    )
    (mods / "modules.builtin").write_text("kernel/drivers/block/loop.ko\n")
    (mods / "modules.order").write_text("")
    return root


def build_initramfs(root: Path, output: Path, kver: str = "6.1.0-99-amd64") -> str:
    result = subprocess.run(
        [
            str(REPO / "scripts" / "build-os-initramfs.sh"),
            *("--root", str(root), "--kernel-version", kver, "--output", str(output)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SOURCE_DATE_EPOCH": "1764158400"},
    )
    assert result.returncode == 0, result.stderr
    return result.stderr


def cpio_names(data: bytes) -> list[str]:
    """Names in a newc archive (enough of a reader for the test)."""
    names, offset = [], 0
    while offset + 110 <= len(data) and data[offset : offset + 6] == b"070701":
        size = int(data[offset + 54 : offset + 62], 16)
        namesize = int(data[offset + 94 : offset + 102], 16)
        name = data[offset + 110 : offset + 110 + namesize - 1].decode()
        if name == "TRAILER!!!":
            break
        names.append(name)
        offset = (offset + 110 + namesize + 3) & ~3
        offset = (offset + size + 3) & ~3
    return names


def unzstd_padded(data: bytes) -> bytes:
    """The contents of one zstd stream followed by the 0-3 zero bytes of its padding."""
    padding = len(data) - len(data.rstrip(b"\0"))
    for cut in range(min(padding, 3) + 1):
        out = subprocess.run(
            ["zstd", "-dcq"], input=data[: len(data) - cut], capture_output=True, timeout=60
        )
        if out.returncode == 0:
            return out.stdout
    raise AssertionError("not one zstd stream padded with at most 3 zeros")


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod /dev/console needs root")
def test_os_initramfs_builder_on_a_fake_tree(tmp_path: Path) -> None:
    if shutil.which("cpio") is None or shutil.which("depmod") is None:
        pytest.fail("cpio/depmod missing: run scripts/install-deps")
    root = fake_tree(tmp_path)
    first, second = tmp_path / "a.img", tmp_path / "b.img"
    warnings = build_initramfs(root, first)
    build_initramfs(root, second)
    data = first.read_bytes()
    assert data == second.read_bytes(), "same inputs, same bytes"
    assert len(data) % 4 == 0, "padded so an appended cpio starts aligned"
    # One zstd stream, then up to 3 zeros (the kernel skips zeros between archives).
    names = cpio_names(unzstd_padded(data))
    assert names == sorted(names)
    assert "init" in names and "bin/busybox" in names and "bin/switch_root" in names
    assert "dev/console" in names and "phase" in names
    mods = "lib/modules/6.1.0-99-amd64/"
    assert mods + "kernel/fs/squashfs/squashfs.ko" in names
    assert mods + "kernel/fs/overlayfs/overlay.ko" in names
    assert mods + "kernel/lib/helper.ko" in names, "dependencies come along"
    assert mods + "kernel/sound/snd.ko" not in names, "only what the init needs"
    assert mods + "modules.dep" in names
    assert "warning" not in warnings, warnings  # loop is built in: no warning


def test_os_initramfs_builder_refusals(tmp_path: Path) -> None:
    script = str(REPO / "scripts" / "build-os-initramfs.sh")
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1764158400"}
    root = tmp_path / "empty"
    root.mkdir()
    cases = [
        ([], "are required"),
        (["--root", str(root), "--kernel-version", "1", "--output", "o"], "no busybox"),
    ]
    for args, message in cases:
        result = subprocess.run(
            [script, *args], capture_output=True, text=True, timeout=60, env=env
        )
        assert result.returncode == 1 and message in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1
