"""Advertise each offered channel/arch as ``phase-<channel>-<arch>._phase-image._tcp.local.``.

python-zeroconf does the protocol: probing, conflict renaming (``-2``, ``-3`` ...), announcing,
answering queries (multicast and legacy unicast) and goodbye packets. This module decides what
to announce and when, in zeroconf's own event-loop thread, so ``start``/``update``/``stop`` return
quickly to ``plasmd serve``:

- registrations run concurrently (each one probes for ~1.2 s);
- a changed manifest updates the TXT record in place (same instance name);
- a withdrawn combination, and everything at ``stop``, is unregistered with goodbye packets;
- two providers that probe one name at the same instant can both win the probe. After each
  registration we look for another provider's TXT under our name; both sides apply the same
  rule (``tie_keeper``), the loser re-registers and takes the next free ``-N`` name, the
  keeper re-announces (the loser's goodbye for the shared PTR record also dropped ours).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
import socket
import threading
from collections.abc import Awaitable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from ..mdns_records import (
    SERVICE_TYPE,
    TxtError,
    base_instance_name,
    build_txt,
    decode_txt_wire,
    full_service_name,
    instance_label,
    manifest_url_for,
    mdns_hostname,
    tie_keeper,
)
from ..netif import choose_ipv4
from .advertise import Offer

log = logging.getLogger("phase.mdns")

# Records live 2 minutes in caches (zeroconf's default for non-host records is 75 minutes): a
# provider that died without goodbye packets leaves long-running browsers' caches soon, and
# caches refresh at 80 % of the TTL. One-shot clients (phase-discover) start with empty caches and
# only see providers that answer now.
RECORD_TTL = 120
# How long after our announcements to look for a second provider holding our name.
TIE_CHECK_DELAY = 1.0
KEEPER_REANNOUNCE_DELAY = 2.0
MAX_TIE_ROUNDS = 3
TIE_WATCH_INTERVAL = 5.0
RESCAN_INTERVAL = 5.0
STOP_TIMEOUT = 10.0


@dataclass
class _Registered:
    offer: Offer
    properties: dict[str, str]
    info: Any  # zeroconf.ServiceInfo, whose .name zeroconf may change (conflict renaming)


class MdnsAdvertiser:
    """The mDNS half of ``plasmd serve``'s advertisers (see ``provider/advertise.py``)."""

    name = "mdns"

    def __init__(
        self,
        advertise_host: str | None = None,
        interfaces: list[str] | None = None,
        hostname: str | None = None,
        ttl: int = RECORD_TTL,
        rescan_interval: float = RESCAN_INTERVAL,
        tie_watch_interval: float = TIE_WATCH_INTERVAL,
    ) -> None:
        self.advertise_host = advertise_host
        self.interfaces = interfaces
        self.hostname = mdns_hostname(hostname or socket.gethostname())
        self.ttl = ttl
        self.rescan_interval = rescan_interval
        self.tie_watch_interval = tie_watch_interval
        self._addresses: list[str] = []
        self._offers: list[Offer] = []
        self._zc: Any = None
        # Serialises reconcile/withdraw/tie work inside one zeroconf session (a new one for every
        # session: an asyncio.Lock binds to the loop that first uses it).
        self._lock = asyncio.Lock()
        self._registered: dict[str, _Registered] = {}
        self._names_lock = threading.Lock()
        self._session_lock = threading.Lock()  # start/update/stop vs the interface watcher
        self._pending: list[concurrent.futures.Future[None]] = []
        self._watch: concurrent.futures.Future[None] | None = None
        self._stopping = threading.Event()
        self._rescanner: threading.Thread | None = None
        self._warned_no_interface = False

    # -- the Advertiser protocol -------------------------------------------------------------

    def start(self, offers: Sequence[Offer]) -> None:
        self._offers = list(offers)
        self._rescan()
        self._rescanner = threading.Thread(
            target=self._rescan_loop, name="mdns-rescan", daemon=True
        )
        self._rescanner.start()

    def update(self, offers: Sequence[Offer]) -> None:
        with self._session_lock:
            self._offers = list(offers)
            if self._zc is not None:
                self._submit(self._reconcile(self._offers))

    def stop(self) -> None:
        self._stopping.set()
        if self._rescanner is not None:
            self._rescanner.join(STOP_TIMEOUT)
        with self._session_lock:
            self._close_session()

    # -- interfaces: chosen at start, watched afterwards (DHCP may come late or change) --------

    def _rescan_loop(self) -> None:
        while not self._stopping.wait(self.rescan_interval):
            try:
                self._rescan()
            except Exception as exc:  # keep watching; the HTTP service must not notice
                log.warning("mDNS: interface rescan failed: %s", exc)

    def _rescan(self) -> None:
        """Open, move or close the zeroconf session to match this machine's addresses now."""
        pairs = choose_ipv4(self.interfaces)
        addresses = [addr for _, addr in pairs]
        with self._session_lock:
            if self._stopping.is_set() or (addresses == self._addresses and self._zc is not None):
                return
            if self._zc is not None:
                log.info("mDNS: addresses changed from %s to %s", self._addresses, addresses)
                # Goodbyes cannot leave through an address that is gone (and would only log
                # send errors): then the records just expire in caches (TTL).
                self._close_session(goodbye=set(self._addresses) <= set(addresses))
            elif not addresses and not self._addresses:
                if not self._warned_no_interface:
                    log.warning("mDNS: no interface with a non-loopback IPv4 address yet")
                    self._warned_no_interface = True
                return
            self._addresses = addresses
            if addresses:
                self._open_session(pairs)

    def _open_session(self, pairs: list[tuple[str, str]]) -> None:
        self._zc = self._open_zeroconf(self._addresses)
        if self._zc is None:
            return
        self._lock = asyncio.Lock()
        where = ", ".join(f"{name} {addr}" for name, addr in pairs)
        log.info("mDNS: announcing %s as %s on %s", SERVICE_TYPE, self.hostname, where)
        self._submit(self._reconcile(self._offers))
        self._watch = asyncio.run_coroutine_threadsafe(self._watch_ties(), self._zc.loop)

    def _close_session(self, goodbye: bool = True) -> None:
        """Goodbye packets for everything (unless ``goodbye`` is False), then close the sockets."""
        zc = self._zc
        if zc is None:
            return
        if self._watch is not None:
            self._watch.cancel()
        self.wait_idle(STOP_TIMEOUT)
        try:
            future = asyncio.run_coroutine_threadsafe(self._withdraw_all(goodbye), zc.loop)
            future.result(STOP_TIMEOUT)
        except (concurrent.futures.TimeoutError, RuntimeError) as exc:
            log.warning("mDNS: goodbye packets not all sent: %s", exc)
        finally:
            zc.close()
            self._zc = None
            with self._names_lock:
                self._registered.clear()

    # -- extras for plasmd serve's status and the tests --------------------------------------

    def wait_idle(self, timeout: float) -> bool:
        """Block until every pending start/update has finished (True) or ``timeout`` passes."""
        pending = list(self._pending)
        done, not_done = concurrent.futures.wait(pending, timeout=timeout)
        self._pending = [f for f in self._pending if f not in done]
        return not not_done

    def instance_names(self) -> dict[str, str]:
        """``{"stable/arm64": "phase-stable-arm64-2", ...}`` for what is registered now."""
        with self._names_lock:
            return {c: instance_label(r.info.name) for c, r in self._registered.items()}

    @property
    def addresses(self) -> list[str]:
        return list(self._addresses)

    # -- internals ---------------------------------------------------------------------------

    def _open_zeroconf(self, addresses: list[str]) -> Any:
        """Zeroconf with its own loop thread, even if the caller's thread runs an event loop."""
        from zeroconf import IPVersion, Zeroconf

        box: dict[str, Any] = {}

        def create() -> None:  # a fresh thread has no running loop: zeroconf starts its own
            try:
                box["zc"] = Zeroconf(interfaces=addresses, ip_version=IPVersion.V4Only)
            except OSError as exc:
                box["error"] = exc

        thread = threading.Thread(target=create, name="mdns-open", daemon=True)
        thread.start()
        thread.join()
        if "error" in box:
            log.warning("mDNS: cannot open multicast sockets on %s: %s", addresses, box["error"])
            return None
        return box["zc"]

    def _submit(self, coro: Coroutine[Any, Any, None]) -> None:
        self._pending = [f for f in self._pending if not f.done()]
        future = asyncio.run_coroutine_threadsafe(coro, self._zc.loop)
        future.add_done_callback(_log_failure)
        self._pending.append(future)

    def _service_info(self, name: str, offer: Offer, properties: dict[str, str]) -> Any:
        from zeroconf import ServiceInfo

        return ServiceInfo(
            SERVICE_TYPE,
            name,
            port=offer.port,
            properties=properties,
            server=self.hostname,
            parsed_addresses=self._addresses,
            host_ttl=self.ttl,
            other_ttl=self.ttl,
        )

    def _wanted(self, offers: list[Offer]) -> dict[str, tuple[Offer, dict[str, str]]]:
        wanted: dict[str, tuple[Offer, dict[str, str]]] = {}
        for offer in offers:
            url = manifest_url_for(
                offer.manifest_url,
                offer.manifest_path,
                offer.port,
                self._addresses,
                self.advertise_host,
            )
            try:
                base_instance_name(offer.channel, offer.arch)
                wanted[offer.combination] = (
                    offer,
                    build_txt(offer.channel, offer.arch, url, offer.version),
                )
            except TxtError as exc:
                log.warning("mDNS: not advertising %s: %s", offer.combination, exc)
        return wanted

    async def _reconcile(self, offers: list[Offer]) -> None:
        async with self._lock:
            wanted = self._wanted(offers)
            gone = [c for c in self._registered if c not in wanted]
            changed = [
                c
                for c in wanted
                if c in self._registered and self._registered[c].properties != wanted[c][1]
            ]
            new = [c for c in wanted if c not in self._registered]
            await asyncio.gather(*(self._unregister(c) for c in gone))
            await asyncio.gather(*(self._update(c, *wanted[c]) for c in changed))
            results = await asyncio.gather(
                *(self._register(c, *wanted[c]) for c in new), return_exceptions=True
            )
            for combination, result in zip(new, results, strict=True):
                if isinstance(result, BaseException):
                    log.warning("mDNS: cannot register %s: %s", combination, result)
            registered = [c for c in new if c in self._registered]
            if registered:
                await self._resolve_ties(registered)

    async def _register(self, combination: str, offer: Offer, properties: dict[str, str]) -> None:
        name = full_service_name(base_instance_name(offer.channel, offer.arch))
        info = self._service_info(name, offer, properties)
        broadcast = await self._zc.async_register_service(info, allow_name_change=True)
        await self._remember(
            combination, _Registered(offer, properties, info), "advertising", broadcast
        )

    async def _update(self, combination: str, offer: Offer, properties: dict[str, str]) -> None:
        """New TXT under the same instance name (``update_service`` re-announces it)."""
        info = self._service_info(self._registered[combination].info.name, offer, properties)
        broadcast = await self._zc.async_update_service(info)
        await self._remember(
            combination, _Registered(offer, properties, info), "updated", broadcast
        )

    async def _remember(
        self, combination: str, entry: _Registered, verb: str, broadcast: Awaitable[Any]
    ) -> None:
        with self._names_lock:
            self._registered[combination] = entry
        log.info(
            "mDNS: %s %s as %s (version %s)",
            verb,
            combination,
            instance_label(entry.info.name),
            entry.properties.get("version", "-"),
        )
        await broadcast

    async def _unregister(self, combination: str) -> None:
        with self._names_lock:
            old = self._registered.pop(combination)
        await (await self._zc.async_unregister_service(old.info))
        log.info("mDNS: withdrew %s (%s)", combination, instance_label(old.info.name))

    async def _withdraw_all(self, goodbye: bool = True) -> None:
        async with self._lock:
            if goodbye:
                await asyncio.gather(*(self._unregister(c) for c in list(self._registered)))
                return
            with self._names_lock:
                for entry in self._registered.values():
                    self._zc.registry.async_remove(entry.info)
                self._registered.clear()

    def _rivals(self, registered: _Registered) -> list[str]:
        """Manifest URLs of other providers whose TXT sits under our instance name."""
        from zeroconf import DNSText
        from zeroconf.const import _CLASS_IN, _TYPE_TXT

        own = registered.properties["manifest"]
        urls = []
        for record in self._zc.cache.async_all_by_details(
            registered.info.name, _TYPE_TXT, _CLASS_IN
        ):
            if not isinstance(record, DNSText) or record.is_expired(_now_millis()):
                continue
            url = (decode_txt_wire(record.text).get(b"manifest") or b"").decode("ascii", "replace")
            if url and url != own and url not in urls:
                urls.append(url)
        return urls

    async def _settle_ties(self, combinations: list[str]) -> list[str]:
        """One round of tie detection; returns the combinations this provider renamed."""
        losers: list[str] = []
        keepers: list[str] = []
        for combination in combinations:
            entry = self._registered.get(combination)
            rivals = self._rivals(entry) if entry is not None else []
            if entry is None or not rivals:
                continue
            keep = tie_keeper(entry.properties["manifest"], rivals)
            (keepers if keep else losers).append(combination)
            log.info(
                "mDNS: %s is also claimed by %s; %s",
                instance_label(entry.info.name),
                ", ".join(rivals),
                "keeping it" if keep else "renaming",
            )
        for combination in losers:
            entry = self._registered[combination]
            await self._unregister(combination)
            await self._register(combination, entry.offer, entry.properties)
        if keepers:
            # The loser's goodbye also withdrew the PTR record we share with it: say it again.
            await asyncio.sleep(KEEPER_REANNOUNCE_DELAY)
            for combination in keepers:
                entry = self._registered.get(combination)
                if entry is not None:
                    await (await self._zc.async_update_service(entry.info))
        return losers

    async def _resolve_ties(self, combinations: list[str]) -> None:
        """Right after registering: look for a provider that won the same probe as we did."""
        for _ in range(MAX_TIE_ROUNDS):
            await asyncio.sleep(TIE_CHECK_DELAY + random.uniform(0, 0.25))
            combinations = await self._settle_ties(combinations)
            if not combinations:
                return

    async def _watch_ties(self) -> None:
        """Later ties: two network segments joined, or a provider whose link came up late.

        Our caches fill with other providers' answers whenever any client browses, so a cheap
        periodic look at the cache finds a second holder of one of our names.
        """
        while True:
            await asyncio.sleep(self.tie_watch_interval * random.uniform(1.0, 1.2))
            async with self._lock:
                await self._settle_ties(list(self._registered))


def _now_millis() -> float:
    from zeroconf import current_time_millis

    return current_time_millis()


def _log_failure(future: concurrent.futures.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("mDNS: advertising failed: %s", future.exception())
