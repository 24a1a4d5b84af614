"""Discovery flow of the boot: mDNS on the LAN first, then the DHT; probe; rank.

In ``auto`` mode both sources start at once (the DHT lookup costs round trips, so it should not
wait for the mDNS timeout). A reachable LAN provider wins: a DHT answer is used only once mDNS
has come back empty, or the LAN has clearly answered nothing (no answer some 300 ms after the
question, nothing being resolved: see ``mdns.browse`` for why that is safe), or at the latest
once ``LAN_GRACE`` has passed with no LAN answer (waiting the whole timeout would only delay
WAN boots).
With ``want_all`` both are listed, LAN first. Sources run in daemon threads so that returning
early never waits for a slower source to finish.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from ..errors import PhaseError
from ..hostport import Contact, split_contacts
from .model import Candidate, Query
from .probe import probe_all
from .rank import deduplicate, rank

log = logging.getLogger(__name__)
# Part of the timeout kept for probing what the sources found.
PROBE_SHARE = 0.25
PROBE_MAX = 2.0
# The longest a DHT answer waits for a LAN answer that may still come (a LAN that answered
# something, still being resolved); a LAN that answered nothing ends the wait sooner.
LAN_GRACE = 1.0
POLL = 0.02


class _Background:
    """A source lookup running in a daemon thread; ``result`` waits until a deadline."""

    def __init__(self, name: str, lookup: Callable[[], list[Candidate]]) -> None:
        self.name = name
        self._found: list[Candidate] = []
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(lookup,), daemon=True, name=f"discover-{name}"
        )
        self._thread.start()

    def _run(self, lookup: Callable[[], list[Candidate]]) -> None:
        try:
            self._found = lookup()
        except PhaseError as exc:
            log.info("%s discovery: %s", self.name, exc)
        except Exception as exc:  # a source failing must not stop the other one
            log.warning("%s discovery failed: %s: %s", self.name, type(exc).__name__, exc)
        finally:
            self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def result(self, deadline: float) -> list[Candidate]:
        self._done.wait(max(0.0, deadline - time.monotonic()))
        return list(self._found) if self._done.is_set() else []


def _mdns_lookup(
    query: Query,
    interfaces: Sequence[str] | None = None,
    quiet: threading.Event | None = None,
) -> list[Candidate]:
    from .mdns import discover_mdns

    return discover_mdns(query, interfaces, quiet)


def _dht_lookup(query: Query, bootstrap: Sequence[tuple[str, int]]) -> list[Candidate]:
    from .dht import discover_dht

    return discover_dht(query, list(bootstrap))


def _libp2p_lookup(query: Query, bootstrap: Sequence[str]) -> list[Candidate]:
    from .libp2p import discover_libp2p

    return discover_libp2p(query, list(bootstrap))


def _networks() -> list[str]:
    """This machine's IPv4 subnets and IPv6 prefixes: a DHT provider on them is on the LAN."""
    from ..mdns.interfaces import local_networks

    try:
        return local_networks()
    except OSError as exc:
        log.debug("cannot read this machine's networks: %s", exc)
        return []


def find_providers(
    query: Query,
    *,
    source: str = "auto",
    bootstrap: Sequence[Contact] = (),
    probe: bool = True,
    rng: random.Random | None = None,
    interfaces: Sequence[str] | None = None,
    mdns_lookup: Callable[..., list[Candidate]] = _mdns_lookup,
    dht_lookup: Callable[[Query, Sequence[tuple[str, int]]], list[Candidate]] = _dht_lookup,
    libp2p_lookup: Callable[[Query, Sequence[str]], list[Candidate]] = _libp2p_lookup,
    networks: Sequence[str] | None = None,
) -> list[Candidate]:
    """Ranked, reachable candidates (best first); empty when none was found in time.

    ``networks``: this machine's networks for the ranking (default: read from its interfaces).
    ``mdns_lookup(query, interfaces, quiet)`` sets the ``threading.Event`` ``quiet`` once the
    LAN has clearly answered nothing.
    ``bootstrap``: ``(host, port)`` contacts of the private DHT and libp2p multiaddr texts.
    """
    contacts, multiaddrs = split_contacts(bootstrap)
    started = time.monotonic()
    deadline = started + query.timeout
    probe_budget = min(PROBE_MAX, query.timeout * PROBE_SHARE) if probe else 0.0
    search = replace(query, timeout=max(0.1, query.timeout - probe_budget))

    mdns = dht = p2p = None
    lan_quiet = threading.Event()
    if source in ("auto", "mdns"):
        mdns = _Background("mdns", lambda: mdns_lookup(search, interfaces, lan_quiet))
    # With probing, collect every record: the first one found may be a dead provider's.
    dht_query = replace(search, want_all=True) if probe else search
    if source == "dht" or (source == "auto" and contacts):
        dht = _Background("dht", lambda: dht_lookup(dht_query, contacts))
    if source == "libp2p" or (source == "auto" and multiaddrs):
        p2p = _Background("libp2p", lambda: libp2p_lookup(dht_query, multiaddrs))
    lookups = [lookup for lookup in (mdns, dht, p2p) if lookup is not None]

    def finish(found: list[Candidate]) -> list[Candidate]:
        found = deduplicate(found)
        if probe and found:
            remaining = deadline - time.monotonic()
            found = probe_all(found, timeout=max(0.3, min(PROBE_MAX, remaining)))
        return rank(found, rng, _networks() if networks is None else networks)

    search_deadline = started + search.timeout + 0.5
    if query.want_all:
        return finish([c for lookup in lookups for c in lookup.result(search_deadline)])

    lan_grace = started + min(LAN_GRACE, search.timeout)
    pending = list(lookups)
    while pending:
        now = time.monotonic()
        for lookup in list(pending):
            lan_pending = mdns in pending and lookup is not mdns and not lan_quiet.is_set()
            if not lookup.done or (lan_pending and now < lan_grace):
                continue
            pending.remove(lookup)
            chosen = finish(lookup.result(now))
            if chosen:
                log.info(
                    "found %d provider(s) of %s/%s via %s in %.0f ms",
                    len(chosen),
                    query.channel,
                    query.arch,
                    lookup.name,
                    (time.monotonic() - started) * 1000,
                )
                return chosen
        if time.monotonic() >= search_deadline:
            break
        time.sleep(POLL)
    return []
