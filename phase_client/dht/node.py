"""A Kademlia node (``kademlia.network.Server`` subclass) that stores and finds provider records.

Changes from the stock server:
- ``set``/``set_digest`` publish one signed provider record to the k closest nodes (each of them
  validates and merges it); ``get`` returns the verified union of records from the k closest.
- The RPC timeout is configurable (stock: 5 s per dead peer) and bootstrap pings every contact
  in parallel; host names are resolved first (the stock code accepts IP addresses only).
- ``refresh_table`` keeps its interval (the stock code falls back to 3600 s after the first run)
  and does not republish stored values: every provider republishes its own record, and new nodes
  near a key receive its records from their neighbours (``welcome_if_new``).
- Routing state is saved as JSON, atomically (the stock code pickles, and unpickling a file is
  code execution).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kademlia.crawling import NodeSpiderCrawl
from kademlia.network import Server
from kademlia.node import Node

from ..fsutil import atomic_write
from . import records
from .crawler import QUORUM, RecordCrawl
from .protocol import RecordProtocol
from .records import ProviderRecord, RecordError
from .storage import RecordStorage, wall_clock

log = logging.getLogger(__name__)

DEFAULT_RPC_TIMEOUT = 2.0
DEFAULT_REFRESH_INTERVAL = 3600.0
MAX_STATE_BYTES = 64 * 1024


class DhtNode(Server):
    protocol_class = RecordProtocol
    protocol: RecordProtocol
    storage: RecordStorage

    def __init__(
        self,
        ksize: int = 20,
        alpha: int = 3,
        node_id: bytes | None = None,
        storage: RecordStorage | None = None,
        rpc_timeout: float = DEFAULT_RPC_TIMEOUT,
        refresh_interval: float = DEFAULT_REFRESH_INTERVAL,
        clock: Callable[[], int] = wall_clock,
        client: bool = False,
    ) -> None:
        super().__init__(ksize, alpha, node_id, storage or RecordStorage(clock=clock))
        self.client = client  # lookup only: never enters other nodes' routing tables
        self.rpc_timeout = rpc_timeout
        self.refresh_interval = refresh_interval
        self.clock = clock
        self.port: int | None = None

    def _create_protocol(self) -> RecordProtocol:
        return RecordProtocol(
            self.node, self.storage, self.ksize, self.rpc_timeout, client=self.client
        )

    async def listen(self, port: int, interface: str = "0.0.0.0") -> None:
        """Bind UDP ``interface``:``port``. ``::`` serves both stacks (IPv4 peers as
        ``::ffff:a.b.c.d``), whatever the system's ``net.ipv6.bindv6only`` says."""
        if interface != "::":
            await super().listen(port, interface)
        else:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            try:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                sock.bind(("::", port))
            except OSError:
                sock.close()
                raise
            loop = asyncio.get_running_loop()
            self.transport, self.protocol = await loop.create_datagram_endpoint(
                self._create_protocol, sock=sock
            )
            self.refresh_table()
        assert self.transport is not None
        self.port = int(self.transport.get_extra_info("sockname")[1])

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def refresh_table(self, interval: float | None = None) -> None:
        interval = self.refresh_interval if interval is None else interval
        self.protocol.spawn(self._refresh_table())
        loop = asyncio.get_event_loop()
        self.refresh_loop = loop.call_later(interval, self.refresh_table, interval)

    async def _refresh_table(self) -> None:
        crawls = []
        for node_id in self.protocol.get_refresh_ids():
            node = Node(node_id)
            nearest = self.protocol.router.find_neighbors(node, self.alpha)
            crawls.append(NodeSpiderCrawl(self.protocol, node, nearest, self.ksize, self.alpha))
        await asyncio.gather(*(c.find() for c in crawls))
        self.storage.cull()

    # --- joining ----------------------------------------------------------------------------
    async def bootstrap(self, addrs: Sequence[tuple[str, int]]) -> list[Node]:
        resolved = await resolve_all(addrs, self._family())
        if not resolved:
            return []
        found: list[Node] = await super().bootstrap(resolved)
        if found and not self.client:
            await self.refresh_buckets()
        return found

    async def refresh_buckets(self) -> None:
        """Look up a random id in every bucket's range (the paper's join, section 2.3).

        The stock bootstrap only looks up the node's own id, so it knows few contacts far from
        itself, and answers lookups for distant keys with poor contacts: on 2000-3000 loopback
        nodes, 3-6 of 30 lookups got stuck away from the nodes holding the key (0 of 30 with
        this). A lookup-only client does not need it: it never answers anyone.
        """
        crawls = []
        for bucket in self.protocol.router.buckets:
            if bucket.has_in_range(self.node):
                continue
            low, high = bucket.range
            target = Node(random.randint(low, min(high, 2**160 - 1)).to_bytes(20, "big"))
            nearest = self.protocol.router.find_neighbors(target, self.alpha)
            crawls.append(NodeSpiderCrawl(self.protocol, target, nearest, self.ksize, self.alpha))
        await asyncio.gather(*(crawl.find() for crawl in crawls))

    async def bootstrap_node(self, addr: tuple[str, int]) -> Node | None:
        ok, node_id = await self.protocol.call_ping_address(addr)
        return Node(node_id, addr[0], addr[1]) if ok else None

    def _family(self) -> int:
        if self.transport is None:
            return socket.AF_INET
        sock = self.transport.get_extra_info("socket")
        return int(sock.family) if sock is not None else socket.AF_INET

    # --- records ----------------------------------------------------------------------------
    async def set(self, key: str, value: ProviderRecord | bytes) -> int:
        """Publish one record under ``key``; returns how many nodes accepted it."""
        record = self._record(value)
        if record.key != key:
            raise RecordError(f"record is for {record.key}, not {key}")
        return await self.set_digest(records.key_digest(key), record.raw)

    async def set_digest(self, dkey: bytes, value: Any) -> int:
        record = self._record(value, dkey)
        # The publisher always keeps its own record, closest or not: with few nodes the k
        # closest can be all others, and if they die the record must not die with them (a
        # client bootstrapping through this node still finds it).
        self.storage.put(dkey, record.raw, local=True)
        target = Node(dkey)
        nearest = self.protocol.router.find_neighbors(target)
        if not nearest:
            return 0
        nodes = await NodeSpiderCrawl(self.protocol, target, nearest, self.ksize, self.alpha).find()
        replies = await asyncio.gather(
            *(self.protocol.call_store(n, dkey, record.raw) for n in nodes)
        )
        return sum(1 for ok, accepted in replies if ok and accepted is True)

    def _record(self, value: ProviderRecord | bytes, dkey: bytes | None = None) -> ProviderRecord:
        raw = value.raw if isinstance(value, ProviderRecord) else value
        return records.parse_record(raw, self.clock(), expected_digest=dkey)

    async def get(
        self,
        key: str,
        timeout: float | None = None,
        first_only: bool = False,
        quorum: int | None = QUORUM,
    ) -> list[ProviderRecord]:
        """Verified union of the records under ``key`` (newest first); partial on timeout.

        ``first_only``: return as soon as any valid record has arrived (a boot client that
        wants one provider now rather than all of them). ``quorum``: stop once that many
        nodes have answered with records (``crawler.QUORUM``); None walks to the k closest.
        """
        digest = records.key_digest(key)
        nearest = self.protocol.router.find_neighbors(Node(digest))
        crawl = RecordCrawl(
            self.protocol, digest, nearest, self.ksize, self.alpha, self.clock, quorum
        )
        crawl.offer([r.raw for r in self.storage.records(digest)])
        self.last_crawl = crawl
        if not nearest or (first_only and crawl.found):
            return crawl.result()
        lookup = asyncio.ensure_future(crawl.find_records())
        waiters: set[asyncio.Future[Any]] = {lookup}
        if first_only:
            waiters.add(asyncio.ensure_future(crawl.first.wait()))
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        if not lookup.done() or lookup.cancelled():
            log.debug("DHT lookup of %s cut short; %d record(s) so far", key, len(crawl.found))
        return crawl.result()

    # --- routing state ----------------------------------------------------------------------
    def save_state(self, fname: str | os.PathLike[str]) -> None:
        neighbors = self.bootstrappable_neighbors()
        if not neighbors:
            log.debug("no known neighbours; not writing %s", fname)
            return
        state = {"id": self.node.id.hex(), "neighbors": [[ip, port] for ip, port in neighbors]}
        atomic_write(fname, (json.dumps(state, sort_keys=True) + "\n").encode(), mode=0o644)

    @classmethod
    async def load_state(
        cls, fname: str | os.PathLike[str], port: int, interface: str = "0.0.0.0", **kwargs: Any
    ) -> DhtNode:
        node_id, neighbors = read_state(fname)
        server = cls(node_id=node_id, **kwargs)
        await server.listen(port, interface)
        if neighbors:
            await server.bootstrap(neighbors)
        return server


