"""Build an OS image: run mmdebstrap, configure the tree, build the initramfs, pack the squashfs.

Everything happens in a temporary directory beside the output (same filesystem) that is
renamed into place at the end, so the output is either the previous image or the new one,
never half of one; on any failure or interrupt the temporary directory is removed (after
unmounting anything a killed mmdebstrap left mounted in it) and the log is kept.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import PhaseError, UsageError
from ..fsutil import sha256_file
from . import plan
from .inputs import input_hashes
from .progress import Progress

STEP_TIMEOUT = 2 * 3600  # seconds; a slow mirror can make mmdebstrap take long, never forever
STEPS = 6
STOP_GRACE = 30  # seconds an interrupted tool gets to clean up before SIGKILL


class BuildFailed(PhaseError):
    """A build tool failed (mmdebstrap, mksquashfs, ...) or its result is unusable."""

    exit_code = 1


@dataclass(frozen=True)
class BuildOptions:
    apt_cache: Path | None = None
    force: bool = False
    wait: float = 0.0  # seconds to wait for another build of the same output to end


# ---------------------------------------------------------------------------------------------
# Files and directories


def sha256_of(path: Path) -> str:
    return sha256_file(path)[0]


def _unescape_mount(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_under(path: Path, mountinfo: str | None = None) -> list[str]:
    """Mount points at or below ``path`` (from /proc/self/mountinfo), deepest first."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return []
    top = os.path.realpath(path)
    found = []
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) > 4:
            point = _unescape_mount(fields[4])
            if point == top or point.startswith(top.rstrip("/") + "/"):
                found.append(point)
    return sorted(found, key=lambda point: (point.count("/"), point), reverse=True)


