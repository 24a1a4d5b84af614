"""DHT discovery: find providers of a channel/arch under ``/phase/{channel}/{arch}/manifest``.

A client is a short-lived, lookup-only DHT node (it never enters other nodes' routing tables, so
it leaves no dead contacts behind): it binds an ephemeral UDP port, pings every bootstrap contact
in parallel, walks to the k nodes closest to the key and collects the verified union of provider
records. Everything is bounded by ``query.timeout``; RPCs time out quickly so dead bootstrap nodes
or peers cost a fraction of the budget, not 5 s each.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
import urllib.parse
from collections.abc import Sequence

from ..hostport import (  # noqa: F401 - re-exported for callers of this module
    MAX_BOOTSTRAP,
    bootstrap_from_cmdline,
    parse_bootstrap_list,
)
from ..timefmt import format_utc
from .model import Candidate, Query

log = logging.getLogger(__name__)

BOOTSTRAP_SHARE = 0.6  # of the timeout; the lookup keeps the rest even if bootstrap stalls


def _listen_host(bootstrap: Sequence[tuple[str, int]]) -> str:
    """The IPv6 wildcard (both stacks: IPv4 contacts are reached as ``::ffff:a.b.c.d``) when a
    contact is an IPv6 literal; otherwise IPv4 (a machine may have no IPv6 at all)."""
    for host, _ in bootstrap:
        try:
            if ipaddress.ip_address(host).version == 6:
                return "::"
        except ValueError:
            continue
    return "0.0.0.0"


def to_candidate(record: object) -> Candidate:
    from ..dht.records import ProviderRecord

    assert isinstance(record, ProviderRecord)
    parsed = urllib.parse.urlsplit(record.url)
    return Candidate(
        source="dht",
        url=record.url,
        channel=record.channel,
        arch=record.arch,
        version=record.version,
        name=record.provider_name,
        host=parsed.hostname,
        port=parsed.port or (443 if parsed.scheme == "https" else 80),
        peer_id=record.peer_id,
        last_updated=format_utc(record.last_updated),
    )


async def _discover(
    query: Query, bootstrap: Sequence[tuple[str, int]], rpc_timeout: float | None
) -> list[Candidate]:
    from ..dht.node import DEFAULT_RPC_TIMEOUT, DhtNode
    from ..dht.records import dht_key

    started = time.monotonic()
    timeout = max(0.1, query.timeout)
    if rpc_timeout is None:
        rpc_timeout = min(DEFAULT_RPC_TIMEOUT, max(0.2, timeout / 4))
    node = DhtNode(rpc_timeout=rpc_timeout, client=True)
    await node.listen(0, _listen_host(bootstrap))
    try:
        try:
            await asyncio.wait_for(node.bootstrap(bootstrap), timeout * BOOTSTRAP_SHARE)
        except TimeoutError:
            log.debug("DHT bootstrap still running after %.1f s; looking up anyway", timeout)
        if not node.protocol.router.find_neighbors(node.node):
            log.warning("DHT: no bootstrap node answered (%d tried)", len(bootstrap))
            return []
        remaining = max(0.05, timeout - (time.monotonic() - started))
        found = await node.get(
            dht_key(query.channel, query.arch), timeout=remaining, first_only=not query.want_all
        )
    finally:
        node.stop()
    log.info(
        "DHT: %d provider(s) of %s/%s in %.0f ms",
        len(found),
        query.channel,
        query.arch,
        (time.monotonic() - started) * 1000,
    )
    return [to_candidate(r) for r in found]


def discover_dht(
    query: Query, bootstrap: list[tuple[str, int]], rpc_timeout: float | None = None
) -> list[Candidate]:
    """Providers of ``query.channel``/``query.arch`` in the DHT, newest record first.

    With ``query.want_all`` it collects the union from the k closest nodes; otherwise it returns
    as soon as one valid record has arrived.

    Returns within ``query.timeout`` (plus a few milliseconds), whatever state the bootstrap
    nodes are in; an empty list when nothing was found or nobody answered.
    """
    if not bootstrap:
        return []
    return asyncio.run(_discover(query, bootstrap[:MAX_BOOTSTRAP], rpc_timeout))
