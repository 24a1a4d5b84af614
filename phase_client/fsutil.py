"""File helpers: atomic output (temp file in the same directory + fsync + rename + fsync(dir)),
safe opening (new files never follow a planted link, read files must be regular) and one-pass
SHA-256 of a file, optionally copied as it is hashed."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import tempfile
from pathlib import Path

BLOCK = 1024 * 1024


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """os.write until every byte is out (a write may be short, e.g. near a full disk)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_temp(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> Path:
    """A new, fully written and fsync'd temp file beside ``path`` (``.<name>.XXXX.tmp``), for
    the caller to rename onto ``path``. mkstemp creates it with O_EXCL|O_NOFOLLOW, so a name
    planted in a shared directory is never written through."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        try:
            os.fchmod(fd, mode)
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return Path(tmp)


def atomic_write(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, never a part."""
    target = Path(path)
    tmp = write_temp(target, data, mode)
    try:
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(target.parent)


def create_exclusive(
    path: str | os.PathLike[str], mode: int = 0o600, *, readable: bool = False
) -> int:
    """A new file's descriptor. O_EXCL|O_NOFOLLOW: if anything (a file, a symlink to a file
    elsewhere, a FIFO) already has that name, this fails instead of writing into it."""
    access = os.O_RDWR if readable else os.O_WRONLY
    flags = access | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.open(path, flags, mode)


def open_regular(path: str | os.PathLike[str], *, follow_symlinks: bool = False) -> int:
    """A read-only descriptor of a regular file, for files in places others may write to.

    O_NONBLOCK, so that opening a FIFO planted where a file was expected returns at once (then
    fstat refuses it) instead of waiting for a writer; O_NOFOLLOW unless ``follow_symlinks``, so
    a planted link cannot point the reader at another file. Errors are OSError with a readable
    ``strerror``."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks:
            raise OSError(
                errno.ELOOP, "is a symbolic link, not a regular file", str(path)
            ) from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular_file(
    path: str | os.PathLike[str], limit: int, *, follow_symlinks: bool = True
) -> bytes:
    """At most ``limit`` bytes of a regular file. Opened non-blocking and checked with fstat, so
    a FIFO or device planted where a file was expected fails at once instead of hanging."""
    fd = open_regular(path, follow_symlinks=follow_symlinks)
    try:
        chunks: list[bytes] = []
        got = 0
        while got < limit and (chunk := os.read(fd, min(limit - got, BLOCK))):
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def hash_copy(src: int, dst: int | None, limit: int) -> tuple[str, int]:
    """(sha256 hex, byte count) of what ``src`` yields, read once and, with ``dst``, written
    there in the same pass: the bytes hashed are the bytes copied. Reads at most ``limit + 1``
    bytes, so a file longer than expected shows as ``limit + 1`` without being read to its end
    (it may be endless, or growing)."""
    hasher = hashlib.sha256()
    buffer = bytearray(BLOCK)
    view = memoryview(buffer)
    copied = 0
    while copied <= limit:
        got = os.readv(src, [view[: min(BLOCK, limit + 1 - copied)]])
        if not got:
            break
        hasher.update(view[:got])
        if dst is not None:
            write_all(dst, view[:got])
        copied += got
    return hasher.hexdigest(), copied


def sha256_file(path: str | os.PathLike[str], *, follow_symlinks: bool = True) -> tuple[str, int]:
    """(hex digest, size) of a regular file, read once in large blocks. A FIFO or device is an
    OSError at once; with ``follow_symlinks=False`` so is a symbolic link."""
    fd = open_regular(path, follow_symlinks=follow_symlinks)
    with os.fdopen(fd, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256")
        size = handle.tell()
    return digest.hexdigest(), size
