"""Announce ``_phase-image._tcp`` service instances and keep them announced.

python-zeroconf does the protocol: probing, conflict renaming (``-2``, ``-3`` ...), announcing,
answering queries (multicast and legacy unicast) and goodbye packets. ``MdnsRegistrar`` decides
what to register and when, in zeroconf's own event-loop thread, so ``start``/``update``/``stop``
return quickly to the caller (``provider/advertise_mdns.py`` turns plasmd's offers into
``Announcement``s):

- the zeroconf session follows this machine's addresses (rescanned every few seconds: DHCP may
  come late or change the lease), and the caller composes the announcements for the addresses
  in use (a URL names one of them);
- registrations run concurrently (each one probes for ~1.2 s);
- a changed TXT record is updated in place (same instance name);
- a withdrawn instance, and everything at ``stop``, is unregistered with goodbye packets;
- two providers that probe one name at the same instant can both win the probe. After each
  registration we look for another provider's TXT under our name; both sides apply the same
  rule (``tie_keeper`` on the ``manifest`` URLs), the loser re-registers and takes the next free
  ``-N`` name, the keeper re-announces (the loser's goodbye for the shared PTR record also
  dropped ours).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
import socket
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

from zeroconf import ServiceInfo, Zeroconf

from . import _zeroconf
from .browse import ip_version_of
from .interfaces import choose_addresses, zeroconf_interfaces
from .records import (
    SERVICE_TYPE,
    decode_txt_wire,
    full_service_name,
    instance_label,
    mdns_hostname,
    strip_zone,
    tie_keeper,
)

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class Announcement:
    """One service instance to announce."""

    key: str  # the caller's name for it, in log lines and instance_names(): "stable/arm64"
    label: str  # the instance label before any conflict suffix: "phase-stable-arm64"
    port: int
    properties: dict[str, str]  # the TXT record (``records.build_txt``), with "manifest" and
    # "version" read by the tie rule and the log lines


# The announcements for the local addresses in use, IPv4 and IPv6, link-local ones with their
# zone (called in zeroconf's loop thread).
Compose = Callable[[list[str]], list[Announcement]]


class RegistrarOptions(TypedDict, total=False):
    """``MdnsRegistrar``'s settings, for callers that pass them through."""

    interfaces: list[str] | None  # interface names or addresses; None: every non-loopback
    hostname: str | None  # the machine's host name (default: socket.gethostname())
    ttl: int
    rescan_interval: float
    tie_watch_interval: float


@dataclass
class _Registered:
    announcement: Announcement
    info: ServiceInfo  # whose .name zeroconf may change (conflict renaming)

    @property
    def properties(self) -> dict[str, str]:
        return self.announcement.properties


