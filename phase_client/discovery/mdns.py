"""Find providers on the LAN: browse ``_phase-image._tcp.local.`` and keep matching TXT records.

``discover_mdns`` blocks for at most ``query.timeout`` seconds. Without ``want_all`` it returns
``GRACE_SECONDS`` after the first match (other providers answer the same query within tens of
milliseconds, so a few more are collected for ranking); with ``want_all`` it listens for the whole
timeout. Results are in order of arrival: the first to answer is usually the nearest or least
loaded. Malformed TXT records are skipped (logged at debug level), never raised.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ..errors import NoSourceError
from ..manifest import normalize_arch
from ..mdns_records import (
    SERVICE_TYPE,
    TxtError,
    candidate_from_service,
    instance_label,
    reachable_url,
)
from ..netif import choose_ipv4, ipv4_networks
from .model import Candidate, Query

log = logging.getLogger("phase.mdns")

GRACE_SECONDS = 0.05
RESOLVE_TIMEOUT_MS = 3000


def client_addresses(interfaces: Sequence[str] | None) -> list[str]:
    """IPv4 addresses to browse from: the wanted interfaces, or every non-loopback one."""
    pairs = choose_ipv4(interfaces)
    if not pairs:
        raise NoSourceError("mDNS: no network interface with an IPv4 address (is the network up?)")
    return [addr for _, addr in pairs]


def discover_mdns(query: Query, interfaces: Sequence[str] | None = None) -> list[Candidate]:
    """Providers of ``query.channel``/``query.arch`` on the LAN, best first (maybe empty).

    ``interfaces``: interface names or IPv4 addresses to browse on (default: every interface
    with a non-loopback IPv4 address). Raises NoSourceError when mDNS cannot run at all (no
    interface, no multicast socket), so the caller can move on to the DHT.
    """
    addresses = client_addresses(interfaces)
    return asyncio.run(_browse(query, addresses))


async def _one_shot_query(zc: Any) -> None:
    """Ask at once instead of after the browser's random 20-120 ms first-query delay.

    RFC 6762 5.1 allows a one-shot querier to ask immediately. The question asks for a unicast
    response (QU): zeroconf answers those at once, while answers to a plain multicast question
    wait another 20-120 ms. The browser's own queries follow as usual.
    """
    from zeroconf import DNSOutgoing, DNSQuestion
    from zeroconf.const import _CLASS_IN, _FLAGS_QR_QUERY, _TYPE_PTR

    await zc.async_wait_for_start()
    question = DNSQuestion(SERVICE_TYPE, _TYPE_PTR, _CLASS_IN)
    question.unicast = True
    out = DNSOutgoing(_FLAGS_QR_QUERY)
    out.add_question(question)
    zc.async_send(out)


async def _browse(query: Query, addresses: list[str]) -> list[Candidate]:
    from zeroconf import IPVersion, ServiceStateChange
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

    started = time.monotonic()
    deadline = started + query.timeout
    networks = ipv4_networks(addresses)
    arch = normalize_arch(query.arch)
    found: dict[str, Candidate] = {}
    first_match = asyncio.Event()
    resolving: dict[str, asyncio.Task[None]] = {}  # instance name -> its pending resolution

    try:
        azc = AsyncZeroconf(interfaces=addresses, ip_version=IPVersion.V4Only)
    except OSError as exc:
        raise NoSourceError(
            f"mDNS: cannot open a multicast socket on {', '.join(addresses)}: {exc.strerror or exc}"
        ) from exc

    async def resolve(name: str) -> None:
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        remaining_ms = max(1.0, (deadline - time.monotonic()) * 1000)
        if not await info.async_request(azc.zeroconf, min(RESOLVE_TIMEOUT_MS, remaining_ms)):
            log.debug("mDNS: %s did not resolve", name)
            return
        try:
            candidate, _ = candidate_from_service(
                name,
                info.server,
                info.port,
                info.parsed_addresses(IPVersion.V4Only),
                info.properties,
            )
        except TxtError as exc:
            log.debug("mDNS: ignoring %s: %s", name, exc)
            return
        url = reachable_url(candidate.url, candidate.addresses, networks)
        if url != candidate.url:
            log.debug("mDNS: %s: using %s, on this link, for %s", name, url, candidate.url)
            candidate = replace(candidate, url=url)
        if candidate.channel != query.channel or candidate.arch != arch:
            log.debug("mDNS: %s offers %s/%s", name, candidate.channel, candidate.arch)
            return
        if name not in found:
            log.info(
                "mDNS: found %s at %s (version %s) after %.0f ms",
                candidate.name,
                candidate.url,
                candidate.version or "-",
                (time.monotonic() - started) * 1000,
            )
        found[name] = candidate
        first_match.set()

    def on_change(
        zeroconf: Any, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        pending = resolving.pop(name, None)
        if pending is not None:  # a goodbye, or newer records: the older lookup is moot
            pending.cancel()
        if state_change is ServiceStateChange.Removed:
            if found.pop(name, None) is not None:
                log.info("mDNS: %s left", instance_label(name))
            return
        task = asyncio.ensure_future(resolve(name))
        resolving[name] = task
        task.add_done_callback(lambda done: forget(name, done))

    def forget(name: str, task: asyncio.Task[None]) -> None:
        if resolving.get(name) is task:
            del resolving[name]

    browser = AsyncServiceBrowser(azc.zeroconf, SERVICE_TYPE, handlers=[on_change])
    try:
        await _one_shot_query(azc.zeroconf)
        if query.want_all:
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
        else:
            try:
                await asyncio.wait_for(first_match.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                pass
            else:
                await asyncio.sleep(max(0.0, min(GRACE_SECONDS, deadline - time.monotonic())))
    finally:
        await browser.async_cancel()
        tasks = list(resolving.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await azc.async_close()
    if not found:
        log.info("mDNS: no provider of %s/%s answered", query.channel, arch)
    return list(found.values())
