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
from typing import Any

from .errors import RollbackError, StateError
from .fsutil import atomic_write, read_regular_file
from .timefmt import format_utc, parse_utc
from .trust import AcceptedRecord, VerifiedManifest, check_rollback

STATE_FILE = "accepted.json"
LOCK_FILE = ".lock"
MAX_STATE_BYTES = 1 << 20  # a few hundred bytes per channel/arch; anything larger is not ours


def _record(entry: dict[str, Any]) -> AcceptedRecord:
    floor = entry.get("floor")
    return AcceptedRecord(
        int(entry["sequence"]),
        parse_utc(entry["created_at"]),
        str(entry["digest"]),
        None if floor is None else parse_utc(floor),
    )


class StateStore:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    @property
    def path(self) -> Path:
        return self.directory / STATE_FILE

    def _read(self) -> tuple[dict[str, dict[str, Any]], dict[str, AcceptedRecord]]:
        """(the raw entries, the same as records); StateError when anything is off."""
        try:  # regular files only: a FIFO planted on a shared state disk must not hang the boot
            data = read_regular_file(self.path, MAX_STATE_BYTES + 1)
        except FileNotFoundError:
            return {}, {}
        except OSError as exc:
            raise StateError(f"cannot read state {self.path}: {exc.strerror or exc}") from exc
        try:
            if len(data) > MAX_STATE_BYTES:
                raise ValueError("too large")
            document = json.loads(data)
            accepted = document["accepted"]
            if document.get("format") != 1 or not isinstance(accepted, dict):
                raise ValueError
            records = {combo: _record(entry) for combo, entry in accepted.items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StateError(f"state file {self.path} is corrupt; refusing to guess") from exc
        return accepted, records

    def records(self) -> dict[str, AcceptedRecord]:
        return self._read()[1]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            # Never through a link planted in a shared state directory.
            flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            handle = os.fdopen(os.open(self.directory / LOCK_FILE, flags, 0o644), "r+b")
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
            accepted, records = self._read()
            try:  # the same rollback rule as the verification, now under the lock
                check_rollback(manifest, verified.digest, records.get(combo))
            except RollbackError as exc:
                raise RollbackError(f"a newer manifest for {combo} was accepted meanwhile") from exc
            accepted[combo] = {
                "sequence": manifest.sequence,
                "created_at": format_utc(manifest.created_at),
                "floor": format_utc(verified.clock_floor),
                "digest": verified.digest,
                "version": manifest.version,
            }
            body = json.dumps({"format": 1, "accepted": accepted}, indent=2, sort_keys=True)
            try:
                atomic_write(self.path, body.encode() + b"\n", mode=0o644)
            except OSError as exc:
                raise StateError(f"cannot write state {self.path}: {exc.strerror or exc}") from exc
