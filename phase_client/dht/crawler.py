"""Record lookup: the union of verified provider records held by the k nodes closest to a key.

The stock ``ValueSpiderCrawl`` stops at the first round that returns any value and keeps the most
common answer of at most alpha nodes: with several providers per key that loses all but one, and
with replicas that disagree it answers differently run to run. Here the lookup walks to the k
closest live nodes (the stock node crawl) and asks every node that answers the walk, as soon as it
answers, for every page of records it holds; each record is verified and the newest per provider
kept. Results gathered so far survive a timeout of the caller (``found`` fills as replies come).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from kademlia.crawling import NodeSpiderCrawl
from kademlia.node import Node

from . import records
from .protocol import RecordProtocol
from .records import ProviderRecord

MAX_SEEN = 4096  # bounds the memory a lookup spends remembering records it has checked


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
    ) -> None:
        super().__init__(protocol, Node(digest), peers, ksize, alpha)
        self.digest = digest
        self.clock = clock
        self.found: dict[str, ProviderRecord] = {}
        self.answered = 0  # nodes that answered a find_records
        self.invalid = 0  # records that failed verification
        self.first = asyncio.Event()  # set when the first valid record arrives
        self._fetched: set[bytes] = set()
        self._seen: set[bytes] = set()  # wire records already judged: replicas send equal bytes
        self._fetches: list[asyncio.Future[None]] = []

    def offer(self, raws: list[object]) -> None:
        now = self.clock()
        for raw in raws:
            if isinstance(raw, bytes):
                if raw in self._seen:
                    continue
                if len(self._seen) < MAX_SEEN:
                    self._seen.add(raw)
            record = records.try_parse(raw, now, expected_digest=self.digest)
            if record is None:
                self.invalid += 1
                continue
            current = self.found.get(record.peer_id)
            if current is None or record.newer_than(current):
                self.found[record.peer_id] = record
            self.first.set()

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

    def _start_fetch(self, node: Node) -> None:
        if node.id not in self._fetched:
            self._fetched.add(node.id)
            self._fetches.append(asyncio.ensure_future(self._fetch(node)))

    async def _nodes_found(self, responses: dict[bytes, tuple[bool, object]]) -> list[Node]:
        # Ask every node that answers the walk for its records at once, instead of after the
        # walk: records arrive early (a caller's timeout keeps them), and the k closest -- all of
        # which the walk contacts -- are covered.
        for peer_id, (ok, _) in responses.items():
            node = self.nearest.get_node(peer_id)
            if ok and node is not None:
                self._start_fetch(node)
        return await super()._nodes_found(responses)  # type: ignore[no-any-return]

    async def find_records(self) -> list[ProviderRecord]:
        try:
            for node in await self.find():
                self._start_fetch(node)
            await asyncio.gather(*self._fetches)
        finally:
            for fetch in self._fetches:
                fetch.cancel()
        return self.result()

    def result(self) -> list[ProviderRecord]:
        return records.union(self.found.values(), self.clock())