class MdnsRegistrar:
    """A zeroconf session on this machine's addresses that keeps a set of instances announced."""

    def __init__(
        self,
        interfaces: list[str] | None = None,
        hostname: str | None = None,
        ttl: int = RECORD_TTL,
        rescan_interval: float = RESCAN_INTERVAL,
        tie_watch_interval: float = TIE_WATCH_INTERVAL,
    ) -> None:
        self.interfaces = interfaces
        self.hostname = mdns_hostname(hostname or socket.gethostname())
        self.ttl = ttl
        self.rescan_interval = rescan_interval
        self.tie_watch_interval = tie_watch_interval
        self._addresses: list[str] = []
        self._compose: Compose = lambda addresses: []
        self._zc: Zeroconf | None = None
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

    # -- start / update / stop ---------------------------------------------------------------

    def start(self, compose: Compose) -> None:
        self._compose = compose
        self._rescan()
        self._rescanner = threading.Thread(
            target=self._rescan_loop, name="mdns-rescan", daemon=True
        )
        self._rescanner.start()

    def update(self, compose: Compose) -> None:
        with self._session_lock:
            self._compose = compose
            if self._zc is not None:
                self._submit(self._zc, self._reconcile(self._zc, compose))

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
        pairs = choose_addresses(self.interfaces)
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
                    log.warning("mDNS: no interface with a non-loopback IP address yet")
                    self._warned_no_interface = True
                return
            self._addresses = addresses
            if addresses:
                self._open_session(pairs)

    def _open_session(self, pairs: list[tuple[str, str]]) -> None:
        zc = self._zc = self._open_zeroconf(zeroconf_interfaces(pairs))
        if zc is None:
            return
        self._lock = asyncio.Lock()
        where = ", ".join(f"{name} {addr}" for name, addr in pairs)
        log.info("mDNS: announcing %s as %s on %s", SERVICE_TYPE, self.hostname, where)
        self._submit(zc, self._reconcile(zc, self._compose))
        self._watch = _run(zc, self._watch_ties(zc))

    def _close_session(self, goodbye: bool = True) -> None:
        """Goodbye packets for everything (unless ``goodbye`` is False), then close the sockets."""
        zc = self._zc
        if zc is None:
            return
        if self._watch is not None:
            self._watch.cancel()
        self.wait_idle(STOP_TIMEOUT)
        try:
            future = _run(zc, self._withdraw_all(zc, goodbye))
            future.result(STOP_TIMEOUT)
        except (concurrent.futures.TimeoutError, RuntimeError) as exc:
            log.warning("mDNS: goodbye packets not all sent: %s", exc)
        finally:
            zc.close()
            self._zc = None
            with self._names_lock:
                self._registered.clear()

    # -- for status lines and the tests ------------------------------------------------------

    def wait_idle(self, timeout: float) -> bool:
        """Block until every pending start/update has finished (True) or ``timeout`` passes."""
        pending = list(self._pending)
        done, not_done = concurrent.futures.wait(pending, timeout=timeout)
        self._pending = [f for f in self._pending if f not in done]
        return not not_done

    def instance_names(self) -> dict[str, str]:
        """``{"stable/arm64": "phase-stable-arm64-2", ...}`` for what is registered now."""
        with self._names_lock:
            return {k: instance_label(r.info.name) for k, r in self._registered.items()}

    @property
    def addresses(self) -> list[str]:
        return list(self._addresses)

    # -- internals ---------------------------------------------------------------------------

    def _open_zeroconf(self, addresses: list[str]) -> Zeroconf | None:
        """Zeroconf with its own loop thread, even if the caller's thread runs an event loop."""
        box: dict[str, Any] = {}

        def create() -> None:  # a fresh thread has no running loop: zeroconf starts its own
            try:
                box["zc"] = Zeroconf(interfaces=addresses, ip_version=ip_version_of(addresses))
            except (OSError, RuntimeError) as exc:  # RuntimeError: no such IPv6 address
                box["error"] = exc

        thread = threading.Thread(target=create, name="mdns-open", daemon=True)
        thread.start()
        thread.join()
        if "error" in box:
            log.warning("mDNS: cannot open multicast sockets on %s: %s", addresses, box["error"])
            return None
        zc: Zeroconf = box["zc"]
        return zc

    def _submit(self, zc: Zeroconf, coro: Coroutine[Any, Any, None]) -> None:
        self._pending = [f for f in self._pending if not f.done()]
        future = _run(zc, coro)
        future.add_done_callback(_log_failure)
        self._pending.append(future)

    def _service_info(self, name: str, announcement: Announcement) -> ServiceInfo:
        return ServiceInfo(
            SERVICE_TYPE,
            name,
            port=announcement.port,
            properties=announcement.properties,
            server=self.hostname,
            parsed_addresses=[strip_zone(a) for a in self._addresses],  # A and AAAA
            host_ttl=self.ttl,
            other_ttl=self.ttl,
        )

    async def _reconcile(self, zc: Zeroconf, compose: Compose) -> None:
        async with self._lock:
            wanted = {a.key: a for a in compose(self._addresses)}
            gone = [k for k in self._registered if k not in wanted]
            changed = [
                k
                for k in wanted
                if k in self._registered and self._registered[k].properties != wanted[k].properties
            ]
            new = [k for k in wanted if k not in self._registered]
            await asyncio.gather(*(self._unregister(zc, k) for k in gone))
            await asyncio.gather(*(self._update(zc, wanted[k]) for k in changed))
            results = await asyncio.gather(
                *(self._register(zc, wanted[k]) for k in new), return_exceptions=True
            )
            for key, result in zip(new, results, strict=True):
                if isinstance(result, BaseException):
                    log.warning("mDNS: cannot register %s: %s", key, result)
            registered = [k for k in new if k in self._registered]
            if registered:
                await self._resolve_ties(zc, registered)

    async def _register(self, zc: Zeroconf, announcement: Announcement) -> None:
        info = self._service_info(full_service_name(announcement.label), announcement)
        broadcast = await zc.async_register_service(info, allow_name_change=True)
        await self._remember(_Registered(announcement, info), "advertising", broadcast)

    async def _update(self, zc: Zeroconf, announcement: Announcement) -> None:
        """New TXT under the same instance name (``update_service`` re-announces it)."""
        info = self._service_info(self._registered[announcement.key].info.name, announcement)
        broadcast = await zc.async_update_service(info)
        await self._remember(_Registered(announcement, info), "updated", broadcast)

    async def _remember(self, entry: _Registered, verb: str, broadcast: Awaitable[Any]) -> None:
        with self._names_lock:
            self._registered[entry.announcement.key] = entry
        log.info(
            "mDNS: %s %s as %s (version %s)",
            verb,
            entry.announcement.key,
            instance_label(entry.info.name),
            entry.properties.get("version", "-"),
        )
        await broadcast

    async def _unregister(self, zc: Zeroconf, key: str) -> None:
        with self._names_lock:
            old = self._registered.pop(key)
        await (await zc.async_unregister_service(old.info))
        log.info("mDNS: withdrew %s (%s)", key, instance_label(old.info.name))

    async def _withdraw_all(self, zc: Zeroconf, goodbye: bool = True) -> None:
        async with self._lock:
            if goodbye:
                await asyncio.gather(*(self._unregister(zc, k) for k in list(self._registered)))
                return
            with self._names_lock:
                for entry in self._registered.values():
                    _zeroconf.forget_registration(zc, entry.info)
                self._registered.clear()

    def _rivals(self, zc: Zeroconf, registered: _Registered) -> list[str]:
        """Manifest URLs of other providers whose TXT sits under our instance name."""
        own = registered.properties["manifest"]
        urls = []
        for text in _zeroconf.cached_txt(zc, registered.info.name):
            url = (decode_txt_wire(text).get(b"manifest") or b"").decode("ascii", "replace")
            if url and url != own and url not in urls:
                urls.append(url)
        return urls

    async def _settle_ties(self, zc: Zeroconf, keys: Sequence[str]) -> list[str]:
        """One round of tie detection; returns the keys of the instances this provider renamed."""
        losers: list[str] = []
        keepers: list[str] = []
        for key in keys:
            entry = self._registered.get(key)
            rivals = self._rivals(zc, entry) if entry is not None else []
            if entry is None or not rivals:
                continue
            keep = tie_keeper(entry.properties["manifest"], rivals)
            (keepers if keep else losers).append(key)
            log.info(
                "mDNS: %s is also claimed by %s; %s",
                instance_label(entry.info.name),
                ", ".join(rivals),
                "keeping it" if keep else "renaming",
            )
        for key in losers:
            entry = self._registered[key]
            await self._unregister(zc, key)
            await self._register(zc, entry.announcement)
        if keepers:
            # The loser's goodbye also withdrew the PTR record we share with it: say it again.
            await asyncio.sleep(KEEPER_REANNOUNCE_DELAY)
            for key in keepers:
                kept = self._registered.get(key)
                if kept is not None:
                    await (await zc.async_update_service(kept.info))
        return losers

    async def _resolve_ties(self, zc: Zeroconf, keys: list[str]) -> None:
        """Right after registering: look for a provider that won the same probe as we did."""
        for _ in range(MAX_TIE_ROUNDS):
            await asyncio.sleep(TIE_CHECK_DELAY + random.uniform(0, 0.25))
            keys = await self._settle_ties(zc, keys)
            if not keys:
                return

    async def _watch_ties(self, zc: Zeroconf) -> None:
        """Later ties: two network segments joined, or a provider whose link came up late.

        Our caches fill with other providers' answers whenever any client browses, so a cheap
        periodic look at the cache finds a second holder of one of our names.
        """
        while True:
            await asyncio.sleep(self.tie_watch_interval * random.uniform(1.0, 1.2))
            async with self._lock:
                await self._settle_ties(zc, list(self._registered))


def _run(zc: Zeroconf, coro: Coroutine[Any, Any, None]) -> concurrent.futures.Future[None]:
    """Run ``coro`` in ``zc``'s event-loop thread."""
    loop = zc.loop
    if loop is None:
        coro.close()
        raise RuntimeError("zeroconf has no event loop")
    return asyncio.run_coroutine_threadsafe(coro, loop)


def _log_failure(future: concurrent.futures.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("mDNS: advertising failed: %s", future.exception())
