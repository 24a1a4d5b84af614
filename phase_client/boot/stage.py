"""Check a phase-fetch directory against its verified manifest, and stage the boot files.

``check_dir`` is ``phase-verify --check-dir``: every artifact the manifest names has its signed
size and sha256, ``DIR/cmdline`` is the manifest's cmdline, and no known artifact file lies in
DIR that the manifest does not name.

``stage`` is the same check done by copying (``phase-verify --check-dir DIR --stage-into
PRIVDIR``, what kexec-boot runs): it creates PRIVDIR fresh (0700, it must not exist) and writes
into it exactly what kexec will load, built only from the verified manifest:

    PRIVDIR/kernel    the ``kernel`` artifact
    PRIVDIR/initrd    the ``initramfs`` artifact, then (if the manifest names a ``rootfs``)
                      zeros to a 4-byte boundary and a newc cpio (boot/carry.py) holding the
                      signed manifest and every artifact under ``phase/mirror/<ch>/<arch>/``
                      and ``phase/rootfs.sqfs`` linking to the rootfs there: the kernel
                      unpacks both, so the root filesystem, and what the booted system needs
                      to serve the image to the next machine, survive kexec
    PRIVDIR/dtb       the ``dtb`` artifact, if named (kexec --dtb, on the arches that use one)
    PRIVDIR/cmdline   the manifest's cmdline, then ``phase.version=<version>`` and, with a
                      rootfs, ``phase.rootfs_sha256=<hex>`` (UTF-8, no newline)

Each source file is read once (O_NOFOLLOW|O_NONBLOCK, must be a regular file of the signed
size) and hashed while it is copied, so the bytes compared with the manifest are the bytes kexec
will read; nobody else can change the copies (see docs/boot.md). Before anything is copied,
the machine must have the memory for the copies and for kexec's own copy of them
(``MemAvailable``): otherwise one clear error instead of an OOM kill half-way through.

``stage_in_place`` is phase-boot's way without a fetch directory: the fetch wrote straight into
PRIVDIR (``make_private_dir``), each artifact hashed as it arrived and renamed into place only
once it matched, so the fetched files are already what kexec may load: nothing is read, hashed
or copied a second time but a carried rootfs (into ``PRIVDIR/initrd.img``; see
``stage_in_place``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from pathlib import Path
from typing import NamedTuple

from ..errors import InsufficientMemoryError, IntegrityError, StageError
from ..fsutil import (
    atomic_write,
    create_exclusive,
    fsync_dir,
    hash_copy,
    open_regular,
    read_regular_file,
    write_all,
)
from ..manifest import ARTIFACT_FILES, Artifact, Manifest
from .carry import Carried, archive_size, carry_plan, header, padding, trailer


class BootPlan(NamedTuple):
    """What kexec loads: the kernel and the dtb (artifact names), and the initrd: the
    initramfs artifact, then the carry archive (boot/carry.py) when there is one."""

    kernel: str
    initramfs: str | None
    carried: tuple[Carried, ...]
    dtb: str | None

    def initrd_size(self, manifest: Manifest) -> int:
        size = manifest.artifacts[self.initramfs].size if self.initramfs else 0
        if self.carried:
            size += len(padding(size)) + archive_size(self.carried)
        return size

    def staged_size(self, manifest: Manifest) -> int:
        """The bytes of every staged file (kernel, initrd, dtb; the cmdline is noise)."""
        loaded = [self.kernel, *([self.dtb] if self.dtb else [])]
        return sum(manifest.artifacts[n].size for n in loaded) + self.initrd_size(manifest)


def boot_plan(manifest: Manifest, manifest_bytes: bytes) -> BootPlan:
    """What kexec loads for ``manifest`` (parsed from ``manifest_bytes``, which are carried
    across kexec byte for byte with the rootfs). ValueError: cannot be carried."""
    names = manifest.artifacts
    return BootPlan(
        kernel="kernel",
        initramfs="initramfs" if "initramfs" in names else None,
        carried=carry_plan(manifest, manifest_bytes),
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
    # A word the signed cmdline already has is not repeated.
    words = signed.split()
    return " ".join(filter(None, [signed, *(w for w in added if w not in words)]))


def memory_needed(plan: BootPlan, manifest: Manifest, consume: bool = False) -> int:
    """Bytes of RAM, beyond what is in use now, that staging and loading this image take:
    the staged files (RAM: a stage-1 tmpfs), then while kexec_file_load runs two more copies
    (the kernel reads each file into a buffer, then copies it into the segments' pages; an
    OOM kill of kexec at -m 640 measured it), plus MEMORY_HEADROOM. With ``consume``, DIR's
    artifact files (already counted as in use) are removed once staged, before the load."""
    freed = sum(a.size for a in manifest.artifacts.values()) if consume else 0
    return 3 * plan.staged_size(manifest) - freed + MEMORY_HEADROOM


def memory_needed_in_place(plan: BootPlan, manifest: Manifest, consume: bool = False) -> int:
    """Bytes of RAM, beyond what is in use before the fetch, that fetching this image straight
    into the private directory and loading it take: every artifact (RAM: a stage-1 tmpfs), the
    initrd built beside them when a carry archive is needed, then kexec_file_load's two copies
    (``memory_needed``), plus MEMORY_HEADROOM. With ``consume``, the artifacts folded into the
    built initrd are removed once it is built, before the load."""
    total = sum(a.size for a in manifest.artifacts.values())
    built = plan.initrd_size(manifest) if plan.carried else 0
    folded = sum(a.size for a in _folded(plan, manifest)) if consume else 0
    return total + built - folded + 2 * plan.staged_size(manifest) + MEMORY_HEADROOM


def _folded(plan: BootPlan, manifest: Manifest) -> list[Artifact]:
    """The artifacts that reach kexec only inside the built initrd (none without a carry)."""
    if not plan.carried:
        return []
    return [a for a in manifest.artifacts.values() if a.name not in (plan.kernel, plan.dtb)]


def consumed(plan: BootPlan, manifest: Manifest, in_place: bool) -> list[str]:
    """The artifacts whose fetched files ``consume`` removes once staged: in place
    (``stage_in_place``), those folded into the built initrd; from a fetch directory
    (``stage``), every one, since what kexec loads was copied out of it."""
    chosen = _folded(plan, manifest) if in_place else manifest.artifacts.values()
    return [a.name for a in chosen]


def check_memory(needed: int, meminfo: str | os.PathLike[str]) -> None:
    """InsufficientMemoryError unless ``meminfo``'s MemAvailable covers ``needed`` bytes (no
    check where the kernel does not say)."""
    available = _mem_available(Path(meminfo))
    if available is not None and available < needed:
        raise InsufficientMemoryError(
            f"not enough memory to stage and load this image: needs {needed >> 20} MiB, "
            f"has {available >> 20} MiB available"
        )


# The initrd stage_in_place builds beside the fetched artifacts: a name with a dot, which no
# artifact can have (manifest.ARTIFACT_NAME_RE), so an artifact called "initrd" stays its own.
BUILT_INITRD = "initrd.img"


def stage_in_place(
    manifest: Manifest,
    manifest_bytes: bytes,
    private: str | os.PathLike[str],
    consume: bool = False,
) -> Path | None:
    """Stage what the fetch wrote straight into ``private``, returning the initrd to load
    (None: the manifest names none). ``private`` must have been made by
    ``make_private_dir`` and written only by this process's fetch: nobody else can have
    opened a file there, and every artifact in it was hashed as it arrived and compared with
    ``manifest`` before it got its name. So the kernel, the dtb and (when nothing is carried)
    the initramfs are loaded as they are: each is only checked to be a regular file of its
    signed size with no other name, not read again. With a carry archive (a ``rootfs``) the
    initrd is built as ``stage`` builds it, into ``BUILT_INITRD``, every artifact read from
    ``private``, hashed and compared again as it is copied; ``consume`` then removes the
    artifacts folded into it. Last, ``cmdline`` becomes the staged command line. The caller
    removes ``private`` on a failure."""
    target = Path(private)
    try:
        plan = boot_plan(manifest, manifest_bytes)
    except ValueError as exc:
        raise StageError(str(exc)) from exc
    as_is = [plan.kernel, plan.dtb, None if plan.carried else plan.initramfs]
    for name in filter(None, as_is):
        _check_loaded_as_is(target / name, manifest.artifacts[name])
    initrd: Path | None = None
    if plan.carried:
        initrd = target / BUILT_INITRD
        _stage_initrd(initrd, target, manifest, plan)
        if consume:
            for name in consumed(plan, manifest, in_place=True):
                os.unlink(target / name)
    elif plan.initramfs:
        initrd = target / plan.initramfs
    try:
        atomic_write(target / "cmdline", staged_cmdline(manifest).encode(), 0o600)
    except OSError as exc:
        raise StageError(f"cannot write {target / 'cmdline'}: {exc.strerror or exc}") from exc
    fsync_dir(target)
    return initrd


def _open_sized(path: Path, artifact: Artifact) -> int:
    """``path`` opened for reading; IntegrityError unless it is a regular file of the
    artifact's size (a file of the wrong size is refused without reading it)."""
    try:
        fd = open_regular(path)
    except OSError as exc:
        raise IntegrityError(f"{path}: {exc.strerror or exc}") from exc
    try:
        size = os.fstat(fd).st_size
    except BaseException:
        os.close(fd)
        raise
    if size != artifact.size:
        os.close(fd)
        raise IntegrityError(f"{path}: size {size}, the manifest says {artifact.size}")
    return fd


