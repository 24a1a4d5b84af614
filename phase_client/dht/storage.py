"""Kademlia storage that holds verified provider records: many per key, bounded in memory.

The stock ``ForgetfulStorage`` keeps one opaque value per key and lets the last writer win. This
one stores, per key digest, the newest valid record of each provider (newest ``last_updated``
wins, ``ProviderRecord.newer_than``), drops expired records, and caps both the records per key
and the records in total, so neither a flood of records nor junk can grow a node's memory without
bound. Who keeps a slot when a cap is reached is decided by ``admission``: shares by source
subnet, tenure within one, the node's own records always kept.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from kademlia.storage import IStorage

from . import admission, records
from .admission import Entry, Policy
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
        policy: Policy | None = None,
    ) -> None:
        self.max_per_key = max_per_key
        self.max_total = max_total
        self.clock = clock
        self.policy = policy or Policy()
        self.data: dict[bytes, dict[str, Entry]] = {}
        # Node-wide admission indexes over unpinned entries, kept in step by _add/_remove, so a
        # full node finds the biggest source without rescanning everything.
        self.label_counts: Counter[str] = Counter()
        self.label_members: dict[str, dict[int, Entry]] = {}
        self.size = 0
        self.rejected = 0  # invalid records
        self.refused = 0  # valid records that found no slot
        self.evicted = 0  # held records displaced by a newcomer
        self._seq = 0
        self._culled_at: int | None = None

    # --- the record-aware interface -------------------------------------------------------
    def put(
        self, digest: bytes, raw: Any, sender: str | None = None, local: bool = False
    ) -> MergeOutcome | None:
        """Validate and merge one wire record; None if it is invalid (and dropped).

        ``sender``: the IP address the STORE came from (None if unknown); ``local``: the node's
        own record, which is always kept.
        """
        now = self.clock()
        record = records.try_parse(raw, now, expected_digest=digest)
        if record is None:
            self.rejected += 1
            return None
        self._drop_expired(digest, now)
        held = self.data.get(digest, {})
        labels = frozenset() if local else admission.labels_for(record, sender)
        current = held.get(record.peer_id)
        if current is not None:
            # Sent from the subnet its URL points into (one label for both): the provider itself.
            home = sender is not None and len(labels) == 1
            return self._update(digest, current, record, labels, now, local, home)
        self._seq += 1
        entry = Entry(record, labels, self._seq, now, pinned=local, stored_mono=time.monotonic())
        if len(held) >= self.max_per_key:
            counts = Counter(label for e in held.values() if not e.pinned for label in e.labels)
            victim = admission.choose_victim(
                entry,
                counts,
                lambda label: (e for e in held.values() if label in e.labels and not e.pinned),
                now,
                self.policy,
            )
            if victim is None:
                return self._refuse()
            self._evict(digest, victim)
        elif self.size >= self.max_total:
            if self._culled_at != now:  # a flood against a full node: once a second is enough
                self.cull()
            if self.size >= self.max_total:
                victim = admission.choose_victim(
                    entry,
                    self.label_counts,
                    lambda label: self.label_members.get(label, {}).values(),
                    now,
                    self.policy,
                )
                if victim is None:
                    return self._refuse()
                self._evict(self._digest_of(victim), victim)
        self._add(digest, entry)
        return MergeOutcome.ADDED

    def _update(
        self,
        digest: bytes,
        entry: Entry,
        record: ProviderRecord,
        labels: frozenset[str],
        now: int,
        local: bool,
        home: bool,
    ) -> MergeOutcome:
        """A record of a peer already held: newest wins; the entry keeps its tenure."""
        newer = record.newer_than(entry.record)
        if local and not entry.pinned:
            self._relabel(digest, entry, frozenset(), pinned=True)
        elif not entry.pinned and labels != entry.labels and (newer or home):
            # A newer version is charged to whoever sent it. A copy of the held version changes
            # nothing, unless it comes from the record's own network (sender subnet = URL
            # subnet), which takes the charge back from a relay that forwarded it first.
            self._relabel(digest, entry, labels, pinned=False)
        if not newer:
            return MergeOutcome.STALE
        entry.record = record
        entry.refreshed_at = now
        entry.stored_mono = time.monotonic()
        return MergeOutcome.REPLACED

    def _relabel(self, digest: bytes, entry: Entry, labels: frozenset[str], pinned: bool) -> None:
        self._remove(digest, entry)
        entry.labels = labels
        entry.pinned = pinned
        self._add(digest, entry)

    def _refuse(self) -> MergeOutcome:
        self.refused += 1
        return MergeOutcome.FULL

    def _add(self, digest: bytes, entry: Entry) -> None:
        self.data.setdefault(digest, {})[entry.record.peer_id] = entry
        self.size += 1
        if entry.pinned:
            return
        for label in entry.labels:
            self.label_counts[label] += 1
            self.label_members.setdefault(label, {})[id(entry)] = entry

    def _remove(self, digest: bytes, entry: Entry) -> None:
        held = self.data[digest]
        del held[entry.record.peer_id]
        if not held:
            del self.data[digest]
        self.size -= 1
        if entry.pinned:
            return
        for label in entry.labels:
            self.label_counts[label] -= 1
            if not self.label_counts[label]:
                del self.label_counts[label]
            members = self.label_members[label]
            del members[id(entry)]
            if not members:
                del self.label_members[label]

    def _evict(self, digest: bytes, entry: Entry) -> None:
        self._remove(digest, entry)
        self.evicted += 1

    def _digest_of(self, entry: Entry) -> bytes:
        return records.key_digest(entry.record.key)

    def _drop_expired(self, digest: bytes, now: int) -> None:
        for entry in [e for e in self.data.get(digest, {}).values() if e.record.expires_at <= now]:
            self._remove(digest, entry)

    def records(self, digest: bytes) -> list[ProviderRecord]:
        """The unexpired records under ``digest``, newest first."""
        now = self.clock()
        self._drop_expired(digest, now)
        held = self.data.get(digest)
        if not held:
            return []
        return records.union((e.record for e in held.values()), now)

    def total(self) -> int:
        return self.size

    def cull(self) -> None:
        now = self._culled_at = self.clock()
        for digest in list(self.data):
            self._drop_expired(digest, now)

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
            (digest, e.record.raw)
            for digest, held in self.data.items()
            for e in held.values()
            if e.stored_mono <= limit
        ]

    def best_first(self) -> list[tuple[bytes, bytes]]:
        """(digest, record) for every record, those admission would keep longest first."""
        self.cull()
        now = self.clock()
        ranked = sorted(
            ((d, e) for d, held in self.data.items() for e in held.values()),
            key=lambda item: admission.keep_order(item[1], now, self.policy),
            reverse=True,
        )
        return [(d, e.record.raw) for d, e in ranked]

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        """(digest, record) for every record: one STORE each when handing records over."""
        self.cull()
        return iter([(d, e.record.raw) for d, held in self.data.items() for e in held.values()])
