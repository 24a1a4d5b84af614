"""Check a phase-fetch directory against its verified manifest, and stage the boot files.

``check_dir`` is ``phase-verify --check-dir``: every artifact the manifest names has its signed
size and sha256, ``DIR/cmdline`` is the manifest's cmdline, and no known artifact file lies in
DIR that the manifest does not name.

``stage`` is the same check done by copying (``phase-verify --check-dir DIR --stage-into
PRIVDIR``, what kexec-boot runs): it creates PRIVDIR fresh (0700, it must not exist) and writes
into it exactly what kexec will load, built only from the verified manifest:

    PRIVDIR/kernel    the ``kernel`` artifact
    PRIVDIR/initrd    the ``initramfs`` artifact, if the manifest names one
    PRIVDIR/cmdline   the manifest's cmdline (UTF-8, no newline; may be empty)

Each source file is read once (O_NOFOLLOW|O_NONBLOCK, must be a regular file of the signed
size) and hashed while it is copied, so the bytes compared with the manifest are the bytes kexec
will read; nobody else can change the copies (see docs/boot.md). The staged names are the boot
plan's, not the artifacts': the initrd is where more pieces (a rootfs appended to the
initramfs) and a check that the machine has the memory for them belong.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from ..errors import IntegrityError, StageError
from ..fsutil import (
    create_exclusive,
    fsync_dir,
    hash_copy,
    open_regular,
    read_regular_file,
    write_all,
)
from ..manifest import ARTIFACT_FILES, Artifact, Manifest


@dataclass(frozen=True)
class BootPlan:
    """What kexec loads, as artifact names: the kernel, and the pieces of the initrd in order."""

    kernel: str
    initrd: tuple[str, ...]


def boot_plan(manifest: Manifest) -> BootPlan:
    return BootPlan(
        kernel="kernel",
        initrd=tuple(name for name in ("initramfs",) if name in manifest.artifacts),
    )


def check_dir(manifest: Manifest, directory: str | os.PathLike[str]) -> None:
    """Raise IntegrityError unless DIR holds exactly what phase-fetch wrote for this manifest."""
    _check_side_files(manifest, Path(directory))
    for artifact in manifest.artifacts.values():
        _verify_into(Path(directory) / artifact.name, artifact, None)


def stage(
    manifest: Manifest, directory: str | os.PathLike[str], private: str | os.PathLike[str]
) -> None:
    """``check_dir``, with the boot files copied into the fresh private directory as they are
    hashed. On any failure the private directory is removed again."""
    source, target = Path(directory), Path(private)
    _check_side_files(manifest, source)
    plan = boot_plan(manifest)
    _make_private_dir(target)
    try:
        staged = {plan.kernel, *plan.initrd}
        # Artifacts not loaded (rootfs, dtb, yet) are still checked in place: DIR must be the
        # whole verified set, as before.
        for artifact in manifest.artifacts.values():
            if artifact.name not in staged:
                _verify_into(source / artifact.name, artifact, None)
        _stage_file(target / "kernel", source, [manifest.artifacts[plan.kernel]])
        if plan.initrd:
            _stage_file(target / "initrd", source, [manifest.artifacts[n] for n in plan.initrd])
        _write_new(target / "cmdline", (manifest.cmdline or "").encode())
        fsync_dir(target)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise


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


def _stage_file(target: Path, source: Path, pieces: list[Artifact]) -> None:
    """``target`` = the pieces' files, verified and concatenated in order, fsync'd."""
    dst = _create(target)
    try:
        for artifact in pieces:
            _verify_into(source / artifact.name, artifact, dst)
        _sync(dst, target)
    finally:
        os.close(dst)


def _write_new(target: Path, data: bytes) -> None:
    dst = _create(target)
    try:
        try:
            write_all(dst, data)
        except OSError as exc:
            raise StageError(f"cannot write {target}: {exc.strerror or exc}") from exc
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
