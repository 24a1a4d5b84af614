"""Ranking of provider candidates. Pure: the random source is passed in.

Order: LAN (mDNS) before WAN (DHT), then lower round-trip time, then newer image
version; candidates equal on all three are shuffled, so that many clients booting at once spread
over many providers.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable

from .model import Candidate

SOURCE_PREFERENCE = {"mdns": 0, "dht": 1}
# RTTs closer than this are "equal": ordering on noise would defeat the random spread.
RTT_BUCKET_MS = 5.0

_VERSION_PART = re.compile(r"(\d+)|(\D+)")


def version_key(version: str | None) -> tuple[tuple[int, int | str], ...]:
    """Natural-order key: ``2025.11.9`` < ``2025.11.26``; numbers sort after words."""
    if not version:
        return ()
    return tuple(
        (1, int(number)) if number else (0, text) for number, text in _VERSION_PART.findall(version)
    )


def deduplicate(candidates: Iterable[Candidate]) -> list[Candidate]:
    """One entry per manifest URL; the LAN (mDNS) report of a URL wins over the DHT's."""
    best: dict[str, Candidate] = {}
    for candidate in candidates:
        known = best.get(candidate.url)
        if known is None or SOURCE_PREFERENCE.get(candidate.source, 9) < SOURCE_PREFERENCE.get(
            known.source, 9
        ):
            best[candidate.url] = candidate
    return list(best.values())


def rank(candidates: Iterable[Candidate], rng: random.Random | None = None) -> list[Candidate]:
    """Best first. Unprobed candidates (no RTT) sort after the probed ones of their source."""
    ordered = list(candidates)
    (rng or random.Random()).shuffle(ordered)
    # Two stable sorts: the later, primary key keeps the earlier order among its equals, and
    # both keep the shuffle's order among candidates equal on every key.
    ordered.sort(key=lambda c: version_key(c.version), reverse=True)
    ordered.sort(key=lambda c: (SOURCE_PREFERENCE.get(c.source, 9), rtt_bucket(c.rtt_ms)))
    return ordered


def rtt_bucket(rtt_ms: float | None) -> int:
    return int(rtt_ms // RTT_BUCKET_MS) if rtt_ms is not None else 1 << 30
