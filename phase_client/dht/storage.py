"""Kademlia storage that holds verified provider records: many per key, bounded in memory.

The stock ``ForgetfulStorage`` keeps one opaque value per key and lets the last writer win. This
one stores, per key digest, the newest valid record of each provider (``records.merge``), drops
expired records, and caps both the records per key and the records in total, so neither a flood of
records nor junk can grow a node's memory without bound.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from kademlia.storage import IStorage

from . import records
from .records import MergeOutcome, ProviderRecord

log = logging.getLogger(__name__)

DEFAULT_MAX_PER_KEY = 64
DEFAULT_MAX_TOTAL = 4096


def wall_clock() -> int:
    return int(time.time())


class RecordStorage(IStorage):
    def __init__(
        self,
        max_per_key: int = DEFAULT_MAX_PER_KEY,
        max_total: int = DEFAULT_MAX_TOTAL,
        clock: Callable[[], int] = wall_clock,
    ) -> None:
        self.max_per_key = max_per_key
        self.max_total = max_total
        self.clock = clock
        self.data: dict[bytes, dict[str, ProviderRecord]] = {}
        self.stored_at: dict[tuple[bytes, str], float] = {}  # monotonic, for iter_older_than
        self.rejected = 0

    # --- the record-aware interface -------------------------------------------------------
    def put(self, digest: bytes, raw: Any) -> MergeOutcome | None:
        """Validate and merge one wire record; None if it is invalid (and dropped)."""
        now = self.clock()
        record = records.try_parse(raw, now, expected_digest=digest)
        if record is None:
            self.rejected += 1
            return None
        held = self.data.get(digest)
        if (held is None or record.peer_id not in held) and self.total() >= self.max_total:
            self.cull()
            held = self.data.get(digest)
            if self.total() >= self.max_total:
                self.rejected += 1
                return MergeOutcome.FULL
        if held is None:
            held = self.data[digest] = {}
        outcome = records.merge(held, record, now, self.max_per_key)
        if outcome in (MergeOutcome.ADDED, MergeOutcome.REPLACED):
            self.stored_at[(digest, record.peer_id)] = time.monotonic()
        if not held:
            del self.data[digest]
        return outcome

    def records(self, digest: bytes) -> list[ProviderRecord]:
        """The unexpired records under ``digest``, newest first."""
        held = self.data.get(digest)
        if not held:
            return []
        records.drop_expired(held, self.clock())
        if not held:
            del self.data[digest]
            return []
        return records.union(held.values(), self.clock())

    def total(self) -> int:
        return sum(len(held) for held in self.data.values())

    def cull(self) -> None:
        now = self.clock()
        for digest in list(self.data):
            records.drop_expired(self.data[digest], now)
            if not self.data[digest]:
                del self.data[digest]
        live = {(d, p) for d, held in self.data.items() for p in held}
        for gone in set(self.stored_at) - live:
            del self.stored_at[gone]

    # --- kademlia's IStorage: values are single wire records ------------------------------
    def __setitem__(self, key: bytes, value: Any) -> None:
        self.put(key, value)

    def __getitem__(self, key: bytes) -> list[bytes]:
        found = self.records(key)
        if not found:
            raise KeyError(key)
        return [r.raw for r in found]

    def get(self, key: bytes, default: Any = None) -> Any:
        found = self.records(key)
        return [r.raw for r in found] if found else default

    def iter_older_than(self, seconds_old: float) -> list[tuple[bytes, bytes]]:
        self.cull()
        limit = time.monotonic() - seconds_old
        return [
            (digest, rec.raw)
            for digest, held in self.data.items()
            for peer, rec in held.items()
            if self.stored_at.get((digest, peer), 0.0) <= limit
        ]

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        """(digest, record) for every record: one STORE each when handing records over."""
        self.cull()
        return iter([(d, rec.raw) for d, held in self.data.items() for rec in held.values()])