async def _resolve(host: str, port: int, family: int) -> list[tuple[str, int]]:
    loop = asyncio.get_running_loop()
    if family == socket.AF_INET6:  # a dual-stack socket reaches IPv4 contacts too
        family = socket.AF_UNSPEC
    try:
        infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError):
        log.warning("cannot resolve DHT bootstrap host %s", host)
        return []
    return [(str(info[4][0]), int(info[4][1])) for info in infos]


async def resolve_all(
    addrs: Sequence[tuple[str, int]], family: int = socket.AF_INET
) -> list[tuple[str, int]]:
    """Bootstrap contacts as (ip, port) of ``family`` (for ``AF_INET6``, the socket of a
    dual-stack node, of both families): host names resolved, duplicates dropped."""
    found = await asyncio.gather(*(_resolve(h, p, family) for h, p in addrs))
    unique: dict[tuple[str, int], None] = {}
    for group in found:
        for addr in group:
            unique.setdefault(addr, None)
    return list(unique)


def read_state(fname: str | os.PathLike[str]) -> tuple[bytes | None, list[tuple[str, int]]]:
    """(node id, neighbours) from a state file; (None, []) if it is missing or unreadable."""
    try:
        with Path(fname).open("rb") as handle:
            data = json.loads(handle.read(MAX_STATE_BYTES))
        node_id = bytes.fromhex(data["id"])
        neighbors = [(str(ip), int(port)) for ip, port in data["neighbors"]][:100]
    except FileNotFoundError:
        return None, []
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable DHT state file %s: %s", fname, exc)
        return None, []
    if len(node_id) != 20:
        return None, neighbors
    return node_id, neighbors
