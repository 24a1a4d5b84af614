"""libp2p Kademlia discovery: providers of a channel/arch under the sha2-256 multihash of
``/phase/{channel}/{arch}/manifest`` (``phase_client/libp2p/keyscheme.py``), found with
GET_PROVIDERS through ``--bootstrap`` multiaddrs (``/ip4/A/tcp/P/p2p/12D3KooW...``).

A booting client is a DHT client only: a throw-away identity, no listening socket. A provider's
HTTP multiaddr (``/ip4/A/tcp/P/http``) becomes ``http://A:P/{channel}/{arch}/manifest.json``;
providers without one are skipped. Nothing here is trusted: the manifest's signatures decide.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Sequence

from ..hostport import MAX_BOOTSTRAP, host_from_url
from .model import Candidate, Query

log = logging.getLogger(__name__)

RPC_SHARE = 0.4  # of the timeout: one peer (dial, handshake, request) may take this much


def parse_bootstrap(texts: Sequence[str]) -> list[object]:
    """The multiaddrs that parse (a bad one is logged and skipped)."""
    from ..libp2p.errors import MultiaddrError
    from ..libp2p.multiaddr import Multiaddr

    out: list[object] = []
    for text in texts[:MAX_BOOTSTRAP]:
        try:
            ma = Multiaddr.from_text(text)
        except MultiaddrError as exc:
            log.warning("libp2p: skipping bootstrap %s", exc)
            continue
        if ma.tcp_target() is None:
            log.warning("libp2p: skipping bootstrap %s: not a TCP address", text[:80])
            continue
        out.append(ma)
    return out


def discover_libp2p(
    query: Query, bootstrap: Sequence[str], rpc_timeout: float | None = None
) -> list[Candidate]:
    """Providers of ``query.channel``/``query.arch`` in libp2p Kademlia, within
    ``query.timeout``; with ``want_all`` the union from the whole walk, otherwise the first
    answer with a provider in it. Empty when nothing was found or nobody answered."""
    from ..libp2p import client
    from ..libp2p.multiaddr import Multiaddr

    contacts = [ma for ma in parse_bootstrap(bootstrap) if isinstance(ma, Multiaddr)]
    if not contacts:
        return []
    timeout = max(0.1, query.timeout)
    found = asyncio.run(
        client.find_providers(
            contacts,
            query.channel,
            query.arch,
            timeout=timeout,
            rpc_timeout=rpc_timeout or max(0.2, timeout * RPC_SHARE),
            want_all=query.want_all,
        )
    )
    stats = found.stats
    if not stats.answered:
        log.warning(
            "libp2p: no peer answered (%d tried%s)",
            stats.contacted,
            f"; {stats.errors[0]}" if stats.errors else "",
        )
    log.info(
        "libp2p: %d provider(s) of %s/%s in %.0f ms (%d peers asked, %d answered)",
        len(found.providers),
        query.channel,
        query.arch,
        found.elapsed * 1000,
        stats.contacted,
        stats.answered,
    )
    candidates = []
    for provider in found.providers:
        if provider.url is None:
            log.debug("libp2p: provider %s has no HTTP address", provider.peer_id)
            continue
        parsed = urllib.parse.urlsplit(provider.url)
        candidates.append(
            Candidate(
                source="libp2p",
                url=provider.url,
                channel=query.channel,
                arch=query.arch,
                host=host_from_url(parsed.hostname or ""),
                port=parsed.port or (443 if parsed.scheme == "https" else 80),
                peer_id=provider.peer_id,
            )
        )
    return candidates
