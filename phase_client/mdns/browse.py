"""Browse ``_phase-image._tcp.local.``: resolve every instance that answers and hand it over.

``browse`` blocks for at most ``timeout`` seconds. Each instance that resolves goes to the
caller's ``accept``, which turns it into a result or refuses it (None); without ``want_all`` the
browse ends ``grace`` seconds after the first accepted one, with ``want_all`` it listens for the
whole timeout and an instance that says goodbye meanwhile is dropped. Results come in order of
arrival.

The grace (``GRACE_SECONDS``, 25 ms) collects the other providers' answers to the same question
for the ranking; it is no check. Responders that answer a QU question at once (python-zeroconf,
which ``plasmd serve`` uses, always does: ``QueryHandler.add_qu_question_response`` puts every
answer in its unicast or its multicast-now set, never in the 20-120 ms queue) answer within a
few milliseconds of each other: 1-5 ms apart on the namespace LAN, 8 ms under load. Answers that
reached our socket before the grace timer fires are read first (asyncio handles ready sockets
before due timers), so a slow client misses none of them. A responder that holds its answer
20-120 ms (RFC 6762 section 6) is collected when it is the first to answer, and otherwise only if
it answers within the grace (it was, with the former 50 ms, only for the lower part of that
range too).

``quiet``: an event set once the LAN has clearly answered nothing, so a caller holding an answer
from elsewhere (the DHT) need not wait for the whole timeout. It is set when ``QUIET_AFTER``
seconds have passed since our question went out and nothing was accepted, and no instance is
still being resolved. Why that is safe: our first question asks for a unicast response (QU), and
every answer to it is sent within 120 ms of its arrival. A responder answers a QU question by
unicast at once, or, when it has not multicast the record within a quarter of its TTL, by
multicast (RFC 6762 section 5.4), held at most 20-120 ms for a shared record such as our PTR
(section 6; 400-500 ms only for a query with the TC bit, which ours never has). The one-second
rule between two multicasts of a record (section 6) cannot hold that answer back: a record
multicast within the last second was multicast within a quarter of its TTL, so it goes back by
unicast. python-zeroconf, the responder of ``plasmd serve``, sends both at once
(``QueryHandler.add_qu_question_response``). ``QUIET_AFTER`` is that 120 ms and 30 ms for the
link and for getting the packet to us; answers that reached our socket before the timer fired
are read first (asyncio handles ready sockets before due timers). An answer that does arrive
later is still collected, and a wrong guess costs only a WAN provider instead of a LAN one: every
manifest is verified the same way wherever it came from.

``unanswered``: set sooner, ``FIRST_ANSWERS`` after the question, if nothing has been accepted
or is being resolved by then (at the latest ``QUIET_AFTER`` after it if nothing is accepted by
then): the immediate answers of responders that answer at once are in, and there are none, so a
caller may now start slower work (the DHT lookup) without competing with a LAN answer's
handling. It decides nothing about which answer is used.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, TypeVar

from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from ..errors import NoSourceError
from . import _zeroconf
from .interfaces import zeroconf_interfaces
from .records import SERVICE_TYPE, instance_label, is_ip, is_link_local, strip_zone, zone_of

log = logging.getLogger(__name__)

GRACE_SECONDS = 0.025  # see the module's docstring
# The 120 ms a responder may hold its answer to our QU question (RFC 6762 sections 5.4 and 6),
# and 30 ms for the link and for delivering the packet to us (see the module's docstring).
QUIET_AFTER = 0.15
# Immediate answers to a QU question arrive within a few milliseconds on a link (measured on the
# namespace LAN: 1-5 ms after the question, resolution included; 14 ms under load).
FIRST_ANSWERS = 0.025
RESOLVE_TIMEOUT_MS = 3000

T = TypeVar("T")


class ResolvedService(NamedTuple):
    """One instance as resolved: its SRV, A and TXT records (TXT not yet validated)."""

    name: str  # full instance name, e.g. "phase-stable-arm64._phase-image._tcp.local."
    server: str | None
    port: int | None
    addresses: tuple[str, ...]
    properties: Mapping[bytes, bytes | None]


def browse(
    addresses: Sequence[tuple[str, str]],
    timeout: float,
    accept: Callable[[ResolvedService, bool], T | None],
    want_all: bool = False,
    grace: float = GRACE_SECONDS,
    quiet: threading.Event | None = None,
    unanswered: threading.Event | None = None,
    *,
    until_quiet: bool = False,
) -> list[T]:
    """Browse from ``addresses`` (local (interface, address) pairs, IPv4 and IPv6); see the
    module's docstring.

    ``accept(service, first)`` returns a result, or None to ignore the service; ``first`` is
    True when this instance is not among the results yet (not a re-announcement of a known one).
    ``until_quiet``: end (with nothing) once the LAN has clearly answered nothing, as ``quiet``
    is set, instead of listening until the timeout.

    Raises NoSourceError when no multicast socket can be opened on them.
    """
    return asyncio.run(
        _browse(list(addresses), timeout, accept, want_all, grace, quiet, unanswered, until_quiet)
    )


async def _browse(
    addresses: list[tuple[str, str]],
    timeout: float,
    accept: Callable[[ResolvedService, bool], T | None],
    want_all: bool,
    grace: float,
    quiet: threading.Event | None = None,
    unanswered: threading.Event | None = None,
    until_quiet: bool = False,
) -> list[T]:
    deadline = time.monotonic() + timeout
    found: dict[str, T] = {}
    # Set by the first accepted answer; with until_quiet also by a LAN that answered nothing.
    first_match = asyncio.Event()
    resolving: dict[str, asyncio.Task[None]] = {}  # instance name -> its pending resolution

    chosen = zeroconf_interfaces(addresses)
    link_local_zones = sorted({z for _, a in addresses if (z := zone_of(a)) is not None})
    try:
        azc = AsyncZeroconf(interfaces=chosen, ip_version=ip_version_of(chosen))
    except (OSError, RuntimeError) as exc:  # RuntimeError: zeroconf found no such IPv6 address
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise NoSourceError(
            f"mDNS: cannot open a multicast socket on {', '.join(chosen)}: {reason}"
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
            addresses=tuple(
                scoped_addresses(info.parsed_scoped_addresses(IPVersion.All), link_local_zones)
            ),
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

    browser: AsyncServiceBrowser | None = None
    watch: asyncio.Future[None] | None = None
    try:
        # Started before the browser exists. A resolution that begins before zeroconf has
        # started awaits its start-up future itself (ServiceInfo.async_request), and cancelling
        # that resolution (on_change does, when newer records come) cancels the future for every
        # waiter: our question then failed with NotRunningException, ~1 discovery in 250 on a
        # LAN whose providers' packets arrive while zeroconf's sockets are being wrapped.
        await azc.zeroconf.async_wait_for_start()
        browser = AsyncServiceBrowser(azc.zeroconf, SERVICE_TYPE, handlers=[on_change])
        # Ask at once instead of after the browser's random 20-120 ms first-query delay: RFC
        # 6762 5.1 allows a one-shot querier to ask immediately, and a question asking for a
        # unicast response (QU) is answered at once, while answers to a plain multicast question
        # wait another 20-120 ms. The browser's own queries follow as usual.
        await _zeroconf.send_ptr_query(azc.zeroconf, SERVICE_TYPE)
        if quiet is not None or unanswered is not None or until_quiet:
            watch = asyncio.ensure_future(
                _watch_answers(
                    (unanswered, quiet),
                    deadline,
                    lambda: bool(found),
                    lambda: bool(resolving),
                    first_match.set if until_quiet else None,
                )
            )
        if want_all:
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
        else:
            try:
                await asyncio.wait_for(first_match.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                pass
            else:
                if found:  # the other providers' answers to the same question
                    await asyncio.sleep(max(0.0, min(grace, deadline - time.monotonic())))
    finally:
        if watch is not None:
            watch.cancel()
        if browser is not None:
            await browser.async_cancel()
        tasks = list(resolving.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await azc.async_close()
    return list(found.values())


async def _watch_answers(
    events: tuple[threading.Event | None, threading.Event | None],
    deadline: float,
    answered: Callable[[], bool],
    resolving: Callable[[], bool],
    on_quiet: Callable[[], None] | None = None,
) -> None:
    """Set ``unanswered`` once ``FIRST_ANSWERS`` has passed since the question with nothing
    accepted and nothing pending (or ``QUIET_AFTER`` with nothing accepted), and ``quiet`` once
    ``QUIET_AFTER`` has passed with nothing accepted and nothing pending (then ``on_quiet``
    is called too)."""
    unanswered, quiet = events
    asked = time.monotonic()
    await asyncio.sleep(FIRST_ANSWERS)
    # An answer still being resolved when QUIET_AFTER is over (a slow LAN) lets the rest start too.
    while not answered() and resolving() and time.monotonic() < asked + QUIET_AFTER:
        await asyncio.sleep(0.01)
    if answered():
        return
    if unanswered is not None:
        unanswered.set()
    await asyncio.sleep(max(0.0, asked + QUIET_AFTER - time.monotonic()))
    while time.monotonic() < deadline:
        if answered():
            return
        if not resolving():
            log.debug("mDNS: no answer %.0f ms after the question", QUIET_AFTER * 1000)
            if quiet is not None:
                quiet.set()
            if on_quiet is not None:
                on_quiet()
            return
        await asyncio.sleep(0.01)


def ip_version_of(interfaces: Sequence[str]) -> IPVersion:
    """IPv4 only, IPv6 only or both, as the chosen addresses are (zeroconf's sockets follow)."""
    v4 = any(is_ip(a, 4) for a in interfaces)
    v6 = any(is_ip(strip_zone(a), 6) for a in interfaces)
    if v4 and v6:
        return IPVersion.All
    return IPVersion.V6Only if v6 else IPVersion.V4Only


def scoped_addresses(addresses: Sequence[str], zones: Sequence[str]) -> list[str]:
    """A service's addresses as zeroconf resolved them, link-local ones with an interface name
    as their zone: zeroconf gives the index of the interface the answer came in on
    (``fe80::5%3``); an answer that came in over IPv4 has none, and then the zone is our only
    interface with IPv6, if we have exactly one (else that address is unusable and dropped)."""
    import socket

    result: list[str] = []
    for address in addresses:
        if not is_link_local(address):
            result.append(address)
            continue
        zone = zone_of(address)
        if zone is not None and zone.isdigit():
            try:
                zone = socket.if_indextoname(int(zone))
            except OSError:
                zone = None
        if zone is None and len(zones) == 1:
            zone = zones[0]
        if zone is not None:
            scoped = f"{strip_zone(address)}%{zone}"
            if scoped not in result:
                result.append(scoped)
    return result
