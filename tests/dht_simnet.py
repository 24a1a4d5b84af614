"""A network of real DHT nodes on loopback in one process (tests/test_dht_network.py, bench/dht).

Every node is a full ``DhtNode`` with its own UDP socket on 127.0.0.1 (port chosen by the
kernel). By default (``build="join"``) nodes join through the first node in small concurrent
batches, like a network that grew over time. With ``build="prefill"`` or ``"full"`` no node
joins: every routing table is filled directly from the known set of members
(``fill_routing_tables``), which builds 10 000 nodes in seconds where joins take most of an
hour; from then on the nodes talk only through real RPCs (stores, lookups, timeouts).
``SimNetwork`` closes every socket on exit.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import random
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Literal

from kademlia.network import Server
from kademlia.node import Node
from kademlia.routing import KBucket, RoutingTable

from phase_client.dht.node import DhtNode

JOIN_BATCH = 10
ID_BITS = 160
# kademlia's RoutingTable.add_contact splits a full bucket that does not hold the node's own id
# while the depth of its contacts is not a multiple of this (the paper's section 4.2, b = 5).
SPLIT_DEPTH_MODULUS = 5
# How a network is built: every node joins through the first ("join"), or no node joins and every
# routing table is filled directly (fill_routing_tables): k contacts per bucket with one bucket
# per prefix length ("prefill"), or with buckets split as far as kademlia splits them when a node
# has heard of every member ("full").
Build = Literal["join", "prefill", "full"]
BUILDS: tuple[Build, ...] = ("join", "prefill", "full")


def contact_of(server: Server) -> Node:
    """``server`` as a routing-table contact: its id, and the address its socket is bound to."""
    host, port = server.transport.get_extra_info("sockname")[:2]
    return Node(server.node.id, str(host), int(port))


def nearest_members(ids: list[int], own: int, k: int) -> set[int]:
    """Indexes in ``ids`` (ascending) of the k members nearest ``own`` by XOR, ``own`` left out.

    They lie in the narrowest aligned range around ``own`` that holds k others (the range of the
    longest prefix of ``own`` that at least k other members share): anything in it is nearer
    ``own`` than anything outside it.
    """
    own_at = bisect.bisect_left(ids, own)
    first, end = 0, len(ids)
    for bits in range(1, ID_BITS + 1):  # lengthen the prefix while the range keeps k others
        low = own >> (ID_BITS - bits) << (ID_BITS - bits)
        high = low + 2 ** (ID_BITS - bits)
        start, stop = bisect.bisect_left(ids, low), bisect.bisect_left(ids, high)
        if stop - start - (1 if start <= own_at < stop and ids[own_at] == own else 0) < k:
            break
        first, end = start, stop
    others = (i for i in range(first, end) if ids[i] != own)
    return set(heapq.nsmallest(k, others, key=lambda i: ids[i] ^ own))


def prefilled_buckets(
    table: RoutingTable,
    ids: list[int],
    contacts: list[Node],
    rng: random.Random,
    relaxed: bool = False,
) -> list[KBucket]:
    """The k-buckets of ``table`` in a converged network, given every member.

    ``ids`` are all members' long ids, ascending, and ``contacts`` the members in that order
    (the table's own node among them or not). Buckets are built the way
    ``RoutingTable.add_contact`` builds them from the whole id space: a bucket offered more than
    k nodes splits at the midpoint of its range (as ``KBucket.split``; ``get_bucket_for`` puts the
    ids below the midpoint in the lower half) if its range holds the table's own id, or, with
    ``relaxed`` (kademlia's own rule once a node has heard of every member), if the depth of k
    of its members met first (``KBucket.depth``: their common prefix) is not a multiple of 5.
    A bucket with at most k members holds them all. One with more keeps the table's own k
    nearest nodes that fall in it (a joining node's lookup of its own id ends at them, and
    Kademlia keeps a node's closest subtree of k nodes complete) and others of its members,
    chosen at random (a live bucket keeps the first it met), up to k.

    Without ``relaxed`` that is the paper's table, one bucket per shared-prefix length: about
    k log2(N / k) contacts (131 at 1000 nodes, 198 at 10 000). With it, 650 and 940: the tables
    of nodes that have heard of every member, which joined nodes rarely do (the bench's joined
    networks average 114 contacts per phase node and 41 per stock node at 1000 nodes).
    """
    k = table.ksize
    own = table.node.long_id
    own_at = bisect.bisect_left(ids, own)
    if own_at == len(ids) or ids[own_at] != own:
        own_at = -1  # not a member: nothing to leave out
    nearest = nearest_members(ids, own, k)
    buckets: list[KBucket] = []
    # Ranges still to settle, as (low, high, first member, end of members), lowest range last.
    todo: list[tuple[int, int, int, int]] = [(0, 2**ID_BITS, 0, len(ids))]
    # Bounded: only a range of more than k members splits, and the ranges that split at one depth
    # are disjoint, so at most len(ids) / (k + 1) of them split per depth.
    for _ in range(2 * (ID_BITS + 1) * (len(ids) // (k + 1) + 1) + 1):
        if not todo:
            break
        low, high, first, end = todo.pop()
        bucket = KBucket(low, high, k)
        holds_own = first <= own_at < end
        members = end - first - (1 if holds_own else 0)
        if members <= k:
            chosen = [i for i in range(first, end) if i != own_at]
        else:
            # Members in a random order (the order the bucket met them), the own node left out;
            # enough of them for k that are not among the nearest, which come first.
            met = (first + p for p in rng.sample(range(members), min(members, 2 * k)))
            order = [i + (1 if holds_own and i >= own_at else 0) for i in met]
            if bucket.has_in_range(table.node):
                split = True
            else:
                depth = (
                    ID_BITS
                    - (min(ids[i] for i in order[:k]) ^ max(ids[i] for i in order[:k])).bit_length()
                )
                split = relaxed and depth % SPLIT_DEPTH_MODULUS != 0
            if split:
                middle = (low + high) // 2
                cut = bisect.bisect_left(ids, middle, first, end)
                todo.append((middle + 1, high, cut, end))
                todo.append((low, middle, first, cut))
                continue
            near = [i for i in sorted(nearest) if first <= i < end]
            chosen = (near + [i for i in order if i not in nearest])[:k]
        for index in chosen:
            bucket.add_node(contacts[index])
        buckets.append(bucket)
    if todo:
        raise RuntimeError("routing table did not settle")  # cannot happen: ranges halve
    return buckets


def fill_routing_tables(
    servers: Sequence[Server], rng: random.Random, relaxed: bool = False
) -> None:
    """Fill every listening ``server``'s routing table as in a converged network of them all.

    No RPC is sent: each table gets ``prefilled_buckets`` over all the servers, through
    kademlia's own ``KBucket.add_node`` (the contacts are ``Node`` objects shared between tables;
    nothing mutates them). Replacement caches stay empty.
    """
    contacts = sorted((contact_of(s) for s in servers), key=lambda c: c.long_id)
    ids = [c.long_id for c in contacts]
    for server in servers:
        table = server.protocol.router
        table.buckets = prefilled_buckets(table, ids, contacts, rng, relaxed)


class SimNetwork:
    def __init__(
        self,
        count: int,
        host: str = "127.0.0.1",
        factory: Callable[..., DhtNode] = DhtNode,
        build: Build = "join",
        seed: int | None = None,
        **node_options: Any,
    ) -> None:
        """``count`` nodes, built by ``build`` (see ``Build``); ``seed`` seeds the choice of
        contacts when tables are filled directly."""
        if build not in BUILDS:
            raise ValueError(f"build must be one of {BUILDS}, not {build!r}")
        self.count = count
        self.host = host
        self.factory = factory
        self.build = build
        self.seed = seed
        self.node_options = {"rpc_timeout": 0.5, **node_options}
        self.nodes: list[DhtNode] = []
        self.extra: list[DhtNode] = []  # clients and other late joiners, stopped on exit too
        self.stopped: set[int] = set()

    async def __aenter__(self) -> SimNetwork:
        try:
            for _ in range(self.count):
                node = self.factory(**self.node_options)
                await node.listen(0, self.host)
                self.nodes.append(node)
            if self.build == "join":
                boot = [self.nodes[0].address]
                for start in range(1, len(self.nodes), JOIN_BATCH):
                    batch = self.nodes[start : start + JOIN_BATCH]
                    await asyncio.gather(*(n.bootstrap(boot) for n in batch))
            else:
                fill_routing_tables(self.nodes, random.Random(self.seed), self.build == "full")
        except BaseException:
            self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        for node in self.nodes + self.extra:
            node.stop()

    def kill(self, index: int) -> None:
        """Stop node ``index`` abruptly (its socket closes; peers see timeouts)."""
        self.nodes[index].stop()
        self.stopped.add(index)

    def alive(self) -> list[DhtNode]:
        return [n for i, n in enumerate(self.nodes) if i not in self.stopped]

    async def join(
        self, via: list[tuple[str, int]], factory: Callable[..., DhtNode] | None = None, **kw: Any
    ) -> DhtNode:
        """A new node (e.g. a client) that bootstraps through ``via``."""
        node = (factory or self.factory)(**{**self.node_options, **kw})
        await node.listen(0, self.host)
        self.extra.append(node)
        await node.bootstrap(via)
        return node
