"""Check a phase-fetch directory against its verified manifest, and stage the boot files.

``check_dir`` is ``phase-verify --check-dir``: every artifact the manifest names has its signed
size and sha256, ``DIR/cmdline`` is the manifest's cmdline, and no known artifact file lies in
DIR that the manifest does not name.

``stage`` is the same check done by copying (``phase-verify --check-dir DIR --stage-into
PRIVDIR``, what kexec-boot runs): it creates PRIVDIR fresh (0700, it must not exist) and writes
into it exactly what kexec will load, built only from the verified manifest:

    PRIVDIR/kernel    the ``kernel`` artifact
    PRIVDIR/initrd    the ``initramfs`` artifact, then (if the manifest names a ``rootfs``)
                      zeros to a 4-byte boundary and a newc cpio holding it as
                      ``phase/rootfs.sqfs`` (boot/carry.py): the kernel unpacks both, so the
                      root filesystem survives kexec
    PRIVDIR/dtb       the ``dtb`` artifact, if named (kexec --dtb, on the arches that use one)
    PRIVDIR/cmdline   the manifest's cmdline, then ``phase.version=<version>`` and, with a
                      rootfs, ``phase.rootfs_sha256=<hex>`` (UTF-8, no newline)

Each source file is read once (O_NOFOLLOW|O_NONBLOCK, must be a regular file of the signed
size) and hashed while it is copied, so the bytes compared with the manifest are the bytes kexec
will read; nobody else can change the copies (see docs/boot.md). Before anything is copied,
the machine must have the memory for the copies and for kexec's own copy of them
(``MemAvailable``): otherwise one clear error instead of an OOM kill half-way through.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from ..errors import InsufficientMemoryError, IntegrityError, StageError
from ..fsutil import (
    create_exclusive,
    fsync_dir,
    hash_copy,
    open_regular,
    read_regular_file,
    write_all,
)
from ..manifest import ARTIFACT_FILES, Artifact, Manifest
from .carry import (
    MAX_CARRIED_SIZE,
    ROOTFS_PATH,
    carried_size,
    file_header,
    padding,
    trailer,
)


@dataclass(frozen=True)
class BootPlan:
    """What kexec loads, as artifact names: the kernel, the initrd's leading archive, the
    artifacts carried inside the initrd (name, path in the initrd's rootfs), and the dtb."""

    kernel: str
    initramfs: str | None
    carried: tuple[tuple[str, str], ...]
    dtb: str | None

    def names(self) -> set[str]:
        carried = {name for name, _path in self.carried}
        return {self.kernel, *carried} | {n for n in (self.initramfs, self.dtb) if n}


def boot_plan(manifest: Manifest) -> BootPlan:
    names = manifest.artifacts
    return BootPlan(
        kernel="kernel",
        initramfs="initramfs" if "initramfs" in names else None,
        carried=(("rootfs", ROOTFS_PATH),) if "rootfs" in names else (),
        dtb="dtb" if "dtb" in names else None,
    )


# A version that is one plain word can ride on the kernel command line as phase.version=.
_VERSION_WORD = re.compile(r"[A-Za-z0-9._+~:@-]+")

# Kept free beyond the copies and kexec's segments: the running system and kexec-tools'
# own buffers need some room while the image is loaded.
MEMORY_HEADROOM = 32 << 20


def staged_cmdline(manifest: Manifest) -> str:
    """The signed cmdline, then what the booted system is told of the image it came from:
    ``phase.version=`` (when the version is one plain word; the booted system reads the last
    one) and, with a carried rootfs, its signed ``phase.rootfs_sha256=`` for a second check."""
    signed = manifest.cmdline or ""
    added = []
    if _VERSION_WORD.fullmatch(manifest.version):
        added.append(f"phase.version={manifest.version}")
    if "rootfs" in manifest.artifacts:
        added.append(f"phase.rootfs_sha256={manifest.artifacts['rootfs'].sha256}")
    # A word the signed cmdline already ends up with is not repeated.
    return " ".join([signed] * bool(signed) + [w for w in added if w not in signed.split()])


def initrd_size(manifest: Manifest, plan: BootPlan) -> int:
    """The staged initrd's length: the initramfs, padding, one carry archive per file."""
    size = manifest.artifacts[plan.initramfs].size if plan.initramfs else 0
    for name, _path in plan.carried:
        size += len(padding(size)) + carried_size(manifest.artifacts[name].size)
    return size


def memory_needed(manifest: Manifest) -> int:
    """Bytes of RAM that staging and loading this image take: every staged file once in the
    private directory (RAM, on a stage-1 tmpfs) and once more as kexec's segment, plus
    MEMORY_HEADROOM."""
    plan = boot_plan(manifest)
    staged = manifest.artifacts[plan.kernel].size + initrd_size(manifest, plan)
    if plan.dtb:
        staged += manifest.artifacts[plan.dtb].size
    return 2 * staged + MEMORY_HEADROOM


def check_dir(manifest: Manifest, directory: str | os.PathLike[str]) -> None:
    """Raise IntegrityError unless DIR holds exactly what phase-fetch wrote for this manifest."""
    _check_side_files(manifest, Path(directory))
    for artifact in manifest.artifacts.values():
        _verify_into(Path(directory) / artifact.name, artifact, None)


def stage(
    manifest: Manifest,
    directory: str | os.PathLike[str],
    private: str | os.PathLike[str],
    meminfo: str | os.PathLike[str] | None = "/proc/meminfo",
) -> None:
    """``check_dir``, with the boot files copied into the fresh private directory as they are
    hashed. With ``meminfo``, first InsufficientMemoryError unless its MemAvailable covers
    ``memory_needed``. On any failure the private directory is removed again."""
    source, target = Path(directory), Path(private)
    _check_side_files(manifest, source)
    plan = boot_plan(manifest)
    for name, _path in plan.carried:
        if manifest.artifacts[name].size > MAX_CARRIED_SIZE:
            raise StageError(f"{name}: {manifest.artifacts[name].size} bytes is too large to "
                             "carry in the initrd (4 GiB at most)")  # fmt: skip
    if meminfo is not None:
        _check_memory(memory_needed(manifest), Path(meminfo))
    _make_private_dir(target)
    try:
        # Any artifact not loaded is still checked in place: DIR must be the whole verified set.
        for artifact in manifest.artifacts.values():
            if artifact.name not in plan.names():
                _verify_into(source / artifact.name, artifact, None)
        _stage_file(target / "kernel", source, manifest.artifacts[plan.kernel])
        if plan.initramfs or plan.carried:
            _stage_initrd(target / "initrd", source, manifest, plan)
        if plan.dtb:
            _stage_file(target / "dtb", source, manifest.artifacts[plan.dtb])
        _write_new(target / "cmdline", staged_cmdline(manifest).encode())
        fsync_dir(target)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise


def _check_memory(needed: int, meminfo: Path) -> None:
    available = _mem_available(meminfo)
    if available is not None and available < needed:
        raise InsufficientMemoryError(
            f"not enough memory to stage and load this image: needs {needed >> 20} MiB, "
            f"has {available >> 20} MiB available"
        )


def _mem_available(meminfo: Path) -> int | None:
    """MemAvailable in bytes; None where the kernel does not say (no check possible)."""
    try:
        text = read_regular_file(meminfo, 1 << 16).decode("ascii", "replace")
    except OSError:
        return None
    found = re.search(r"^MemAvailable:\s+(\d+) kB$", text, re.M)
    return int(found.group(1)) << 10 if found else None


def _check_side_files(manifest: Manifest, directory: Path) -> None:
    # Cheap checks first, before any artifact is hashed.
    unnamed = sorted(set(ARTIFACT_FILES.values()) - set(manifest.artifacts))
    for name in unnamed:
        if os.path.lexists(directory / name):
            raise IntegrityError(f"{directory / name}: not named by the manifest")
    cmdline_path = directory / "cmdline"
    want = ((manifest.cmdline or "") + "\n").encode()
    try:
        written = read_regular_file(cmdline_path, len(want) + 1, follow_symlinks=False)
    except OSError as exc:
        raise IntegrityError(f"{cmdline_path}: {exc.strerror or exc}") from exc
    if written != want:
        raise IntegrityError(f"{cmdline_path} differs from the manifest's cmdline")


def _verify_into(path: Path, artifact: Artifact, dst: int | None) -> None:
    """Read ``path`` once, hashing it and, with ``dst``, copying it there in the same pass;
    IntegrityError unless it is a regular file with the artifact's size and sha256."""
    try:
        src = open_regular(path)
    except OSError as exc:
        raise IntegrityError(f"{path}: {exc.strerror or exc}") from exc
    try:
        # Size first: a file of the wrong size is refused without reading it.
        size = os.fstat(src).st_size
        if size != artifact.size:
            raise IntegrityError(f"{path}: size {size}, the manifest says {artifact.size}")
        try:
            digest, copied = hash_copy(src, dst, artifact.size)
        except OSError as exc:
            if dst is not None and exc.errno in _NO_ROOM:
                raise StageError(f"cannot stage {path}: {exc.strerror}") from exc
            raise IntegrityError(f"{path}: {exc.strerror or exc}") from exc
    finally:
        os.close(src)
    if copied != artifact.size:
        raise IntegrityError(f"{path}: size changed while it was read")
    if digest != artifact.sha256:
        raise IntegrityError(f"{path}: sha256 differs from the manifest")


# The ways writing into a fresh private directory fails: the file system (RAM) is full.
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.ENOMEM}


