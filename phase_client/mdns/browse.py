"""Browse ``_phase-image._tcp.local.``: resolve every instance that answers and hand it over.

``browse`` blocks for at most ``timeout`` seconds. Each instance that resolves goes to the
caller's ``accept``, which turns it into a result or refuses it (None); without ``want_all`` the
browse ends ``grace`` seconds after the first accepted one (other providers answer the same query
within a millisecond or two), with ``want_all`` it listens for the whole timeout and an instance
that says goodbye meanwhile is dropped. Results come in order of arrival.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from ..errors import NoSourceError
from . import _zeroconf
from .records import SERVICE_TYPE, instance_label

log = logging.getLogger(__name__)

GRACE_SECONDS = 0.05
RESOLVE_TIMEOUT_MS = 3000

T = TypeVar("T")


@dataclass(frozen=True)
class ResolvedService:
    """One instance as resolved: its SRV, A and TXT records (TXT not yet validated)."""

    name: str  # full instance name, e.g. "phase-stable-arm64._phase-image._tcp.local."
    server: str | None
    port: int | None
    addresses: tuple[str, ...]
    properties: Mapping[bytes, bytes | None]


def browse(
    addresses: Sequence[str],
    timeout: float,
    accept: Callable[[ResolvedService, bool], T | None],
    want_all: bool = False,
    grace: float = GRACE_SECONDS,
) -> list[T]:
    """Browse from ``addresses`` (local IPv4 addresses); see the module's docstring.

    ``accept(service, first)`` returns a result, or None to ignore the service; ``first`` is
    True when this instance is not among the results yet (not a re-announcement of a known one).

    Raises NoSourceError when no multicast socket can be opened on them.
    """
    return asyncio.run(_browse(list(addresses), timeout, accept, want_all, grace))


async def _browse(
    addresses: list[str],
    timeout: float,
    accept: Callable[[ResolvedService, bool], T | None],
    want_all: bool,
    grace: float,
) -> list[T]:
    deadline = time.monotonic() + timeout
    found: dict[str, T] = {}
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
        service = ResolvedService(
            name=name,
            server=info.server,
            port=info.port,
            addresses=tuple(info.parsed_addresses(IPVersion.V4Only)),
            properties=info.properties,
        )
        result = accept(service, name not in found)
        if result is None:
            return
        found[name] = result
        first_match.set()

    def on_change(
        zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
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
        # Ask at once instead of after the browser's random 20-120 ms first-query delay: RFC
        # 6762 5.1 allows a one-shot querier to ask immediately, and a question asking for a
        # unicast response (QU) is answered at once, while answers to a plain multicast question
        # wait another 20-120 ms. The browser's own queries follow as usual.
        await _zeroconf.send_ptr_query(azc.zeroconf, SERVICE_TYPE)
        if want_all:
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
        else:
            try:
                await asyncio.wait_for(first_match.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                pass
            else:
                await asyncio.sleep(max(0.0, min(grace, deadline - time.monotonic())))
    finally:
        await browser.async_cancel()
        tasks = list(resolving.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await azc.async_close()
    return list(found.values())
