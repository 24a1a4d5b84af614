"""Record lookup: the union of verified provider records held by the k nodes closest to a key.

The stock ``ValueSpiderCrawl`` stops at the first round that returns any value and keeps the most
common answer of at most alpha nodes: with several providers per key that loses all but one, and
with replicas that disagree it answers differently run to run. Here the lookup walks to the k
closest live nodes (without the stock crawl's lockstep rounds). Each step is one
``get_providers`` message, answered with closer nodes and the records held (like libp2p's
GET_PROVIDERS), so one pass finds both; only a node holding more records than fit beside its
nodes is then paged through with ``find_records``. Each record is verified and the newest per
provider kept. Results gathered so far survive a caller's timeout (``found`` fills as they come).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from kademlia.crawling import NodeSpiderCrawl
from kademlia.node import Node

from . import records
from .protocol import RecordProtocol
from .records import ProviderRecord

MAX_SEEN = 4096  # bounds the memory a lookup spends remembering records it has checked
# Holders (nodes that answered with at least one valid record) after which a lookup for every
# provider stops walking. Each provider stores its record on the k closest nodes, so every
# holder near the key has every record; the union of three covers a holder that missed a
# republish or withholds some (a withheld record is a denial only: nothing unverified is used).
QUORUM = 3
MAX_WALK_QUERIES = 1000  # bounds a walk's iterations (each sends or waits for at least one query)


class RecordCrawl(NodeSpiderCrawl):
    protocol: RecordProtocol

    def __init__(
        self,
        protocol: RecordProtocol,
        digest: bytes,
        peers: list[Node],
        ksize: int,
        alpha: int,
        clock: Callable[[], int],
        quorum: int | None = QUORUM,
    ) -> None:
        super().__init__(protocol, Node(digest), peers, ksize, alpha)
        self.quorum = quorum  # None: walk to the k closest whatever they hold
        self.holders = 0  # nodes that answered with at least one valid record
        self.digest = digest
        self.clock = clock
        self.found: dict[str, ProviderRecord] = {}
        self.answered = 0  # nodes that answered a find_records
        self.invalid = 0  # records that failed verification
        self.first = asyncio.Event()  # set when the first valid record arrives
        self._fetched: set[bytes] = set()
        self._seen: set[bytes] = set()  # wire records already judged: replicas send equal bytes
        self._valid: set[bytes] = set()  # those of them that were valid
        self._fetches: list[asyncio.Future[None]] = []

    def offer(self, raws: list[object]) -> int:
        """Verify and keep ``raws``; returns how many of them are valid records."""
        now = self.clock()
        valid = 0
        for raw in raws:
            if isinstance(raw, bytes):
                if raw in self._seen:
                    valid += raw in self._valid
                    continue
                if len(self._seen) < MAX_SEEN:
                    self._seen.add(raw)
            record = records.try_parse(raw, now, expected_digest=self.digest)
            if record is None:
                self.invalid += 1
                continue
            valid += 1
            if isinstance(raw, bytes) and raw in self._seen:
                self._valid.add(raw)
            current = self.found.get(record.peer_id)
            if current is None or record.newer_than(current):
                self.found[record.peer_id] = record
            self.first.set()
        return valid

    async def _fetch(self, node: Node) -> None:
        ok, reply = await self.protocol.call_find_records(node, self.digest, 0)
        if not ok:
            return
        self.answered += 1
        self.offer(reply["records"])
        more = range(1, self.protocol.page_limit(reply["pages"]))
        replies = await asyncio.gather(
            *(self.protocol.call_find_records(node, self.digest, page) for page in more)
        )
        for ok, reply in replies:
            if ok:
                self.offer(reply["records"])

    @property
    def quorum_met(self) -> bool:
        return self.quorum is not None and self.holders >= self.quorum

    def _took(self, node: Node, raws: list[object], total: int) -> None:
        """``node``'s records that came with its nodes; page through the rest if some did not."""
        if self.offer(raws):
            self.holders += 1
        if len(raws) >= total:
            self.answered += 1  # a node paged through is counted by its find_records instead
            self._fetched.add(node.id)
        else:
            self._start_fetch(node)

    def _start_fetch(self, node: Node) -> None:
        if node.id not in self._fetched:
            self._fetched.add(node.id)
            self._fetches.append(asyncio.ensure_future(self._fetch(node)))

    async def walk(self) -> list[Node]:
        """Iterative lookup without lockstep rounds; returns the k closest nodes that answered.

        The stock crawl sends alpha queries and waits for all of them, so every round with one
        dead peer costs a full RPC timeout. Here a new query goes out as soon as any answer
        arrives, and a query unanswered after ``soft_timeout`` stops counting against alpha, so
        dead peers delay the walk only when nothing else is left to ask. Every answer brings the
        node's records with its closer nodes (a caller's timeout keeps what arrived). The walk
        ends early once ``quorum`` holders have answered.
        """
        soft_timeout = max(0.05, self.protocol.wait_timeout / 4)
        pending: dict[asyncio.Future[Any], tuple[Node, float]] = {}
        loop = asyncio.get_running_loop()
        try:
            for _ in range(MAX_WALK_QUERIES):
                now = loop.time()
                slow = sum(1 for _, started in pending.values() if now - started > soft_timeout)
                for peer in self.nearest.get_uncontacted():
                    if len(pending) - slow >= self.alpha:
                        break
                    self.nearest.mark_contacted(peer)
                    query = asyncio.ensure_future(
                        self.protocol.call_get_providers(peer, self.digest)
                    )
                    pending[query] = (peer, now)
                if not pending:
                    break
                done, _ = await asyncio.wait(
                    pending, timeout=soft_timeout, return_when=asyncio.FIRST_COMPLETED
                )
                for answered in done:
                    peer, _ = pending.pop(answered)
                    ok, reply = answered.result()
                    if ok:
                        self.nearest.push([Node(*contact) for contact in reply["nodes"]])
                        self._took(peer, reply["records"], reply["total"])
                    else:
                        self.nearest.remove([peer.id])
                if self.quorum_met:
                    break
        finally:
            for unanswered in pending:
                unanswered.cancel()
        return list(self.nearest)

    async def find_records(self) -> list[ProviderRecord]:
        try:
            nodes = await self.walk()
            if not self.quorum_met:  # a whole walk: every node in it must have been asked
                for node in nodes:
                    self._start_fetch(node)
            await asyncio.gather(*self._fetches)
        finally:
            for fetch in self._fetches:
                fetch.cancel()
        return self.result()

    def result(self) -> list[ProviderRecord]:
        return records.union(self.found.values(), self.clock())