def _stage_file(target: Path, source: Path, artifact: Artifact) -> None:
    """``target`` = the artifact's file, verified as it is copied, fsync'd."""
    dst = _create(target)
    try:
        _verify_into(source / artifact.name, artifact, dst)
        _sync(dst, target)
    finally:
        os.close(dst)


def _stage_initrd(target: Path, source: Path, manifest: Manifest, plan: BootPlan) -> None:
    """``target`` = the initramfs, then each carried artifact in a newc archive of its own
    (each on a 4-byte boundary), every artifact verified as it is copied; fsync'd."""
    dst = _create(target)
    try:
        offset = 0
        if plan.initramfs:
            artifact = manifest.artifacts[plan.initramfs]
            _verify_into(source / artifact.name, artifact, dst)
            offset = artifact.size
        for name, path in plan.carried:
            artifact = manifest.artifacts[name]
            offset += _write_piece(dst, target, padding(offset) + file_header(path, artifact.size))
            _verify_into(source / artifact.name, artifact, dst)
            offset += artifact.size + _write_piece(dst, target, trailer(artifact.size))
        _sync(dst, target)
    finally:
        os.close(dst)


def _write_piece(dst: int, target: Path, data: bytes) -> int:
    try:
        write_all(dst, data)
    except OSError as exc:
        raise StageError(f"cannot write {target}: {exc.strerror or exc}") from exc
    return len(data)


