"""``DhtAdvertiser``: publish a signed provider record for every offer, and keep it alive.

The DHT half of ``plasmd serve``'s advertisers (the ``Advertiser`` protocol of
``provider/advertise.py``); the DHT itself is ``phase_client/dht/``. A DHT node runs
on its own asyncio loop in its own thread; ``start`` returns once the UDP port is bound (so a busy
port is reported at once), then the thread bootstraps and publishes. Records are republished on
start, every ``republish`` seconds (well inside their ``ttl``) and whenever ``update`` changes the
offers; ``stop`` ends republishing, saves the routing state (if asked) and closes the socket. A
withdrawn offer is not republished and vanishes from the DHT when its record expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from ..dht import records
from ..dht.node import DEFAULT_RPC_TIMEOUT, DhtNode, read_state
from ..dht.storage import wall_clock
from ..errors import UsageError
from ..keys import SigningKey
from .advertise import Offer

log = logging.getLogger(__name__)

DEFAULT_DHT_PORT = 4001  # the seed's [dht] port
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


class DhtAdvertiser:
    name = "dht"

    def __init__(
        self,
        identity: SigningKey,
        provider_name: str,
        port: int | None = None,
        bootstrap: Sequence[tuple[str, int]] = (),
        ttl: float = records.DEFAULT_TTL,
        republish: float | None = None,
        listen_host: str = "0.0.0.0",
        state_file: str | Path | None = None,
        rpc_timeout: float = DEFAULT_RPC_TIMEOUT,
        clock: Callable[[], int] = wall_clock,
        republish_interval: float | None = None,  # the name of the config key: same meaning
    ) -> None:
        republish = republish or republish_interval or min(records.DEFAULT_REPUBLISH, ttl / 2)
        if not 0 < republish < ttl:
            raise UsageError(
                f"DHT republish interval ({republish} s) must be below the TTL ({ttl})"
            )
        self.identity = identity
        self.provider_name = provider_name[: records.MAX_NAME]
        self.port = DEFAULT_DHT_PORT if port is None else port
        self.bootstrap = list(bootstrap)
        self.ttl = int(ttl)
        self.republish = republish
        self.listen_host = listen_host
        self.state_file = Path(state_file) if state_file else None
        self.clock = clock
        self.node = DhtNode(rpc_timeout=rpc_timeout, clock=clock)
        self.rounds = 0  # completed publish rounds
        self.accepted: dict[str, int] = {}  # combination -> nodes that took its record last round
        self.published = 0  # records stored on at least one node, over all rounds
        self._said: set[str] = set()  # repeating warnings already logged
        self._offers: list[Offer] = []
        self._last_stamp: int | None = None
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._main: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def bound_port(self) -> int:
        return int(self.node.port or 0)

    # --- the Advertiser protocol ------------------------------------------------------------
    def start(self, offers: Sequence[Offer]) -> None:
        with self._lock:
            self._offers = list(offers)
        self._thread = threading.Thread(target=self._run, name="dht-advertiser", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise UsageError("DHT node did not start")
        if self._error is not None:
            self._thread.join(STOP_TIMEOUT)
            raise UsageError(
                f"cannot listen for DHT on {self.listen_host}:{self.port}: {self._error}"
            )

    def update(self, offers: Sequence[Offer]) -> None:
        with self._lock:
            self._offers = list(offers)
        if self._loop is not None and self._wake is not None:
            with contextlib.suppress(RuntimeError):  # already stopped: nothing to republish
                self._loop.call_soon_threadsafe(self._wake.set)

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._begin_shutdown)
            self._thread.join(STOP_TIMEOUT)

    def records_held(self) -> int:
        """Records this node holds (its own and other providers')."""
        return int(self.node.storage.size)

    def wait_rounds(self, count: int, timeout: float) -> bool:
        """Block until ``count`` publish rounds have completed (tests, diagnostics)."""
        with self._changed:
            return self._changed.wait_for(lambda: self.rounds >= count, timeout)

    # --- the thread -------------------------------------------------------------------------
    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self.node.listen(self.port, self.listen_host))
        except OSError as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._loop = loop
        self._wake = asyncio.Event()
        self._main = loop.create_task(self._serve())
        log.info(
            "DHT node listening on %s:%d (peer %s)",
            self.listen_host,
            self.bound_port,
            self.identity.public.peer_id,
        )
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _begin_shutdown(self) -> None:
        if self._main is not None:
            self._main.cancel()
        assert self._loop is not None
        self._loop.create_task(self._finish())

    async def _finish(self) -> None:
        if self._main is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._main
        if self.state_file is not None:
            self._save_state()
        self.node.stop()
        asyncio.get_running_loop().stop()

    async def _serve(self) -> None:
        assert self._wake is not None
        await self._join()
        while True:
            if not self.node.protocol.router.find_neighbors(self.node.node) and self.bootstrap:
                await self._join()  # nobody answered before: try again each round
            await self._publish_all()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.republish)
            self._wake.clear()

    async def _join(self) -> None:
        contacts = list(self.bootstrap)
        if self.state_file is not None:
            contacts += read_state(self.state_file)[1]
        if not contacts:
            return
        found = await self.node.bootstrap(contacts)
        if found:
            log.info("DHT: joined through %d bootstrap contact(s)", len(contacts))
        else:  # tried again every round: said once until something changes
            self._say(logging.WARNING, f"DHT: no bootstrap node answered ({len(contacts)} tried)")

    async def _publish_all(self) -> None:
        with self._lock:
            offers = list(self._offers)
        now = self.clock()
        self._last_stamp = records.next_timestamp(now, self._last_stamp)
        accepted: dict[str, int] = {}
        for offer in offers:
            try:
                record = records.make_record(
                    self.identity,
                    records.dht_key(offer.channel, offer.arch),
                    offer.manifest_url,
                    self.provider_name,
                    offer.version,
                    now=self._last_stamp,
                    ttl=self.ttl,
                )
            except records.RecordError as exc:
                log.warning("DHT: cannot advertise %s: %s", offer.combination, exc)
                continue
            count = await self.node.set(record.key, record)
            accepted[offer.combination] = count
        published = {c: n for c, n in accepted.items() if n}
        alone = sorted(c for c, n in accepted.items() if not n)
        for combination, count in sorted(published.items()):
            # A republish that changes nothing is DEBUG: INFO is for news.
            level = logging.INFO if self.accepted.get(combination) != count else logging.DEBUG
            log.log(level, "DHT: published %s to %d node(s)", combination, count)
        if alone:
            self._say(
                logging.WARNING,
                f"DHT: {', '.join(alone)} held only by this node (no peer accepted "
                f"{'it' if len(alone) == 1 else 'them'})",
            )
        elif published:
            self._said.clear()
        with self._changed:
            self.published += len(published)
            self.accepted = accepted
            self.rounds += 1
            self._changed.notify_all()
        if self.state_file is not None:
            self._save_state()

    def _say(self, level: int, message: str) -> None:
        """Log ``message`` once; the same line again only at DEBUG (it repeats every round,
        for every key, while nothing changes). Forgotten once publishing succeeds."""
        if message in self._said:
            log.debug("%s (again)", message)
            return
        self._said.add(message)
        log.log(level, "%s", message)

    def _save_state(self) -> None:
        assert self.state_file is not None
        try:
            self.node.save_state(self.state_file)
        except OSError as exc:
            log.warning("DHT: cannot save routing state to %s: %s", self.state_file, exc)
