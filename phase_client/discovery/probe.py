"""Liveness probe: a HEAD of each candidate's manifest URL, concurrently, with a short timeout.

A provider that crashed without a goodbye is still in mDNS caches and in the DHT until its TTL;
the probe is what notices. The measured round-trip time feeds the ranking.

``Prober`` probes a candidate the moment a source reports it (the orchestrator hands it each
mDNS answer as it is accepted, and the DHT's records as soon as the lookup returns), so the
probe runs while the sources are still collecting instead of after them; ``results`` then waits
for what is still running. Every candidate that is ranked has been probed the same way.

The HEAD is ``http.client`` (the standard library: ~20 ms to import, where urllib3 took 40-80
ms on the boot's critical path) with the same header deadline as every other request
(``httpdeadline``): a provider dripping its headers cannot hold the probe past its timeout.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from ..hostport import host_from_url
from ..httpdeadline import HeaderDeadlineMixin
from .model import Candidate

log = logging.getLogger(__name__)
MAX_PARALLEL = 16


def _connection(url: str, timeout: float) -> tuple[Any, str]:
    """An unopened ``http.client`` connection with a header deadline, and the request target."""
    import http.client

    parts = urllib.parse.urlsplit(url)
    host = host_from_url(parts.hostname or "")
    if not host:
        raise ValueError("no host")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    attrs = {"header_deadline": timeout}
    base: Any
    if parts.scheme == "http":
        base = http.client.HTTPConnection
    elif parts.scheme == "https":
        base = http.client.HTTPSConnection
    else:
        raise ValueError(f"scheme {parts.scheme!r}")
    cls = type("DeadlineConnection", (HeaderDeadlineMixin, base), attrs)
    return cls(host, parts.port, timeout=timeout), target


def probe_one(candidate: Candidate, timeout: float) -> Candidate | None:
    """The candidate with its RTT in ms, or None when it does not answer 200 in time."""
    import http.client

    started = time.monotonic()
    try:
        conn, target = _connection(candidate.url, timeout)
    except ValueError as exc:  # also a bad port: urlsplit checks it lazily
        log.debug("probe %s: unusable URL (%s)", candidate.url, exc)
        return None
    try:
        conn.request("HEAD", target, headers={"Connection": "close"})
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException) as exc:  # TimeoutError: the header deadline
        log.debug("probe %s: unreachable (%s)", candidate.url, exc)
        return None
    finally:
        conn.close()
    rtt_ms = (time.monotonic() - started) * 1000
    if status != 200:
        log.debug("probe %s: HTTP %d", candidate.url, status)
        return None
    return candidate.with_rtt(round(rtt_ms, 2))


class Prober:
    """Probes each manifest URL once, as soon as it is submitted, at most ``MAX_PARALLEL`` at a
    time, in daemon threads (a probe still running never holds the process at exit).

    ``timeout``: the probe's timeout for one submitted now (connect, and the headers' deadline).
    """

    def __init__(self, timeout: Callable[[], float]) -> None:
        self._timeout = timeout
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(MAX_PARALLEL)
        self._probes: dict[str, Future[Candidate | None]] = {}

    def submit(self, candidate: Candidate) -> None:
        """Start probing ``candidate``'s URL now, unless it is probed already."""
        with self._lock:
            if candidate.url in self._probes:
                return
            future: Future[Candidate | None] = Future()
            self._probes[candidate.url] = future
        timeout = self._timeout()
        threading.Thread(
            target=self._run, args=(candidate, timeout, future), daemon=True, name="probe"
        ).start()

    def _run(self, candidate: Candidate, timeout: float, future: Future[Candidate | None]) -> None:
        with self._slots:
            try:
                future.set_result(probe_one(candidate, timeout))
            except Exception as exc:  # a bug in one probe must not hang the others' caller
                log.warning("probe %s failed: %s: %s", candidate.url, type(exc).__name__, exc)
                future.set_result(None)

    def results(self, candidates: Sequence[Candidate]) -> list[Candidate]:
        """The reachable ``candidates`` (their order kept), each with its RTT; unreachable ones
        are dropped. Probes what was not submitted yet, and waits for every probe to end (each
        ends within its timeout)."""
        for candidate in candidates:
            self.submit(candidate)
        alive: list[Candidate] = []
        for candidate in candidates:
            probed = self._probes[candidate.url].result()
            if probed is None:
                log.info(
                    "skipping %s (%s): no answer to the probe", candidate.url, candidate.source
                )
            else:  # the candidate as reported last, with the RTT its URL answered in
                alive.append(candidate.with_rtt(probed.rtt_ms))
        return alive


def probe_all(candidates: Sequence[Candidate], timeout: float) -> list[Candidate]:
    """The reachable candidates, each with its RTT; unreachable ones are dropped."""
    return Prober(lambda: timeout).results(candidates)