def _write_new(target: Path, data: bytes) -> None:
    dst = _create(target)
    try:
        _write_piece(dst, target, data)
        _sync(dst, target)
    finally:
        os.close(dst)


def _create(target: Path) -> int:
    try:
        return create_exclusive(target, 0o600)
    except OSError as exc:
        raise StageError(f"cannot create {target}: {exc.strerror or exc}") from exc


def _sync(fd: int, target: Path) -> None:
    try:
        os.fsync(fd)
    except OSError as exc:
        raise StageError(f"cannot write {target}: {exc.strerror or exc}") from exc


def _make_private_dir(target: Path) -> None:
    """mkdir 0700; it must not exist (anything already there may be someone else's), and its
    parent must be one nobody else can rename it out of or swap (see _check_parents)."""
    parent = target.parent
    _check_parents(parent)
    try:
        os.mkdir(target, 0o700)
    except FileExistsError as exc:
        raise StageError(f"{target} already exists; the staging directory must be new") from exc
    except OSError as exc:
        raise StageError(f"cannot create {target}: {exc.strerror or exc}") from exc


def _check_parents(parent: Path) -> None:
    """Every directory from / down to ``parent`` belongs to root or to us, and is not writable
    by others unless sticky (like /tmp: others cannot rename or delete what is ours there).
    Otherwise someone could move our private directory away and put theirs in its place
    between the copy and kexec's open."""
    me = os.geteuid()
    try:
        real = Path(os.path.realpath(parent, strict=True))
    except OSError as exc:
        raise StageError(f"cannot create a directory in {parent}: {exc.strerror or exc}") from exc
    for directory in (real, *real.parents):
        info = os.lstat(directory)
        writable_by_others = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if info.st_uid not in (0, me) or (writable_by_others and not info.st_mode & stat.S_ISVTX):
            raise StageError(
                f"{directory} is not safe for a private staging directory "
                "(owned by another user, or writable by others and not sticky)"
            )
