"""Find providers on the LAN by mDNS: ``mdns.browse`` and keep the matching TXT records.

``discover_mdns`` blocks for at most ``query.timeout`` seconds. Without ``want_all`` it returns
``GRACE_SECONDS`` after the first match (other providers answer the same question within a few
milliseconds, so those are collected for ranking: see ``mdns.browse``); with ``want_all`` it
listens for the whole timeout. Results are in order of arrival: the first to answer is usually
the nearest or least loaded. Malformed TXT records are skipped (logged at debug level), never
raised.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from ..errors import NoSourceError, TxtError
from ..mdns.browse import GRACE_SECONDS, ResolvedService, browse
from ..mdns.interfaces import Enumerated, choose_addresses, enumerate_interfaces, local_networks
from ..mdns.records import TxtInfo, TxtProperties, instance_label, parse_txt, reachable_url
from ..names import normalize_arch
from .model import Candidate, Query

log = logging.getLogger(__name__)


def client_addresses(
    interfaces: Sequence[str] | None, seen: Enumerated | None = None
) -> list[tuple[str, str]]:
    """(interface, address) pairs to browse from, IPv4 and IPv6: the wanted interfaces, or every
    non-loopback address (of ``seen``, one look at the interfaces; default: one now)."""
    pairs = choose_addresses(interfaces, seen)
    if not pairs:
        raise NoSourceError(
            "mDNS: no network interface with an IPv4 or IPv6 address (is the network up?)"
        )
    return pairs


def candidate_from_service(
    name: str,
    server: str | None,
    port: int | None,
    addresses: Sequence[str],
    properties: TxtProperties,
) -> tuple[Candidate, TxtInfo]:
    """A discovery ``Candidate`` from one resolved service; raises TxtError if the TXT is bad."""
    info = parse_txt(properties)
    candidate = Candidate(
        source="mdns",
        url=info.manifest_url,
        channel=info.channel,
        arch=info.arch,
        version=info.version,
        name=instance_label(name),
        host=server.rstrip(".") if server else None,
        addresses=tuple(addresses),
        port=port,
    )
    return candidate, info


def discover_mdns(
    query: Query,
    interfaces: Sequence[str] | None = None,
    quiet: threading.Event | None = None,
    unanswered: threading.Event | None = None,
    found: Callable[[Candidate], None] | None = None,
    *,
    until_quiet: bool = False,
) -> list[Candidate]:
    """Providers of ``query.channel``/``query.arch`` on the LAN, best first (maybe empty).

    ``interfaces``: interface names or addresses to browse on (default: every interface with a
    non-loopback IPv4 or IPv6 address). ``quiet`` is set as soon as the LAN has clearly answered
    nothing, ``unanswered`` when its immediate answers are in and there are none (see
    ``mdns.browse``), both before the lookup returns. ``found`` is called with each fitting
    candidate when it is first accepted (in the browse's event loop: it must not block).
    ``until_quiet``: return as soon as the LAN has clearly answered nothing (empty), not at
    the timeout.
    Raises NoSourceError when mDNS cannot run at all (no interface, no multicast socket), so
    the caller can move on to the DHT.
    """
    seen = enumerate_interfaces()  # one look serves the addresses and their networks
    addresses = client_addresses(interfaces, seen)
    started = time.monotonic()
    networks = local_networks([address for _, address in addresses], seen)
    arch = normalize_arch(query.arch)

    def accept(service: ResolvedService, first: bool) -> Candidate | None:
        name = service.name
        try:
            candidate, _ = candidate_from_service(
                name, service.server, service.port, service.addresses, service.properties
            )
        except TxtError as exc:
            log.debug("mDNS: ignoring %s: %s", name, exc)
            return None
        url = reachable_url(candidate.url, candidate.addresses, networks)
        if url != candidate.url:
            log.debug("mDNS: %s: using %s, on this link, for %s", name, url, candidate.url)
            candidate = candidate._replace(url=url)
        if candidate.channel != query.channel or candidate.arch != arch:
            log.debug("mDNS: %s offers %s/%s", name, candidate.channel, candidate.arch)
            return None
        if first and found is not None:
            found(candidate)
        if first:
            log.info(
                "mDNS: found %s at %s (version %s) after %.0f ms",
                candidate.name,
                candidate.url,
                candidate.version or "-",
                (time.monotonic() - started) * 1000,
            )
        return candidate

    answers = browse(
        addresses,
        query.timeout,
        accept,
        query.want_all,
        GRACE_SECONDS,
        quiet,
        unanswered,
        until_quiet=until_quiet,
    )
    if not answers:
        log.info("mDNS: no provider of %s/%s answered", query.channel, arch)
    return answers
