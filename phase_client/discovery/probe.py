"""Liveness probe: a HEAD of each candidate's manifest URL, concurrently, with a short timeout.

A provider that crashed without a goodbye is still in mDNS caches and in the DHT until its TTL;
the probe is what notices. The measured round-trip time feeds the ranking.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from ..httpdeadline import pool_classes
from .model import Candidate

log = logging.getLogger(__name__)
MAX_PARALLEL = 16


def probe_one(candidate: Candidate, timeout: float) -> Candidate | None:
    """The candidate with its RTT in ms, or None when it does not answer 200 in time."""
    import urllib3

    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=timeout, read=timeout), retries=False, num_pools=1
    )
    # A provider dripping its headers must not hold the probe past ``timeout``.
    http.pool_classes_by_scheme = pool_classes(urllib3, timeout)
    started = time.monotonic()
    try:
        response = http.request("HEAD", candidate.url, redirect=False)
    except urllib3.exceptions.HTTPError as exc:
        log.debug("probe %s: unreachable (%s)", candidate.url, exc)
        return None
    finally:
        http.clear()
    rtt_ms = (time.monotonic() - started) * 1000
    if response.status != 200:
        log.debug("probe %s: HTTP %d", candidate.url, response.status)
        return None
    return candidate.with_rtt(round(rtt_ms, 2))


def probe_all(candidates: Sequence[Candidate], timeout: float) -> list[Candidate]:
    """The reachable candidates, each with its RTT; unreachable ones are dropped."""
    if not candidates:
        return []
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(candidates))) as pool:
        results = list(pool.map(lambda c: probe_one(c, timeout), candidates))
    alive = [c for c in results if c is not None]
    for candidate in candidates:
        if not any(a.url == candidate.url for a in alive):
            log.info("skipping %s (%s): no answer to the probe", candidate.url, candidate.source)
    return alive
