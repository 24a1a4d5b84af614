"""What travels across kexec inside the initrd, and its bytes: a newc cpio archive (pure, no I/O).

Linux unpacks every archive it finds in the initrd, one after the other, into the same rootfs
(Documentation/driver-api/early-userspace/buffer-format.rst). An archive must start on a
4-byte boundary of the whole initrd, and zero bytes between archives are skipped; so stage 1
loads ``initramfs.img``, zeros up to the next boundary, then one uncompressed newc archive:

    phase/rootfs.sqfs -> mirror/<channel>/<arch>/<rootfs path>     (a symbolic link)
    phase/mirror/<channel>/<arch>/manifest.json                    the signed bytes, as fetched
    phase/mirror/<channel>/<arch>/<path of each artifact>          kernel, initramfs, rootfs, dtb

The image's early userspace mounts ``/phase/rootfs.sqfs``; the booted system finds the signed
manifest and every artifact it booted in ``phase/mirror``, laid out as ``plasmd serve`` serves
a mirror (docs/os-image.md), so it can serve the next machine without holding any key.

The archive is described by :func:`carry_plan` as entries in order; an entry whose body is an
artifact names it, and the caller streams that artifact's bytes (hundreds of MB) between the
entry's header and its padding while hashing them, never holding them whole.
"""

from __future__ import annotations

import stat
from typing import NamedTuple

from ..manifest import MANIFEST_FILE, Manifest

CARRY_DIR = "phase"
ROOTFS_PATH = f"{CARRY_DIR}/rootfs.sqfs"
MIRROR_DIR = f"{CARRY_DIR}/mirror"

# newc stores sizes as 8 hex digits: a carried file is smaller than 4 GiB.
MAX_CARRIED_SIZE = 0xFFFF_FFFF

_MAGIC = b"070701"
_HEADER_SIZE = 110
_DIR = stat.S_IFDIR | 0o755
_FILE = stat.S_IFREG | 0o444
_LINK = stat.S_IFLNK | 0o777
TRAILER_NAME = "TRAILER!!!"


class Carried(NamedTuple):
    """One archive member: ``body`` inline (a directory's is empty, a link's is its target),
    or, with ``artifact``, that artifact's ``size`` bytes streamed by the caller."""

    path: str
    mode: int
    size: int
    body: bytes = b""
    artifact: str | None = None


def padding(offset: int) -> bytes:
    """The zero bytes that bring ``offset`` up to the next 4-byte boundary."""
    return b"\0" * (-offset % 4)


def header(entry: Carried, ino: int) -> bytes:
    """The newc header of ``entry`` (inode number ``ino``), with its name and padding: what
    comes before the body. The body is followed by ``padding(entry.size)``."""
    if not 0 <= entry.size <= MAX_CARRIED_SIZE:
        raise ValueError(f"{entry.path}: {entry.size} bytes cannot be carried (4 GiB at most)")
    name = entry.path.encode() + b"\0"
    nlink = 2 if stat.S_ISDIR(entry.mode) else 1
    fields = (ino, entry.mode, 0, 0, nlink, 0, entry.size, 0, 0, 0, 0, len(name), 0)
    head = _MAGIC + b"".join(b"%08X" % value for value in fields)
    return head + name + padding(_HEADER_SIZE + len(name))


def trailer() -> bytes:
    """The archive's last member."""
    return header(Carried(TRAILER_NAME, 0, 0), 0)


def _directory(path: str) -> Carried:
    return Carried(path, _DIR, 0)


def carry_plan(manifest: Manifest, manifest_bytes: bytes) -> tuple[Carried, ...]:
    """The archive that carries a manifest naming a ``rootfs`` across kexec (module docstring);
    empty for one that names none (nothing needs carrying: the initramfs is the whole system).
    ``manifest_bytes`` are the signed bytes the manifest was parsed from."""
    if "rootfs" not in manifest.artifacts:
        return ()
    for artifact in manifest.artifacts.values():
        if artifact.size > MAX_CARRIED_SIZE:
            raise ValueError(
                f"{artifact.name}: {artifact.size} bytes is too large to carry in the initrd "
                "(4 GiB at most)"
            )
    combination = f"{MIRROR_DIR}/{manifest.channel}/{manifest.arch}"
    directories = [CARRY_DIR, MIRROR_DIR, f"{MIRROR_DIR}/{manifest.channel}", combination]
    files = [Carried(f"{combination}/{MANIFEST_FILE}", _FILE, len(manifest_bytes), manifest_bytes)]
    for artifact in sorted(manifest.artifacts.values(), key=lambda a: a.path):
        *parents, _ = artifact.path.split("/")
        for depth in range(1, len(parents) + 1):
            directory = f"{combination}/{'/'.join(parents[:depth])}"
            if directory not in directories:
                directories.append(directory)
        path = f"{combination}/{artifact.path}"
        files.append(Carried(path, _FILE, artifact.size, artifact=artifact.name))
    target = f"mirror/{manifest.channel}/{manifest.arch}/{manifest.artifacts['rootfs'].path}"
    link = Carried(ROOTFS_PATH, _LINK, len(target.encode()), target.encode())
    return (*map(_directory, directories), *files, link)


def archive_size(entries: tuple[Carried, ...]) -> int:
    """The whole archive's length (0 for no entries: no archive at all)."""
    if not entries:
        return 0
    total = len(trailer())
    for ino, entry in enumerate(entries, start=1):
        total += len(header(entry, ino)) + entry.size + len(padding(entry.size))
    return total
