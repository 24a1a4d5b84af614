"""``Libp2pAdvertiser``: announce every offer on libp2p Kademlia (``/ipfs/kad/1.0.0``).

For each channel/arch the provider key is the sha2-256 multihash of
``/phase/{channel}/{arch}/manifest``; ADD_PROVIDER goes to the K closest peers a FIND_NODE walk
finds from the ``--bootstrap`` multiaddrs, with our identity key's peer id and our HTTP endpoint
as the multiaddr of our peer info (``/ip4/A/tcp/P/http``). Published at start, again every
``republish`` seconds (22 h: libp2p peers keep provider records 48 h and their addresses 24 h)
and whenever ``update`` changes what is offered; a round that reached nobody is retried sooner
(``RETRY_FIRST`` doubling up to ``RETRY_MAX``). A withdrawn offer is simply not republished: the
peers drop it when it expires.

Runs on its own asyncio loop in its own thread; no listening socket (we are a DHT client: the
peers only need our HTTP address, which our records carry).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import urllib.parse
from collections.abc import Sequence

from ..errors import UsageError
from ..hostport import host_from_url
from ..keys import SigningKey
from ..libp2p import client, keyscheme
from ..libp2p.multiaddr import Multiaddr, http_multiaddr
from .advertise import Offer

log = logging.getLogger(__name__)

REPUBLISH = 22 * 3600.0
RETRY_FIRST = 15.0
RETRY_MAX = 600.0
ROUND_TIMEOUT = 120.0
RPC_TIMEOUT = 5.0
STOP_TIMEOUT = 10.0


def announce_address(offer: Offer) -> Multiaddr:
    """An offer's manifest URL as a multiaddr: ``http://A:P/...`` -> ``/ip4/A/tcp/P/http``."""
    parts = urllib.parse.urlsplit(offer.manifest_url)
    host = host_from_url(parts.hostname or "")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return http_multiaddr(host.partition("%")[0], port, parts.scheme or "http")


def parse_bootstrap(texts: Sequence[str]) -> list[Multiaddr]:
    """Every multiaddr must parse and be a TCP address (a configuration error otherwise)."""
    out = []
    for text in texts:
        ma = Multiaddr.from_text(text.strip())
        if ma.tcp_target() is None:
            raise UsageError(f"libp2p bootstrap {text[:80]}: not a TCP multiaddr")
        out.append(ma)
    return out


class Libp2pAdvertiser:
    name = "libp2p"

    def __init__(
        self,
        identity: SigningKey,
        bootstrap: Sequence[Multiaddr],
        republish: float = REPUBLISH,
        rpc_timeout: float = RPC_TIMEOUT,
        round_timeout: float = ROUND_TIMEOUT,
    ) -> None:
        if not bootstrap:
            raise UsageError("libp2p advertising needs at least one bootstrap multiaddr")
        self.identity = identity
        self.bootstrap = list(bootstrap)
        self.republish = republish
        self.rpc_timeout = rpc_timeout
        self.round_timeout = round_timeout
        self.rounds = 0
        self.accepted: dict[str, int] = {}  # combination -> peers that took it last round
        self._offers: list[Offer] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    # --- the Advertiser protocol ------------------------------------------------------------
    def start(self, offers: Sequence[Offer]) -> None:
        with self._lock:
            self._offers = list(offers)
        self._thread = threading.Thread(target=self._run, name="libp2p-advertiser", daemon=True)
        self._thread.start()
        self._ready.wait(STOP_TIMEOUT)
        log.info(
            "libp2p: publishing as %s through %d bootstrap peer(s)",
            self.identity.public.peer_id,
            len(self.bootstrap),
        )

    def update(self, offers: Sequence[Offer]) -> None:
        with self._lock:
            changed = [self._key(o) for o in offers] != [self._key(o) for o in self._offers]
            self._offers = list(offers)
        if changed and self._loop is not None and self._wake is not None:
            with contextlib.suppress(RuntimeError):  # already stopped
                self._loop.call_soon_threadsafe(self._wake.set)

    def stop(self) -> None:
        if self._loop is None or self._thread is None or self._stop is None:
            return
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(STOP_TIMEOUT)

    def wait_rounds(self, count: int, timeout: float) -> bool:
        """Block until ``count`` publish rounds have completed (tests, diagnostics)."""
        with self._changed:
            return self._changed.wait_for(lambda: self.rounds >= count, timeout)

    # --- the thread -------------------------------------------------------------------------
    @staticmethod
    def _key(offer: Offer) -> tuple[str, str, str]:
        return (offer.channel, offer.arch, offer.manifest_url)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._ready.set()
        try:
            loop.run_until_complete(self._serve())
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        assert self._wake is not None and self._stop is not None
        retry = RETRY_FIRST
        while not self._stop.is_set():
            publish = asyncio.ensure_future(self._publish_all())
            stop = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait({publish, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not publish.done():
                publish.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await publish
                stop.cancel()
                return
            stop.cancel()
            reached = publish.result()
            wait = self.republish if reached else retry
            retry = RETRY_FIRST if reached else min(retry * 2, RETRY_MAX)
            wake = asyncio.ensure_future(self._wake.wait())
            stop = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait({wake, stop}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            wake.cancel()
            stop.cancel()
            self._wake.clear()

    async def _publish_all(self) -> bool:
        """One round; True when every offer reached at least one peer."""
        with self._lock:
            offers = list(self._offers)
        groups: dict[Multiaddr, list[Offer]] = {}
        for offer in offers:
            try:
                groups.setdefault(announce_address(offer), []).append(offer)
            except UsageError as exc:
                log.warning("libp2p: cannot announce %s: %s", offer.manifest_url, exc)
        accepted: dict[str, int] = {}
        for address, group in groups.items():
            keys = [keyscheme.provider_key(o.channel, o.arch) for o in group]
            try:
                result = await client.provide(
                    self.identity,
                    self.bootstrap,
                    keys,
                    [address],
                    timeout=self.round_timeout,
                    rpc_timeout=self.rpc_timeout,
                )
            except Exception as exc:  # a failed round is retried, never fatal to the server
                log.warning("libp2p: publish round failed: %s: %s", type(exc).__name__, exc)
                continue
            for offer, key in zip(group, keys, strict=True):
                accepted[offer.combination] = result.accepted.get(keyscheme.cid_text(key), 0)
            if not result.closest and result.stats.errors:
                log.warning("libp2p: no peer answered (%s)", result.stats.errors[0])
        for combination, count in sorted(accepted.items()):
            log.info("libp2p: %s provided to %d peer(s)", combination, count)
        with self._changed:
            self.accepted = accepted
            self.rounds += 1
            self._changed.notify_all()
        if not groups:
            return True  # nothing to announce: wait for a change, not for a retry
        return bool(accepted) and all(accepted.values())
