"""Ranking of provider candidates. Pure: the random source and this machine's networks are
passed in.

Order: LAN before WAN (and on the LAN, mDNS answers before DHT records), then lower round-trip
time, then newer image version; candidates equal
on all three are shuffled, so that many clients booting at once spread over many providers.
LAN is what mDNS found, and any candidate whose URL names an address on this machine's own
links: a link-local IPv6 address, or an address in one of its networks (an IPv6 prefix or an
IPv4 subnet), whichever source reported it.

A dual-stack provider is one candidate, not one per address family: the same manifest URL, or
a DHT record whose URL host is one of the addresses an mDNS answer listed for a service (same
port and path), or two records of one DHT peer for one channel/arch, are merged (the mDNS
report wins, it has the URL for this link).
"""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from ..hostport import host_from_url
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


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def _endpoint(url: str) -> tuple[str, int | None, str] | None:
    """(canonical IP, port, path) of a URL whose host is an IP literal; None otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    ip = _ip(host_from_url(parts.hostname or ""))
    return (str(ip), port, parts.path) if ip is not None else None


def is_lan(candidate: Candidate, local_networks: Sequence[str] = ()) -> bool:
    """Found by mDNS, or its URL names a link-local IPv6 address or one in ``local_networks``."""
    if candidate.source == "mdns":
        return True
    endpoint = _endpoint(candidate.url)
    if endpoint is None:
        return False
    ip = ipaddress.ip_address(endpoint[0])
    if ip.version == 6 and ip.is_link_local:
        return True
    for network in local_networks:
        try:
            net = ipaddress.ip_network(network, strict=False)
        except ValueError:
            continue
        if net.version == ip.version and ip in net:
            return True
    return False


def deduplicate(candidates: Iterable[Candidate]) -> list[Candidate]:
    """One entry per provider of a channel/arch (see the module's docstring); the LAN (mDNS)
    report wins over the DHT's."""
    best: dict[str, Candidate] = {}
    for candidate in candidates:
        known = best.get(candidate.url)
        if known is None or _preference(candidate) < _preference(known):
            best[candidate.url] = candidate
    kept = sorted(best.values(), key=_preference)
    result: list[Candidate] = []
    for candidate in kept:
        if not any(_same_provider(candidate, other) for other in result):
            result.append(candidate)
    return result


def _preference(candidate: Candidate) -> int:
    return SOURCE_PREFERENCE.get(candidate.source, 9)


def _same_provider(new: Candidate, kept: Candidate) -> bool:
    """Is ``new`` (a later or equal source) the provider ``kept`` already stands for?"""
    if (new.channel, new.arch) != (kept.channel, kept.arch):
        return False
    if new.peer_id is not None and new.peer_id == kept.peer_id:
        return True
    endpoint = _endpoint(new.url)
    kept_endpoint = _endpoint(kept.url)
    if endpoint is None or kept_endpoint is None or not kept.addresses:
        return False
    addresses = {str(ip) for a in kept.addresses if (ip := _ip(a)) is not None}
    return endpoint[0] in addresses and endpoint[1:] == kept_endpoint[1:]


def rank(
    candidates: Iterable[Candidate],
    rng: random.Random | None = None,
    local_networks: Sequence[str] = (),
) -> list[Candidate]:
    """Best first. Unprobed candidates (no RTT) sort after the probed ones of their locality.

    ``local_networks``: this machine's networks (CIDR strings), which make a DHT candidate
    on them a LAN one.
    """
    ordered = list(candidates)
    (rng or random.Random()).shuffle(ordered)
    # Two stable sorts: the later, primary key keeps the earlier order among its equals, and
    # both keep the shuffle's order among candidates equal on every key.
    ordered.sort(key=lambda c: version_key(c.version), reverse=True)
    ordered.sort(
        key=lambda c: (
            0 if is_lan(c, local_networks) else 1,
            _preference(c),  # on the LAN, what mDNS says now before what the DHT holds
            rtt_bucket(c.rtt_ms),
        )
    )
    return ordered


def rtt_bucket(rtt_ms: float | None) -> int:
    return int(rtt_ms // RTT_BUCKET_MS) if rtt_ms is not None else 1 << 30
