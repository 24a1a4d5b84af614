"""Routing tables filled directly (tests/dht_simnet.py) are what kademlia builds from joins."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from kademlia.node import Node
from kademlia.routing import RoutingTable

from phase_client.dht import records
from phase_client.keys import SigningKey
from tests.dht_simnet import SimNetwork, prefilled_buckets

KEY = "/phase/stable/x86_64/manifest"
K = 20
T = TypeVar("T")


def run(coro: Awaitable[T], limit: float = 120) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, limit)

    return asyncio.run(bounded())


class Unreachable:
    """Stands in for a protocol: ``add_contact`` pings the head of a full bucket it keeps."""

    def __init__(self) -> None:
        self.pinged: list[Node] = []

    async def call_ping(self, node: Node) -> tuple[bool, None]:
        self.pinged.append(node)
        return False, None


def members(count: int, seed: int) -> list[Node]:
    rng = random.Random(seed)
    nodes = [
        Node(rng.getrandbits(160).to_bytes(20, "big"), "127.0.0.1", 1 + i) for i in range(count)
    ]
    return sorted(nodes, key=lambda n: n.long_id)


def check_table(table: RoutingTable, everyone: list[Node]) -> None:
    """Buckets tile the id space; every contact sits in the bucket get_bucket_for picks; a
    bucket holds all its range's members if they are k or fewer, else k; the own node's k
    nearest are all known."""
    buckets = table.buckets
    assert buckets[0].range[0] == 0 and buckets[-1].range[1] == 2**160
    for lower, upper in itertools.pairwise(buckets):
        assert upper.range[0] == lower.range[1] + 1
    own = table.node
    for index, bucket in enumerate(buckets):
        for contact in bucket.nodes.values():
            assert contact.id != own.id
            assert table.get_bucket_for(contact) == index
        in_range = [n for n in everyone if n.id != own.id and table.get_bucket_for(n) == index]
        assert len(bucket) == min(K, len(in_range))
    known = {c.id for b in buckets for c in b.nodes.values()}
    others = [n for n in everyone if n.id != own.id]
    nearest = heapq.nsmallest(K, others, key=own.distance_to)
    assert all(n.id in known for n in nearest)


def test_full_tables_have_the_buckets_add_contact_builds_from_every_member() -> None:
    everyone = members(400, seed=1)
    ids = [n.long_id for n in everyone]
    rng = random.Random(2)

    async def scenario() -> None:
        for own in rng.sample(everyone, 12):
            protocol = Unreachable()
            joined = RoutingTable(protocol, K, Node(own.id))
            for contact in rng.sample(everyone, len(everyone)):  # heard of, in random order
                if contact.id != own.id:
                    joined.add_contact(contact)
            await asyncio.sleep(0)  # let the pings add_contact started run
            filled = RoutingTable(Unreachable(), K, Node(own.id))
            filled.buckets = prefilled_buckets(filled, ids, everyone, rng, relaxed=True)
            assert [b.range for b in filled.buckets] == [b.range for b in joined.buckets]
            assert [len(b) for b in filled.buckets] == [len(b) for b in joined.buckets]
            check_table(filled, everyone)
            assert len(filled.buckets) > 12  # b = 5: far buckets split too

    run(scenario())


def test_prefilled_tables_have_one_bucket_per_prefix_length() -> None:
    everyone = members(1000, seed=3)
    ids = [n.long_id for n in everyone]
    rng = random.Random(4)
    for own in rng.sample(everyone, 20):
        table = RoutingTable(Unreachable(), K, Node(own.id))
        table.buckets = prefilled_buckets(table, ids, everyone, rng)
        check_table(table, everyone)
        # Only the bucket holding the own id splits: every other bucket is a sibling of its path.
        holding = [b for b in table.buckets if b.has_in_range(own)]
        assert len(holding) == 1
        assert 5 <= len(table.buckets) <= 10  # log2(1000 / 20) + a few
        assert 100 <= sum(len(b) for b in table.buckets) <= 170
    # A table of a node that is not a member (a client) holds the members only.
    stranger = Node(random.Random(5).getrandbits(160).to_bytes(20, "big"))
    table = RoutingTable(Unreachable(), K, stranger)
    table.buckets = prefilled_buckets(table, ids, everyone, rng)
    check_table(table, everyone)


def test_a_prefilled_network_publishes_and_finds_with_real_rpcs_only_after_the_build() -> None:
    async def scenario() -> None:
        async with SimNetwork(80, build="prefill", seed=6) as net:
            assert all(not node.protocol.sent for node in net.nodes)  # no join sent anything
            tables = [sum(len(b) for b in n.protocol.router.buckets) for n in net.nodes]
            assert min(tables) >= K
            now = int(time.time())
            urls = set()
            for index, node in enumerate(random.Random(7).sample(net.nodes, 2)):
                url = f"http://10.0.0.{index + 1}:8080/stable/x86_64/manifest.json"
                record = records.make_record(SigningKey.generate(), KEY, url, f"p{index}", "1", now)
                assert await node.set(KEY, record) >= K - 2  # stored by real STOREs
                urls.add(url)
            client = await net.join([net.nodes[11].address], client=True)
            found: Any = await client.get(KEY, timeout=20)
            assert {r.url for r in found} == urls

    run(scenario())