def _check_loaded_as_is(path: Path, artifact: Artifact) -> None:
    """A file kexec loads without reading it again: a regular file of its signed size, and
    its only name. Another name (a hard link, e.g. a blob cache's) would be a way to change
    its bytes from outside the private directory between the fetch's hash and kexec."""
    fd = _open_sized(path, artifact)
    try:
        links = os.fstat(fd).st_nlink
    finally:
        os.close(fd)
    if links != 1:
        raise IntegrityError(f"{path}: has {links} names (hard links); it must be its only one")


def check_dir(manifest: Manifest, directory: str | os.PathLike[str]) -> None:
    """Raise IntegrityError unless DIR holds exactly what phase-fetch wrote for this manifest."""
    _check_side_files(manifest, Path(directory))
    for artifact in manifest.artifacts.values():
        _verify_into(Path(directory) / artifact.name, artifact, None)


def stage(
    manifest: Manifest,
    manifest_bytes: bytes,
    directory: str | os.PathLike[str],
    private: str | os.PathLike[str],
    meminfo: str | os.PathLike[str] | None = "/proc/meminfo",
    consume: bool = False,
) -> None:
    """``check_dir``, with the boot files copied into the fresh private directory as they are
    hashed (``manifest_bytes``: the signed bytes ``manifest`` was parsed from). With
    ``meminfo``, first InsufficientMemoryError unless its MemAvailable covers
    ``memory_needed``. With ``consume``, DIR's artifact files are removed once everything is
    staged (RAM is short where kexec runs; they are not needed to load). On any failure the
    private directory is removed again, and DIR is left as it was."""
    source, target = Path(directory), Path(private)
    _check_side_files(manifest, source)
    try:
        plan = boot_plan(manifest, manifest_bytes)
    except ValueError as exc:
        raise StageError(str(exc)) from exc
    if meminfo is not None:
        check_memory(memory_needed(plan, manifest, consume), meminfo)
    make_private_dir(target)
    try:
        loaded = {plan.kernel, plan.initramfs, plan.dtb}
        loaded |= {entry.artifact for entry in plan.carried}
        # Any artifact not loaded is still checked in place: DIR must be the whole verified set.
        for artifact in manifest.artifacts.values():
            if artifact.name not in loaded:
                _verify_into(source / artifact.name, artifact, None)
        _stage_file(target / "kernel", source, manifest.artifacts[plan.kernel])
        if plan.initramfs or plan.carried:
            _stage_initrd(target / "initrd", source, manifest, plan)
        if plan.dtb:
            _stage_file(target / "dtb", source, manifest.artifacts[plan.dtb])
        _write_new(target / "cmdline", staged_cmdline(manifest).encode())
        fsync_dir(target)
    except BaseException:
        import shutil  # only on this path: shutil costs more to import than staging's checks

        shutil.rmtree(target, ignore_errors=True)
        raise
    if consume:
        for name in consumed(plan, manifest, in_place=False):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(source / name)


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
    src = _open_sized(path, artifact)
    try:
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
    """``target`` = the initramfs, then the carry archive on a 4-byte boundary, every artifact
    verified as it is copied (an artifact carried twice is read and checked twice); fsync'd."""
    dst = _create(target)
    try:
        offset = 0
        if plan.initramfs:
            artifact = manifest.artifacts[plan.initramfs]
            _verify_into(source / artifact.name, artifact, dst)
            offset = artifact.size
        if plan.carried:
            _write_piece(dst, target, padding(offset))
        for ino, entry in enumerate(plan.carried, start=1):
            _write_piece(dst, target, header(entry, ino))
            if entry.artifact is None:
                _write_piece(dst, target, entry.body)
            else:
                _verify_into(source / entry.artifact, manifest.artifacts[entry.artifact], dst)
            _write_piece(dst, target, padding(entry.size))
        if plan.carried:
            _write_piece(dst, target, trailer())
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


def make_private_dir(private: str | os.PathLike[str]) -> None:
    """The fresh private directory staging writes into: mkdir 0700; StageError when it exists
    (anything already there may be someone else's), or when its parent is one somebody else
    could rename it out of or swap (see _check_parents)."""
    target = Path(private)
    _check_parents(target.parent)
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
