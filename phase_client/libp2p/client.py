"""The two things callers need from libp2p Kademlia: find the providers of a channel/arch
(GET_PROVIDERS, as a booting client: a throw-away identity, no listening socket) and announce
ourselves as one (FIND_NODE to the K closest peers of the key, then ADD_PROVIDER to each, with
our HTTP endpoint as the multiaddr in our peer info).

Both are bounded by one overall timeout on top of the per-peer ``rpc_timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..keys import SigningKey
from . import kadmsg, keyscheme
from .conn import Connection, Host
from .errors import Libp2pError
from .kad import DEFAULT_RPC_TIMEOUT, AddressFilter, K, Lookup, Stats, is_public, request
from .multiaddr import Multiaddr

log = logging.getLogger(__name__)

MAX_BOOTSTRAP = 32


def address_filter(bootstrap: Sequence[Multiaddr]) -> tuple[bool, AddressFilter]:
    """(allow private addresses?, the filter): private and loopback peers are dialled only when
    a bootstrap peer is itself private (a lab or test network); on the internet, a peer naming
    private addresses is not followed there."""
    private = any(
        (target := ma.tcp_target()) is not None and not is_public(target[0]) for ma in bootstrap
    )
    return private, (_any_host if private else is_public)


def _any_host(host: str) -> bool:
    return True


@dataclass(frozen=True)
class FoundProvider:
    peer_id: str
    addrs: tuple[str, ...]
    url: str | None  # the manifest URL its first HTTP multiaddr points at


@dataclass
class FindResult:
    providers: list[FoundProvider]
    stats: Stats
    elapsed: float


@dataclass
class ProvideResult:
    accepted: dict[str, int] = field(default_factory=dict)  # key (cid) -> peers that took it
    closest: int = 0
    stats: Stats = field(default_factory=Stats)
    elapsed: float = 0.0


async def _add_provider(
    connection: Connection, message: bytes, rpc_timeout: float, stats: Stats
) -> bool:
    try:
        async with asyncio.timeout(rpc_timeout):
            await request(connection, message, reply=False)
        return True
    except (Libp2pError, TimeoutError, OSError) as exc:
        stats.errors.append(f"ADD_PROVIDER to {connection.peer}: {exc or type(exc).__name__}")
        return False


async def find_providers(
    bootstrap: Sequence[Multiaddr],
    channel: str,
    arch: str,
    *,
    timeout: float = 5.0,
    rpc_timeout: float = DEFAULT_RPC_TIMEOUT,
    want_all: bool = True,
    identity: SigningKey | None = None,
) -> FindResult:
    """Providers of ``channel``/``arch`` (those with an HTTP address first); what was found by
    the deadline when the lookup runs out of time."""
    started = time.monotonic()
    host = Host(identity or SigningKey.generate())
    key = keyscheme.provider_key(channel, arch)
    _, allow = address_filter(bootstrap)
    lookup = Lookup(
        host,
        key,
        kadmsg.GET_PROVIDERS,
        rpc_timeout=min(rpc_timeout, timeout),
        allow=allow,
        enough_providers=None if want_all else 1,
    )
    try:
        async with asyncio.timeout(timeout):
            await lookup.run(list(bootstrap)[:MAX_BOOTSTRAP])
    except TimeoutError:
        log.debug("libp2p lookup: deadline reached with %d provider(s)", len(lookup.providers))
    finally:
        await host.close()
    found = []
    for provider in lookup.providers.values():
        urls = [keyscheme.manifest_url(ma, channel, arch) for ma in provider.addrs]
        found.append(
            FoundProvider(
                str(provider.peer),
                tuple(str(ma) for ma in provider.addrs),
                next((u for u in urls if u), None),
            )
        )
    found.sort(key=lambda p: p.url is None)
    return FindResult(found, lookup.stats, time.monotonic() - started)


async def provide(
    identity: SigningKey,
    bootstrap: Sequence[Multiaddr],
    keys: Sequence[bytes],
    announce: Sequence[Multiaddr],
    *,
    timeout: float = 60.0,
    rpc_timeout: float = DEFAULT_RPC_TIMEOUT,
) -> ProvideResult:
    """ADD_PROVIDER for every key to the K closest peers a FIND_NODE walk finds."""
    started = time.monotonic()
    if not announce:
        raise Libp2pError("nothing to announce: no HTTP address")
    host = Host(identity, announce)
    me = kadmsg.PeerInfo(host.peer_id, tuple(announce))
    result = ProvideResult()
    _, allow = address_filter(bootstrap)
    try:
        async with asyncio.timeout(timeout):
            for key in keys:
                lookup = Lookup(
                    host,
                    key,
                    kadmsg.FIND_NODE,
                    rpc_timeout=rpc_timeout,
                    allow=allow,
                    keep_connections=True,
                )
                found = await lookup.run(list(bootstrap)[:MAX_BOOTSTRAP])
                result.stats.messages += found.stats.messages
                result.stats.contacted += found.stats.contacted
                result.stats.answered += found.stats.answered
                result.stats.failed += found.stats.failed
                result.stats.errors += found.stats.errors
                result.closest = max(result.closest, len(found.closest))
                keep = {id(c) for _, c in found.closest[:K]}
                for connection in list(host.connections):  # only the K closest stay open
                    if id(connection) not in keep:
                        await connection.close()
                        host.connections.remove(connection)
                message = kadmsg.encode(kadmsg.ADD_PROVIDER, key, [me])
                outcomes = await asyncio.gather(
                    *(
                        _add_provider(c, message, rpc_timeout, result.stats)
                        for _, c in found.closest[:K]
                    )
                )
                result.stats.messages += len(outcomes)
                result.accepted[keyscheme.cid_text(key)] = sum(outcomes)
                await host.close()
    except TimeoutError:
        log.debug("libp2p publish: deadline reached")
    finally:
        await host.close()
    result.elapsed = time.monotonic() - started
    return result
