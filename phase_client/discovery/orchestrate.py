"""Discovery flow of the boot: mDNS on the LAN first, then the DHT; probe; rank.

In ``auto`` mode the DHT lookups start as soon as the mDNS question's immediate answers are in
and there are none (``FIRST_ANSWERS``, 25 ms after the question: see ``mdns.browse``), or once
mDNS has given nothing usable; they do not wait for the LAN to be judged quiet, so on a LAN
with no provider their answer is ready when it is. On a LAN that answers at once they never
start: their imports and sockets would only compete with the LAN answer's handling for the
interpreter. A reachable LAN provider wins: a DHT answer is used only once mDNS has come back
empty, or the LAN has clearly answered nothing (no answer 150 ms after the question, nothing
being resolved: see ``mdns.browse`` for why that is safe), or at the latest once ``LAN_GRACE``
has passed with no LAN answer (waiting the whole timeout would only delay WAN boots).
With ``want_all`` every source starts at once and all are listed, LAN first. Sources run in
daemon threads so that returning early never waits for a slower source to finish.

Each candidate's liveness probe starts as soon as its source reports it (an mDNS answer when it
is accepted, DHT records when the lookup returns), so it overlaps the mDNS grace window and the
wait for a quiet LAN; the answer is ranked once every candidate of it has been probed.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence

from ..errors import PhaseError
from ..hostport import Contact, split_contacts
from .model import Candidate, LanWatch, Query
from .probe import Prober
from .rank import deduplicate, rank

log = logging.getLogger(__name__)
# Part of the timeout kept for probing what the sources found.
PROBE_SHARE = 0.25
PROBE_MAX = 2.0
# The longest a DHT answer waits for a LAN answer that may still come (a LAN that answered
# something, still being resolved); a LAN that answered nothing ends the wait sooner.
LAN_GRACE = 1.0
POLL = 0.02


class _Wake(threading.Event):
    """An event that also wakes the orchestrator's loop when it is set."""

    def __init__(self, wake: threading.Event) -> None:
        super().__init__()
        self._wake = wake

    def set(self) -> None:
        super().set()
        self._wake.set()


