"""SHA-256 of artifact files, cached by (path, size, mtime, inode) so nothing is hashed twice.

The cache lives in the state directory as JSON and is saved atomically after a scan that added
entries; a restart therefore re-hashes nothing that did not change.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

from ..fsutil import atomic_write, sha256_file

log = logging.getLogger(__name__)


def file_key(stat: os.stat_result) -> list[int]:
    return [stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_dev]


class HashCache:
    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[list[int], str]] = {}
        self._dirty = False
        self.hashed = 0  # files actually read (for tests and the debug log)
        if self.path is not None:
            self._load()

    def _load(self) -> None:
        assert self.path is not None
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            for name, (key, digest) in raw.items():
                if isinstance(digest, str) and isinstance(key, list):
                    self._entries[name] = (key, digest)
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError) as exc:
            log.warning("Ignoring unreadable hash cache %s: %s", self.path, exc)
            self._entries = {}

    def sha256(self, path: str | os.PathLike[str]) -> tuple[str, int]:
        """(hex digest, size), from the cache when the file's identity is unchanged."""
        name = os.path.abspath(path)
        before = os.stat(name)
        with self._lock:
            cached = self._entries.get(name)
        if cached is not None and cached[0] == file_key(before):
            return cached[1], before.st_size
        digest, size = sha256_file(name)
        after = os.stat(name)
        self.hashed += 1
        # A file rewritten while we read it is hashed again next time rather than cached wrong.
        if file_key(after) == file_key(before) and size == before.st_size:
            with self._lock:
                self._entries[name] = (file_key(after), digest)
                self._dirty = True
        return digest, size

    def prune(self, keep: set[str]) -> None:
        with self._lock:
            for name in set(self._entries) - keep:
                del self._entries[name]
                self._dirty = True

    def save(self) -> None:
        with self._lock:
            if not self._dirty or self.path is None:
                return
            data = json.dumps(self._entries, sort_keys=True).encode()
            self._dirty = False
        try:
            atomic_write(self.path, data, mode=0o600)
        except OSError as exc:
            log.warning("Cannot save hash cache %s: %s", self.path, exc)
