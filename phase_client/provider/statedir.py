"""The provider's state directory: identity key, sequence counters, hash cache.

Two providers never share one. Every file is written atomically (temp + fsync + rename).
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from pathlib import Path

from ..errors import KeyFormatError, UsageError
from ..fsutil import atomic_write
from ..keys import SigningKey, load_signing_key

IDENTITY_FILE = "identity.key"
SEQUENCES_FILE = "sequences.json"
HASH_CACHE_FILE = "hashes.json"
LOCK_FILE = "lock"


class StateDir:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._lock_fd: int | None = None
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create state dir {self.path}: {exc.strerror or exc}") from exc
        if not os.access(self.path, os.W_OK):
            raise UsageError(f"state dir {self.path} is not writable")
        self._sequences = self._load_sequences()

    def lock(self) -> None:
        """Hold the directory for this process: two providers never share one."""
        path = self.path / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise UsageError(f"state dir {self.path} is in use by another plasmd") from exc
        self._lock_fd = fd  # released when the process exits

    @property
    def hash_cache_path(self) -> Path:
        return self.path / HASH_CACHE_FILE

    def identity(self) -> SigningKey:
        """The provider's identity key, created once (0600) on first use, with its public key
        beside it (``identity.key.pub``, 0644, as ``plasmd keygen`` writes it): what clients
        are given when the identity key signs the manifests."""
        path = self.path / IDENTITY_FILE
        if path.exists():
            try:
                key = load_signing_key(path)
            except KeyFormatError as exc:
                raise UsageError(f"identity key: {exc}") from exc
        else:
            key = SigningKey.generate()
            atomic_write(path, key.file_bytes(), mode=0o600)
        public = self.path / (IDENTITY_FILE + ".pub")
        text = f"{key.public.keyid}\n".encode()
        try:
            if not public.exists() or public.read_bytes() != text:
                atomic_write(public, text, mode=0o644)
        except OSError as exc:
            raise UsageError(f"cannot write {public}: {exc.strerror or exc}") from exc
        return key

    def _load_sequences(self) -> dict[str, int]:
        path = self.path / SEQUENCES_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read {path}: {exc}") from exc
        if not isinstance(data, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in data.values()
        ):
            raise UsageError(f"{path} is not a map of combination -> sequence")
        return dict(data)

    def last_sequence(self, combination: str) -> int | None:
        with self._lock:
            return self._sequences.get(combination)

    def record_sequence(self, combination: str, sequence: int) -> None:
        """Remember the highest sequence signed for ``combination`` (persisted at once)."""
        with self._lock:
            if sequence <= self._sequences.get(combination, -1):
                return
            self._sequences[combination] = sequence
            data = json.dumps(self._sequences, sort_keys=True, indent=1).encode()
            atomic_write(self.path / SEQUENCES_FILE, data, mode=0o600)