class _Background:
    """A source lookup running in a daemon thread; ``result`` waits until a deadline.

    With a ``gate``, the lookup starts only once the gate is set (nothing is looked up if it is
    not set by ``gate_deadline``). ``wake`` is set when the lookup is done.
    """

    def __init__(
        self,
        name: str,
        lookup: Callable[[], list[Candidate]],
        wake: threading.Event,
        gate: threading.Event | None = None,
        gate_deadline: float = 0.0,
    ) -> None:
        self.name = name
        self._found: list[Candidate] = []
        self._done = threading.Event()
        self._wake = wake
        self._thread = threading.Thread(
            target=self._run,
            args=(lookup, gate, gate_deadline),
            daemon=True,
            name=f"discover-{name}",
        )
        self._thread.start()

    def _run(
        self, lookup: Callable[[], list[Candidate]], gate: threading.Event | None, until: float
    ) -> None:
        try:
            if gate is not None and not gate.wait(max(0.0, until - time.monotonic())):
                return
            self._found = lookup()
        except PhaseError as exc:
            log.info("%s discovery: %s", self.name, exc)
        except Exception as exc:  # a source failing must not stop the other one
            # One line; with -v also where it was raised (an unexpected error is a bug to find).
            log.warning(
                "%s discovery failed: %s: %s",
                self.name,
                type(exc).__name__,
                exc,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
        finally:
            self._done.set()
            self._wake.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def result(self, deadline: float) -> list[Candidate]:
        self._done.wait(max(0.0, deadline - time.monotonic()))
        return list(self._found) if self._done.is_set() else []


def _mdns_lookup(
    query: Query, interfaces: Sequence[str] | None = None, lan: LanWatch | None = None
) -> list[Candidate]:
    from .mdns import discover_mdns  # zeroconf: tens of ms, far more on a loaded machine

    if lan is None:
        return discover_mdns(query, interfaces)
    if lan.until is not None:  # the import above must not push the end past the caller's wait
        query = query._replace(timeout=max(0.05, lan.until - time.monotonic()))
    return discover_mdns(
        query, interfaces, lan.quiet, lan.unanswered, lan.found, until_quiet=lan.end_when_quiet
    )


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
    until_quiet: bool = False,
) -> list[Candidate]:
    """Ranked, reachable candidates (best first); empty when none was found in time.

    ``until_quiet``: mDNS ends as soon as the LAN has clearly answered nothing instead of at the
    timeout (one look at the link; stage 1 takes it before its DHCP lease, docs/boot.md).

    ``networks``: this machine's networks for the ranking (default: read from its interfaces).
    ``mdns_lookup(query, interfaces, lan)`` reports to the ``LanWatch`` ``lan`` while it runs:
    ``lan.unanswered`` once the question's immediate answers are in and there are none,
    ``lan.quiet`` once the LAN has clearly answered nothing, ``lan.found(c)`` for each candidate.
    ``bootstrap``: ``(host, port)`` contacts of the private DHT and libp2p multiaddr texts.
    """
    contacts, multiaddrs = split_contacts(bootstrap)
    started = time.monotonic()
    deadline = started + query.timeout
    probe_budget = min(PROBE_MAX, query.timeout * PROBE_SHARE) if probe else 0.0
    search = query._replace(timeout=max(0.1, query.timeout - probe_budget))

    search_deadline = started + search.timeout + 0.5
    prober = Prober(lambda: max(0.3, min(PROBE_MAX, deadline - time.monotonic())))

    def probed_early(lookup: Callable[[], list[Candidate]]) -> Callable[[], list[Candidate]]:
        def run() -> list[Candidate]:
            found = lookup()
            for candidate in found:
                prober.submit(candidate)
            return found

        return run if probe else lookup

    wake = threading.Event()
    lan = LanWatch(
        unanswered=_Wake(wake),
        quiet=_Wake(wake),
        found=prober.submit if probe else None,
        until=started + search.timeout,
        end_when_quiet=until_quiet,
    )
    mdns = dht = p2p = None
    if source in ("auto", "mdns"):
        mdns = _Background("mdns", lambda: mdns_lookup(search, interfaces, lan), wake)
    # In auto mode the DHTs wait for the LAN's first answers (see the module's docstring).
    gate = lan.unanswered if mdns is not None and not query.want_all else None
    # With probing, collect every record: the first one found may be a dead provider's.
    dht_query = search._replace(want_all=True) if probe else search
    if source == "dht" or (source == "auto" and contacts):
        dht_run = probed_early(lambda: dht_lookup(dht_query, contacts))
        dht = _Background("dht", dht_run, wake, gate, search_deadline)
    if source == "libp2p" or (source == "auto" and multiaddrs):
        p2p_run = probed_early(lambda: libp2p_lookup(dht_query, multiaddrs))
        p2p = _Background("libp2p", p2p_run, wake, gate, search_deadline)
    lookups = [lookup for lookup in (mdns, dht, p2p) if lookup is not None]

    def finish(found: list[Candidate]) -> list[Candidate]:
        found = deduplicate(found)
        if probe and found:
            found = prober.results(found)
        local = networks
        if local is None:
            # Only a DHT or libp2p candidate needs this machine's networks to be judged local:
            # mDNS answers are on the LAN by definition, and a look at the interfaces is tens
            # of ms of a booting machine's one emulated CPU (the LAN boot ranks mDNS answers only).
            local = _networks() if any(c.source != "mdns" for c in found) else []
        return rank(found, rng, local)

    if query.want_all:
        # Each lookup ends by itself (mDNS at ``lan.until``, its import no longer counted, then
        # it closes its sockets); wait for them at least 0.5 s past that, up to the overall
        # deadline when probing leaves more: a lookup still closing when the wait ends loses
        # everything it found (seen on a loaded machine: a LAN provider listed as the DHT's).
        wait_until = max(search_deadline, deadline)
        return finish([c for lookup in lookups for c in lookup.result(wait_until)])

    lan_grace = started + min(LAN_GRACE, search.timeout)
    pending = list(lookups)
    while pending:
        wake.clear()
        now = time.monotonic()
        if now >= lan_grace and not lan.unanswered.is_set():
            lan.unanswered.set()  # a LAN answer still unresolved at the grace: start the rest
        for lookup in list(pending):
            lan_pending = mdns in pending and lookup is not mdns and not lan.quiet.is_set()
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
            if lookup is mdns:
                lan.unanswered.set()  # nothing usable on the LAN: the DHTs may start now
        if time.monotonic() >= search_deadline:
            break
        wake.wait(POLL)
    return []
