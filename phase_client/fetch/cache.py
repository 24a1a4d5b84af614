"""Content-addressed cache of verified blobs: ``CACHE/sha256/<hex>``.

Only bytes whose sha256 matched a signed manifest go in; a blob is re-hashed every time it is
used (a cache on a USB stick or a shared disk may have been changed behind our back), and a blob
that no longer matches its name is deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from pathlib import Path

from ..fsutil import fsync_dir

log = logging.getLogger("phase-fetch")
BLOCK = 1024 * 1024


class BlobCache:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.root = Path(directory) / "sha256"

    def path_for(self, sha256_hex: str) -> Path:
        return self.root / sha256_hex

    def copy_out(self, sha256_hex: str, size: int, fd: int) -> bool:
        """Copy the blob into ``fd`` (a fresh part file) re-hashing it; False on miss/mismatch."""
        path = self.path_for(sha256_hex)
        try:
            handle = open(path, "rb")  # noqa: SIM115
        except OSError:
            return False
        hasher = hashlib.sha256()
        copied = 0
        with handle:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            while copied <= size:
                data = handle.read(BLOCK)
                if not data:
                    break
                hasher.update(data)
                os.write(fd, data)
                copied += len(data)
        if copied == size and hasher.hexdigest() == sha256_hex:
            return True
        log.warning("cache blob %s is corrupt; deleting it", path)
        with contextlib.suppress(OSError):
            path.unlink()
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        return False

    def store(self, sha256_hex: str, verified_file: str | os.PathLike[str]) -> None:
        """Add a verified file: hard link when possible, else an atomic copy. Best effort."""
        target = self.path_for(sha256_hex)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if target.exists():
                return
            tmp = self.root / f".{sha256_hex}.{os.getpid()}.tmp"
            try:
                try:
                    os.link(verified_file, tmp)
                except OSError:
                    with open(verified_file, "rb") as src, open(tmp, "wb") as dst:
                        while data := src.read(BLOCK):
                            dst.write(data)
                        dst.flush()
                        os.fsync(dst.fileno())
                os.replace(tmp, target)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            fsync_dir(self.root)
        except OSError as exc:
            log.warning("cannot add %s to the cache: %s", sha256_hex[:16], exc.strerror or exc)
