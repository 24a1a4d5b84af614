"""``plasmd publish``: put a file into DIR/<channel>/<arch>/ the way a provider wants it.

Written elsewhere first (a hidden temp file in the target directory, which the catalog never
looks at), hashed as it is copied, fsync'd, then renamed into place in one step, and the
directory fsync'd: a scan sees the old file or the whole new one, never a part. The channel and
arch directories are opened without following symbolic links and the temp file is created with
O_EXCL|O_NOFOLLOW, so nothing planted in the tree redirects the write; the final rename replaces
a symlink of that name instead of writing through it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..fsutil import hash_copy, open_regular
from ..names import check_arch, check_channel
from .catalog import WATCHED_FILES

NAME_ALIASES = {  # manifest names people may give instead of the file names
    "kernel": "vmlinuz",
    "initramfs": "initramfs.img",
    "rootfs": "rootfs.sqfs",
}
DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Published:
    path: Path
    name: str
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "name": self.name,
            "size": self.size,
            "sha256": self.sha256,
        }


def target_name(source: Path, name: str | None) -> str:
    """The file name in DIR/<channel>/<arch>/: ``name`` (a file or manifest name), else the
    source's own name when it is one the provider knows."""
    chosen = name if name is not None else source.name
    chosen = NAME_ALIASES.get(chosen, chosen)
    if chosen not in WATCHED_FILES:
        known = ", ".join(WATCHED_FILES)
        what = f"--as {name}" if name is not None else f"{source.name} (give --as NAME)"
        raise UsageError(f"{what} is not a file a provider serves; one of: {known}")
    return chosen


def _open_dir(name: str, parent: int) -> int:
    """A directory's descriptor, never through a symlink; made (0755) when missing."""
    try:
        return os.open(name, DIRECTORY_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        pass
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o755, dir_fd=parent)
    return os.open(name, DIRECTORY_FLAGS, dir_fd=parent)


def publish(
    source: str | os.PathLike[str],
    artifacts_dir: str | os.PathLike[str],
    channel: str,
    arch: str,
    name: str | None = None,
    *,
    channel_dir: str | os.PathLike[str] | None = None,
) -> Published:
    """Copy ``source`` into ARTIFACTS_DIR/<channel>/<arch>/<name> atomically (or into
    CHANNEL_DIR/<arch>/<name> when the configuration gives the channel its own directory)."""
    source_path = Path(source)
    channel, arch = check_channel(channel), check_arch(arch)
    filename = target_name(source_path, name)
    root = Path(channel_dir if channel_dir is not None else artifacts_dir)
    parts = (arch,) if channel_dir is not None else (channel, arch)
    if not root.is_dir():
        raise UsageError(f"artifacts directory {root} does not exist")
    try:
        src = open_regular(source_path, follow_symlinks=True)
    except OSError as exc:
        raise UsageError(f"cannot read {source_path}: {exc.strerror or exc}") from exc
    where = root.joinpath(*parts)
    target = where / filename
    opened: list[int] = []
    try:
        try:
            opened.append(os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
            for part in parts:
                opened.append(_open_dir(part, opened[-1]))
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UsageError(
                    f"{where}: a part of it is a symbolic link or not a directory "
                    "(publish never writes through a link)"
                ) from exc
            raise UsageError(f"cannot open {where}: {exc.strerror or exc}") from exc
        digest, size = _copy_in(src, opened[-1], filename, source_path, target)
    finally:
        os.close(src)
        for fd in reversed(opened):
            os.close(fd)
    return Published(target, filename, size, digest)


def _copy_in(
    src: int, directory: int, filename: str, source: Path, target: Path
) -> tuple[str, int]:
    expected = os.fstat(src).st_size
    temp = f".{filename}.{secrets.token_hex(6)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        dst = os.open(temp, flags, 0o644, dir_fd=directory)
    except OSError as exc:
        raise UsageError(f"cannot write in {target.parent}: {exc.strerror or exc}") from exc
    renamed = False
    try:
        try:
            digest, size = hash_copy(src, dst, expected)
            os.fsync(dst)
        finally:
            os.close(dst)
        if size != expected or os.fstat(src).st_size != expected:
            raise UsageError(
                f"{source} changed while it was copied; publish it once it is complete"
            )
        os.rename(temp, filename, src_dir_fd=directory, dst_dir_fd=directory)
        renamed = True
        os.fsync(directory)
    except OSError as exc:
        raise UsageError(f"cannot publish {target}: {exc.strerror or exc}") from exc
    finally:
        if not renamed:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=directory)
    return digest, size
