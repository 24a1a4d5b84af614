"""Rollback-protection state: what was accepted before, per channel/arch, in ``--state-dir``.

File ``DIR/accepted.json``: {"format": 1, "accepted": {"stable/x86_64": {"sequence": 42,
"created_at": "2025-11-26T12:00:00Z", "digest": "<sha256 of signed bytes>", "version": "..."}}}.
Updates are read-modify-write under an exclusive lock and written atomically.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import RollbackError, StateError
from .fsutil import atomic_write
from .timefmt import format_utc, parse_utc
from .trust import AcceptedRecord, VerifiedManifest

STATE_FILE = "accepted.json"
LOCK_FILE = ".lock"


class StateStore:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    @property
    def path(self) -> Path:
        return self.directory / STATE_FILE

    def _read(self) -> dict[str, dict]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise StateError(f"cannot read state {self.path}: {exc.strerror or exc}") from exc
        try:
            document = json.loads(data)
            accepted = document["accepted"]
            if document.get("format") != 1 or not isinstance(accepted, dict):
                raise ValueError
            for entry in accepted.values():
                int(entry["sequence"]), parse_utc(entry["created_at"]), str(entry["digest"])
        except (ValueError, KeyError, TypeError) as exc:
            raise StateError(f"state file {self.path} is corrupt; refusing to guess") from exc
        return accepted

    def records(self) -> dict[str, AcceptedRecord]:
        return {
            combo: AcceptedRecord(int(e["sequence"]), parse_utc(e["created_at"]), e["digest"])
            for combo, e in self._read().items()
        }

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            handle = open(self.directory / LOCK_FILE, "a+b")  # noqa: SIM115
        except OSError as exc:
            raise StateError(
                f"cannot use state dir {self.directory}: {exc.strerror or exc}"
            ) from exc
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def record(self, verified: VerifiedManifest) -> None:
        """Remember ``verified`` as accepted; re-checks rollback under the lock."""
        manifest = verified.manifest
        combo = manifest.combination
        with self._locked():
            accepted = self._read()
            old = accepted.get(combo)
            if old is not None and (
                manifest.sequence < int(old["sequence"])
                or (manifest.sequence == int(old["sequence"]) and verified.digest != old["digest"])
            ):
                raise RollbackError(f"a newer manifest for {combo} was accepted meanwhile")
            accepted[combo] = {
                "sequence": manifest.sequence,
                "created_at": format_utc(manifest.created_at),
                "digest": verified.digest,
                "version": manifest.version,
            }
            body = json.dumps({"format": 1, "accepted": accepted}, indent=2, sort_keys=True)
            try:
                atomic_write(self.path, body.encode() + b"\n", mode=0o644)
            except OSError as exc:
                raise StateError(f"cannot write state {self.path}: {exc.strerror or exc}") from exc
