"""The bytes that carry files across kexec inside the initrd: a newc cpio archive (pure, no I/O).

Linux unpacks every archive it finds in the initrd, one after the other, into the same rootfs
(Documentation/driver-api/early-userspace/buffer-format.rst). An archive must start on a
4-byte boundary of the whole initrd, and zero bytes between archives are skipped; so stage 1
loads ``initramfs.img``, zeros up to the next boundary, then one uncompressed newc archive
holding the rootfs at :data:`ROOTFS_PATH` (where the image's early userspace looks for it).

The archive is built in pieces so that the caller can stream the file's bytes (hundreds of MB)
between :func:`file_header` and :func:`trailer` while hashing them, never holding them whole.
"""

from __future__ import annotations

CARRY_DIR = "phase"
ROOTFS_PATH = f"{CARRY_DIR}/rootfs.sqfs"

# newc stores sizes as 8 hex digits: a carried file is smaller than 4 GiB.
MAX_CARRIED_SIZE = 0xFFFF_FFFF

_MAGIC = b"070701"
_HEADER_SIZE = 110
_DIR_MODE = 0o040755
_FILE_MODE = 0o100444
_TRAILER = "TRAILER!!!"


def padding(offset: int) -> bytes:
    """The zero bytes that bring ``offset`` up to the next 4-byte boundary."""
    return b"\0" * (-offset % 4)


def _entry(name: str, mode: int, nlink: int, size: int, ino: int) -> bytes:
    encoded = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, len(encoded), 0)
    header = _MAGIC + b"".join(b"%08X" % value for value in fields)
    return header + encoded + padding(_HEADER_SIZE + len(encoded))


def file_header(path: str, size: int) -> bytes:
    """The archive up to the first byte of the file: its directory, then the file's header.
    ``path`` is ``dir/name`` (one level: the carried files live in :data:`CARRY_DIR`)."""
    directory, _, name = path.partition("/")
    if not directory or not name or "/" in name:
        raise ValueError(f"carried path must be dir/name: {path!r}")
    if not 0 <= size <= MAX_CARRIED_SIZE:
        raise ValueError(f"{path}: {size} bytes cannot be carried in a newc cpio (4 GiB at most)")
    return _entry(directory, _DIR_MODE, 2, 0, 1) + _entry(path, _FILE_MODE, 1, size, 2)


def trailer(size: int) -> bytes:
    """What follows the file's ``size`` bytes: their padding, then the archive's end."""
    return padding(size) + _entry(_TRAILER, 0, 1, 0, 0)


def carried_size(size: int) -> int:
    """The whole archive's length for a carried file of ``size`` bytes."""
    return len(file_header(ROOTFS_PATH, size)) + size + len(trailer(size))