def remove_tree(path: Path) -> None:
    """rm -rf, but never through a mount (a killed mmdebstrap can leave /dev, /proc or /sys
    of the host bind-mounted in its chroot): unmount first, refuse if that does not work."""
    if not os.path.lexists(path):
        return
    for point in mounts_under(path):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=60)
    left = mounts_under(path)
    if left:
        raise BuildFailed(f"{path} still has a mount at {left[0]}: not removing it")
    for attempt in range(3):  # a killed tool's last writes can race the first pass
        try:
            shutil.rmtree(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if attempt == 2:
                raise BuildFailed(f"cannot remove {path}: {exc.strerror or exc}") from exc
            time.sleep(1)


def write_text(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)


def fsync_path(path: Path) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_stamp(out: Path) -> dict[str, Any] | None:
    try:
        stamp = json.loads((out / plan.STAMP).read_text())
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def current_stamp(out: Path, key: str) -> dict[str, Any] | None:
    """The stamp of ``out`` if it was built from exactly ``key`` and its files are all there
    with their recorded sizes; else None."""
    stamp = read_stamp(out)
    if stamp is None or stamp.get("cache_key") != key or stamp.get("format") != plan.FORMAT:
        return None
    files = stamp.get("files")
    if not isinstance(files, dict) or set(files) != set(plan.OUTPUT_FILES):
        return None
    for name, info in files.items():
        try:
            if (out / name).stat().st_size != info.get("size"):
                return None
        except (OSError, AttributeError):
            return None
    return stamp


def check_output(out: Path) -> None:
    """``out`` may be replaced only if it is absent, an empty directory, or an earlier image
    (it has the stamp): a mistyped --out never swallows someone's directory."""
    if not os.path.lexists(out):
        return
    if out.is_symlink() or not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    if read_stamp(out) is None and any(out.iterdir()):
        raise UsageError(
            f"--out {out} exists and is not an image built by 'plasmd image build' "
            f"(no {plan.STAMP}): remove it or choose another directory"
        )


LOCK_POLL = 0.5


@contextmanager
def build_lock(
    parent: Path, name: str, wait: float = 0.0, on_wait: Callable[[], None] | None = None
) -> Iterator[None]:
    """Hold the build lock of ``parent/name``. Another build holding it: wait up to ``wait``
    seconds for it to end (``on_wait`` says so once), then refuse in one line."""
    lock_path = parent / f".{name}.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + wait
        waiting = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            if time.monotonic() >= deadline:
                still = f" still running after {wait:.0f} s" if waiting else " running"
                raise UsageError(f"another image build into {parent / name} is{still}")
            if not waiting and on_wait is not None:
                on_wait()
            waiting = True
            time.sleep(min(LOCK_POLL, max(0.0, deadline - time.monotonic())))
        yield
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# Running tools


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the child's process group (mmdebstrap then unmounts and cleans up), SIGKILL
    to what is left after STOP_GRACE seconds; returns once the child is gone."""
    for sig, grace in ((signal.SIGTERM, STOP_GRACE), (signal.SIGKILL, STOP_GRACE)):
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; its group (dpkg in the chroot...) may not be yet.
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return


class Runner:
    """Runs build commands with their output appended to one log file."""

    def __init__(self, log: Path) -> None:
        self.log = log

    def last_line(self) -> str:
        try:
            with self.log.open("rb") as handle:
                handle.seek(max(0, self.log.stat().st_size - 8192))
                tail = handle.read().decode(errors="replace")
        except OSError:
            return ""
        lines = [line.strip() for line in tail.splitlines() if line.strip()]
        return lines[-1][:300] if lines else ""

    def run(
        self,
        argv: Sequence[str],
        what: str,
        env: Mapping[str, str] | None = None,
        capture: bool = False,
        unset: Sequence[str] = (),
    ) -> str:
        """Run ``argv`` with ``env`` added to ours and ``unset`` removed from it; its output
        goes to the log (or is returned, with ``capture``). A failure is a BuildFailed naming
        ``what``, the exit code and the last output line."""
        full_env = {k: v for k, v in os.environ.items() if k not in unset}
        full_env.update(env or {})
        full_env.setdefault("LC_ALL", "C.UTF-8")
        with self.log.open("ab") as log:
            log.write(f"$ {' '.join(argv)}\n".encode())
            log.flush()
            try:
                # Its own session: a Ctrl-C on the terminal reaches only us, and we stop the
                # whole group (mmdebstrap, apt, dpkg in the chroot) the way it can clean up.
                proc = subprocess.Popen(
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE if capture else log,
                    stderr=log,
                    env=full_env,
                    start_new_session=True,
                )
            except FileNotFoundError:
                raise BuildFailed(f"{what}: {argv[0]} not found") from None
            try:
                stdout, _ = proc.communicate(timeout=STEP_TIMEOUT)
            except subprocess.TimeoutExpired:
                stop_group(proc)
                raise BuildFailed(f"{what} took more than {STEP_TIMEOUT} s") from None
            except BaseException:
                stop_group(proc)
                raise
        if proc.returncode != 0:
            detail = self.last_line()
            raise BuildFailed(
                f"{what} failed (exit {proc.returncode})"
                + (f": {detail}" if detail else "")
                + f" (log: {self.log})"
            )
        return stdout.decode(errors="replace") if capture and stdout else ""


# ---------------------------------------------------------------------------------------------
# The steps


def install_project_files(root: Path, project: Path, zipapp: Path) -> None:
    for item in plan.PROJECT_FILES:
        target = root / item.target
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(project / item.source, target)
        os.chmod(target, item.mode)
    target = root / plan.ZIPAPP_TARGET
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(zipapp, target)
    os.chmod(target, 0o755)
    for name in plan.ZIPAPP_LINKS:
        link = root / "usr/bin" / name
        if os.path.lexists(link):
            link.unlink()
        os.symlink(os.path.relpath(target, link.parent), link)
    write_text(root / "etc/hostname", f"{plan.HOSTNAME}\n")
    write_text(
        root / "etc/hosts",
        f"127.0.0.1\tlocalhost\n127.0.1.1\t{plan.HOSTNAME}\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "ff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    )


def check_phase_client(runner: Runner, root: Path) -> None:
    """The image's python3 must run the zipapp: same bytecode version, and PyNaCl's native
    part must load against the image's libc. ``plasmd keygen`` exercises both."""
    want = f"{sys.version_info[0]}.{sys.version_info[1]}"
    got = runner.run(
        ["chroot", str(root), "python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        "python3 in the image",
        capture=True,
    ).strip()
    if got != want:
        raise BuildFailed(
            f"the image's python3 is {got} but phase-client's zipapp is bytecode of Python "
            f"{want}: run the build with python{got}, or use --suite {plan.DEFAULT_SUITE}"
        )
    scratch = root / "tmp" / "phase-image-check"
    scratch.mkdir(mode=0o700)
    try:
        runner.run(
            [
                *("chroot", str(root), "/usr/bin/plasmd", "keygen"),
                *("--out", "/tmp/phase-image-check/check.key"),
            ],
            "phase-client in the image (plasmd keygen)",
            env={"PHASE_PYZ_ROOT": "/tmp/phase-image-check/pyz", "HOME": "/tmp/phase-image-check"},
            capture=True,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def take_kernel(root: Path, dest: Path) -> str:
    """Copy the kernel out of the tree's /boot; return its version. The image file leaves the
    tree (it travels as vmlinuz), so do the /vmlinuz links linux-base made."""
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        names = ", ".join(k.name for k in kernels) or "none"
        raise BuildFailed(f"expected one kernel in the image's /boot, found {names}")
    version = kernels[0].name.removeprefix("vmlinuz-")
    if not (root / "usr/lib/modules" / version / "modules.dep").is_file():
        raise BuildFailed(f"the image has no modules.dep for its kernel {version}")
    shutil.copyfile(kernels[0], dest)
    os.chmod(dest, 0o644)
    return version


def slim_tree(runner: Runner, root: Path, version: str, all_modules: bool) -> None:
    for name in ("vmlinuz", "vmlinuz.old", "initrd.img", "initrd.img.old"):
        for where in (root, root / "boot"):
            if (where / name).is_symlink():
                (where / name).unlink()
    for pattern in ("vmlinuz-*", "initrd.img-*", "System.map-*"):
        for path in (root / "boot").glob(pattern):
            path.unlink()
    if not all_modules:
        modules = root / "usr/lib/modules" / version
        for name in plan.PRUNED_MODULE_DIRS:
            remove_tree(modules / name)
        runner.run(["depmod", "-b", str(root), version], "depmod")
    # Leftovers of the build that would make two images differ.
    for name in ("var/cache/ldconfig/aux-cache",):
        path = root / name
        if path.exists():
            path.unlink()
    normalize_apt_dirs(root)


def normalize_apt_dirs(root: Path) -> None:
    """apt's partial directories came out owned by _apt in one build and by root in another
    from the same inputs: make them _apt's (Debian's usual state) so builds agree."""
    uid = 0
    try:
        for line in (root / "etc/passwd").read_text().splitlines():
            fields = line.split(":")
            if len(fields) > 2 and fields[0] == "_apt" and fields[2].isdigit():
                uid = int(fields[2])
    except OSError:
        pass
    for name in ("var/lib/apt/lists/partial", "var/cache/apt/archives/partial"):
        path = root / name
        if path.is_dir() and not path.is_symlink():
            os.chown(path, uid, 0)
            os.chmod(path, 0o700)


def installed_packages(runner: Runner, root: Path) -> dict[str, str]:
    out = runner.run(
        [
            *("dpkg-query", f"--admindir={root / 'var/lib/dpkg'}"),
            *("-W", "-f", "${Package} ${Version}\\n"),
        ],
        "dpkg-query",
        capture=True,
    )
    return dict(sorted(line.split(" ", 1) for line in out.splitlines() if " " in line))


def file_info(directory: Path) -> dict[str, dict[str, Any]]:
    return {
        name: {"size": (directory / name).stat().st_size, "sha256": sha256_of(directory / name)}
        for name in plan.OUTPUT_FILES
    }


def build_image(
    spec: plan.ImageSpec,
    out: Path,
    project: Path,
    options: BuildOptions,
    progress: Progress,
) -> dict[str, Any]:
    """Build (or find current) the image in ``out``; return its summary (the stamp)."""
    started = time.monotonic()
    out = Path(os.path.abspath(out))
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {parent}: {exc.strerror or exc}") from exc
    if not os.access(parent, os.W_OK):
        raise UsageError(f"cannot write in {parent}")
    check_output(out)
    key = plan.cache_key(spec, input_hashes(project))

    def say_waiting() -> None:
        progress.note(f"another build into {out} is running: waiting for it to end")

    with build_lock(parent, out.name, options.wait, say_waiting):
        if not options.force and (stamp := current_stamp(out, key)) is not None:
            progress.note(f"{out} is current (cache key {key[:16]}): nothing to do")
            return {**stamp, "output": str(out), "cached": True}
        for stale in parent.glob(f".{out.name}.build-*"):
            remove_tree(stale)
        log = parent / f".{out.name}.build.log"
        log.unlink(missing_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{out.name}.build-", dir=parent))
        try:
            summary = _build_in(spec, key, work, out, project, options, progress, Runner(log))
        except BaseException:
            # The reason the build stopped is what the user hears; a failed clean-up is a note.
            progress.note(f"build log kept in {log}")
            try:
                remove_tree(work)
            except BuildFailed as exc:
                progress.note(f"could not clean up: {exc}")
            raise
        remove_tree(work)
        log.unlink(missing_ok=True)
    summary["seconds"] = round(time.monotonic() - started, 1)
    return summary


def _build_in(
    spec: plan.ImageSpec,
    key: str,
    work: Path,
    out: Path,
    project: Path,
    options: BuildOptions,
    progress: Progress,
    runner: Runner,
) -> dict[str, Any]:
    started = time.monotonic()
    os.chmod(work, 0o755)
    root = work / "root"
    result = work / "out"
    result.mkdir(mode=0o755)
    epoch_env = {"SOURCE_DATE_EPOCH": str(spec.epoch)}
    version = plan.image_version(spec, key)

    with progress.step("zipapp (phase-client)"):
        zipapp = work / "phase.pyz"
        runner.run(
            [sys.executable, str(project / "scripts/build-zipapp.py"), "--output", str(zipapp)],
            "build-zipapp.py",
            env=epoch_env,
        )

    packages = plan.package_list(spec)
    with progress.step(
        f"mmdebstrap {spec.suite} {spec.arch.debian} (minbase + {len(packages)} packages)"
    ):
        sources = work / "sources.list"
        sources.write_text(plan.apt_sources(spec))
        cache = None
        if options.apt_cache is not None:
            options.apt_cache.mkdir(parents=True, exist_ok=True)
            cache = str(options.apt_cache.resolve())
        runner.run(
            plan.mmdebstrap_argv(spec, str(root), str(sources), cache),
            "mmdebstrap",
            env=plan.mmdebstrap_env(spec),
        )

    with progress.step("configure (phase-client, networkd, phase-os-up, kernel)"):
        install_project_files(root, project, zipapp)
        runner.run(
            ["systemctl", f"--root={root}", "enable", *plan.ENABLE_UNITS], "systemctl enable"
        )
        check_phase_client(runner, root)
        kernel = take_kernel(root, result / "vmlinuz")
        debian_packages = installed_packages(runner, root)

    with progress.step(f"initramfs.img (busybox, squashfs/overlay/loop of {kernel})"):
        runner.run(
            [
                str(project / "scripts/build-os-initramfs.sh"),
                *("--root", str(root), "--kernel-version", kernel),
                *("--init", str(project / "initramfs/os-init")),
                *("--output", str(result / "initramfs.img")),
            ],
            "build-os-initramfs.sh",
            env=epoch_env,
        )

    with progress.step(f"rootfs.sqfs (mksquashfs, {spec.compression})"):
        slim_tree(runner, root, kernel, spec.all_modules)
        # mksquashfs refuses -mkfs-time/-all-time when SOURCE_DATE_EPOCH is also set.
        runner.run(
            plan.mksquashfs_argv(spec, str(root), str(result / "rootfs.sqfs")),
            "mksquashfs",
            unset=("SOURCE_DATE_EPOCH",),
        )
        os.chmod(result / "rootfs.sqfs", 0o644)

    with progress.step(f"finish {out}"):
        write_text(result / "cmdline", plan.kernel_cmdline(version) + "\n")
        write_text(result / "version", version + "\n")
        summary: dict[str, Any] = {
            "format": plan.FORMAT,
            "cache_key": key,
            "arch": spec.arch.name,
            "debian_arch": spec.arch.debian,
            "suite": spec.suite,
            "version": version,
            "kernel": kernel,
            "epoch": spec.epoch,
            "compression": spec.compression,
            "includes": list(spec.includes),
            "files": file_info(result),
            "build_seconds": round(time.monotonic() - started, 1),
            "debian_packages": debian_packages,
            # Two builds from the same archive state have the same value (docs/os-image.md).
            "debian_packages_sha256": hashlib.sha256(
                json.dumps(debian_packages, sort_keys=True).encode()
            ).hexdigest(),
        }
        write_text(result / plan.STAMP, json.dumps(summary, indent=2, sort_keys=True) + "\n")
        for name in (*plan.OUTPUT_FILES, plan.STAMP):
            fsync_path(result / name)
        fsync_path(result)
        if os.path.lexists(out):
            os.rename(out, work / "previous")
        os.rename(result, out)
        fsync_path(out.parent)
    return {**summary, "output": str(out), "cached": False}
