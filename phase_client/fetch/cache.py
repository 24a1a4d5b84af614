"""Content-addressed cache of verified blobs: ``CACHE/sha256/<hex>``.

Only bytes whose sha256 matched a signed manifest go in; a blob is re-hashed every time it is
used (a cache on a USB stick or a shared disk may have been changed behind our back), and a blob
that no longer matches its name is deleted. The cache is a shared place: a blob is read only if
it is a regular file (a planted FIFO would block the read, a symlink would redirect it), and new
entries are created under fresh names that nothing can have planted (O_EXCL|O_NOFOLLOW).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat
from pathlib import Path

from ..fsutil import create_exclusive, fsync_dir, hash_copy, open_regular

log = logging.getLogger(__name__)


class BlobCache:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.root = Path(directory) / "sha256"

    def path_for(self, sha256_hex: str) -> Path:
        return self.root / sha256_hex

    def copy_out(self, sha256_hex: str, size: int, fd: int) -> bool:
        """Copy the blob into ``fd`` (a fresh part file) re-hashing it; False on miss/mismatch."""
        path = self.path_for(sha256_hex)
        try:
            src = open_regular(path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.warning("cache blob %s: %s; deleting it", path, exc.strerror or exc)
            self._discard(path)
            return False
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            digest, copied = hash_copy(src, fd, size)
        finally:
            os.close(src)
        if copied == size and digest == sha256_hex:
            return True
        log.warning("cache blob %s is corrupt; deleting it", path)
        self._discard(path)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        return False

    def store(self, sha256_hex: str, size: int, verified_file: str | os.PathLike[str]) -> None:
        """Add a verified file: hard link when possible, else a copy that is hashed again as it
        is written (what goes in must still be the verified bytes). Best effort."""
        target = self.path_for(sha256_hex)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISREG(os.lstat(target).st_mode):
                    return
                # Anything else under a blob's name (symlink, FIFO) is replaced below.
            tmp = self.root / f".{sha256_hex}.{secrets.token_hex(8)}.tmp"
            try:
                try:
                    # link() never follows a symlink at its destination and fails if the name
                    # exists; the source is our own part file, not followed if it were a link.
                    os.link(verified_file, tmp, follow_symlinks=False)
                except OSError:
                    self._copy_in(sha256_hex, size, verified_file, tmp)
                os.replace(tmp, target)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            fsync_dir(self.root)
        except OSError as exc:
            log.warning("cannot add %s to the cache: %s", sha256_hex[:16], exc.strerror or exc)

    def _copy_in(
        self, sha256_hex: str, size: int, verified_file: str | os.PathLike[str], tmp: Path
    ) -> None:
        src = open_regular(verified_file)
        try:
            dst = create_exclusive(tmp, 0o644)
            try:
                digest, copied = hash_copy(src, dst, size)
                os.fsync(dst)
            finally:
                os.close(dst)
        finally:
            os.close(src)
        if copied != size or digest != sha256_hex:
            raise OSError(f"{verified_file} changed since it was verified")

    @staticmethod
    def _discard(path: Path) -> None:
        with contextlib.suppress(OSError):
            path.unlink()
