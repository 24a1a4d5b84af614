"""Provider records on a real Kademlia network: 20+ nodes on loopback UDP in one process."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import umsgpack

from phase_client.dht import records
from phase_client.dht.node import DhtNode
from phase_client.dht.protocol import RecordProtocol
from phase_client.dht.records import ProviderRecord
from phase_client.keys import SigningKey
from tests.dht_simnet import SimNetwork

KEY = "/phase/stable/arm64/manifest"
DIGEST = records.key_digest(KEY)
URL1 = "http://127.0.0.1:8081/stable/arm64/manifest.json"
URL2 = "http://127.0.0.2:8082/stable/arm64/manifest.json"
T = TypeVar("T")


def run(coro: Awaitable[T], limit: float = 120) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, limit)

    return asyncio.run(bounded())


def make(identity: SigningKey, url: str, version: str = "1", ttl: int = 3600, **kw: Any) -> Any:
    now = kw.pop("now", int(time.time()))
    return records.make_record(identity, KEY, url, kw.pop("name", "p"), version, now=now, ttl=ttl)


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 20, step: float = 0.2
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(step)
    return await check()


def test_two_providers_both_found_and_a_refresh_keeps_the_other() -> None:
    k1, k2 = SigningKey.generate(), SigningKey.generate()

    async def scenario() -> None:
        async with SimNetwork(22) as net:
            p1, p2 = net.nodes[3], net.nodes[11]
            assert await p1.set(KEY, make(k1, URL1, name="one")) >= 10
            assert await p2.set(KEY, make(k2, URL2, name="two")) >= 10
            client = await net.join([net.nodes[5].address])
            found = await client.get(KEY, timeout=20)
            assert {r.url for r in found} == {URL1, URL2}
            assert {r.provider_name for r in found} == {"one", "two"}

            # Provider 1 refreshes with a new version: provider 2's record must survive.
            def holders(peer_id: str) -> set[int]:
                return {
                    i
                    for i, n in enumerate(net.nodes)
                    if peer_id in {r.peer_id for r in n.storage.records(DIGEST)}
                }

            before = holders(k2.public.peer_id)
            assert len(before) >= 15
            now = int(time.time()) + 1
            assert await p1.set(KEY, make(k1, URL1, version="2", now=now, name="one")) >= 10
            client2 = await net.join([net.nodes[17].address])
            by_peer = {r.peer_id: r for r in await client2.get(KEY, timeout=20)}
            assert by_peer[k1.public.peer_id].version == "2"
            assert by_peer[k2.public.peer_id].url == URL2
            assert holders(k2.public.peer_id) == before
            assert len(holders(k1.public.peer_id) & before) >= 15
            # The lookup is a union from the k closest, so every client sees the same answer.
            for node in random.Random(1).sample(net.nodes, 5):
                assert len(await node.get(KEY, timeout=20)) == 2

    run(scenario())


def test_lookups_survive_losing_the_bootstrap_node_and_a_third_of_the_rest() -> None:
    k1, k2 = SigningKey.generate(), SigningKey.generate()

    async def scenario() -> None:
        async with SimNetwork(24) as net:
            await net.nodes[6].set(KEY, make(k1, URL1))
            await net.nodes[9].set(KEY, make(k2, URL2))
            dead_bootstrap = net.nodes[0].address
            net.kill(0)
            for index in random.Random(7).sample(range(1, 24), 8):
                net.kill(index)
            alive = net.alive()
            assert len(alive) == 15
            # A fresh client given the dead bootstrap node and one live node still gets in.
            client = await net.join([dead_bootstrap, alive[0].address])
            assert {r.url for r in await client.get(KEY, timeout=30)} == {URL1, URL2}
            lookups = [node.get(KEY, timeout=30) for node in random.Random(3).sample(alive, 4)]
            for found in await asyncio.gather(*lookups):
                assert {r.url for r in found} == {URL1, URL2}

    run(scenario())


def test_a_provider_that_stops_refreshing_vanishes_after_its_ttl() -> None:
    steady, quitter = SigningKey.generate(), SigningKey.generate()

    async def scenario() -> None:
        async with SimNetwork(20) as net:
            provider_a, provider_b = net.nodes[2], net.nodes[13]
            await provider_b.set(KEY, make(quitter, URL2, ttl=3))

            async def keep_publishing() -> None:
                stamp = None
                for _ in range(60):  # bounded: at most 60 rounds
                    stamp = records.next_timestamp(int(time.time()), stamp)
                    await provider_a.set(KEY, make(steady, URL1, ttl=3, now=stamp))
                    await asyncio.sleep(1.0)

            refresher = asyncio.ensure_future(keep_publishing())
            try:
                client = await net.join([net.nodes[7].address])

                async def both() -> bool:
                    return {r.url for r in await client.get(KEY, timeout=10)} == {URL1, URL2}

                async def only_steady() -> bool:
                    return [r.url for r in await client.get(KEY, timeout=10)] == [URL1]

                assert await eventually(both, timeout=3)
                assert await eventually(only_steady, timeout=20)
                # The expired record is dropped from every node's storage, not just hidden.
                for node in net.nodes:
                    node.storage.cull()
                    assert quitter.public.peer_id not in {
                        r.peer_id for r in node.storage.records(DIGEST)
                    }
            finally:
                refresher.cancel()

    run(scenario())


class RawPeer:
    """A hostile peer: a plain UDP socket speaking (or abusing) the rpcudp wire format."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.node_id = os.urandom(20)

    def request(self, target: tuple[str, int], name: str, *args: Any) -> bytes:
        msg_id = os.urandom(20)
        self.sock.sendto(b"\x00" + msg_id + umsgpack.packb([name, list(args)]), target)
        return msg_id

    def raw(self, target: tuple[str, int], data: bytes) -> None:
        self.sock.sendto(data, target)

    async def replies(self, wanted: set[bytes], timeout: float = 20) -> dict[bytes, Any]:
        loop = asyncio.get_running_loop()
        got: dict[bytes, Any] = {}
        deadline = time.monotonic() + timeout
        while wanted - set(got) and time.monotonic() < deadline:
            try:
                data = await asyncio.wait_for(loop.sock_recv(self.sock, 65536), 1.0)
            except TimeoutError:
                continue
            if data[:1] == b"\x01" and data[1:21] in wanted:
                got[data[1:21]] = umsgpack.unpackb(data[21:])
        return got

    def close(self) -> None:
        self.sock.close()


def test_hostile_stores_and_junk_are_dropped_and_memory_stays_bounded() -> None:
    legit = SigningKey.generate()
    attacker = SigningKey.generate()

    async def scenario() -> None:
        async with SimNetwork(20) as net:
            await net.nodes[1].set(KEY, make(legit, URL1))
            target_node = net.nodes[4]
            target = target_node.address
            assert len(target_node.storage.records(DIGEST)) == 1
            peer = RawPeer()
            try:
                # Junk of every shape: nothing may crash the node or reach storage.
                for data in (os.urandom(100), b"\x00" * 5, b"\x02" + os.urandom(60)):
                    peer.raw(target, data)
                peer.raw(target, b"\x00" + os.urandom(20) + os.urandom(9000))
                peer.raw(target, b"\x00" + os.urandom(20) + umsgpack.packb({"a": 1}))
                bad_id = peer.request(target, "store", b"short", DIGEST, b"x")
                bad_page = peer.request(target, "find_records", peer.node_id, DIGEST, "page")
                silent = {
                    peer.request(target, "store", peer.node_id),  # wrong argument count
                    peer.request(target, "no_such_rpc", 1),
                }

                good = make(legit, URL1)
                forged_body = good.raw.replace(b"127.0.0.1:8081", b"127.6.6.6:8081")
                stolen = records.make_record(attacker, KEY, URL2, "evil", "9", int(time.time()))
                stolen_raw = stolen.raw.replace(
                    attacker.public.peer_id.encode(), legit.public.peer_id.encode()
                )
                other_key = records.make_record(
                    attacker, "/phase/testing/arm64/manifest", URL2, "evil", "9", int(time.time())
                )
                refused = {
                    peer.request(target, "store", peer.node_id, DIGEST, forged_body),
                    peer.request(target, "store", peer.node_id, DIGEST, stolen_raw),
                    peer.request(target, "store", peer.node_id, DIGEST, other_key.raw),
                    peer.request(target, "store", peer.node_id, DIGEST, os.urandom(8000)),
                    peer.request(target, "store", peer.node_id, DIGEST, [1, 2, 3]),
                }
                answers = await peer.replies(refused | {bad_id, bad_page})
                assert all(answers[m] is False for m in refused), answers
                assert answers[bad_id] is False
                assert answers[bad_page] == {"records": [], "pages": 0}
                assert [r.url for r in target_node.storage.records(DIGEST)] == [URL1]

                # A flood of validly signed records from fresh identities: capped per key.
                cap = target_node.storage.max_per_key
                flood = [
                    peer.request(
                        target, "store", peer.node_id, DIGEST, make(SigningKey.generate(), URL2).raw
                    )
                    for _ in range(cap + 100)
                ]
                answers = await peer.replies(set(flood), timeout=30)
                assert len(answers) == len(flood)
                assert sum(1 for v in answers.values() if v is True) == cap - 1
                held = target_node.storage.records(DIGEST)
                assert len(held) == cap
                assert legit.public.peer_id in {r.peer_id for r in held}
                assert target_node.protocol.dropped >= 5
                assert not silent & set(await peer.replies(silent, timeout=0.5))
                # The node still answers, and a client still finds the legitimate record.
                client = await net.join([target])
                found = await client.get(KEY, timeout=20)
                assert legit.public.peer_id in {r.peer_id for r in found}
                assert len(found) <= cap
            finally:
                peer.close()

    run(scenario())


class LyingProtocol(RecordProtocol):
    """A node that answers lookups with forged records, junk and absurd page counts."""

    def rpc_find_records(self, sender: Any, nodeid: Any, key: Any, page: Any) -> Any:
        forged = self.forged  # type: ignore[attr-defined]
        return {"records": [forged, b"junk", 7, "x" * 50], "pages": 10**9}

    def rpc_find_node(self, sender: Any, nodeid: Any, key: Any) -> Any:
        return [*super().rpc_find_node(sender, nodeid, key), [b"bad", 1, 2], "junk", [1, 2, 3]]

    def rpc_get_providers(self, sender: Any, nodeid: Any, key: Any) -> Any:
        forged = self.forged  # type: ignore[attr-defined]
        nodes = self.rpc_find_node(sender, nodeid, key)
        return {"nodes": nodes, "records": [forged, b"junk", 7], "total": 10**9}


class LyingNode(DhtNode):
    protocol_class = LyingProtocol

    def _create_protocol(self) -> RecordProtocol:
        protocol = LyingProtocol(self.node, self.storage, self.ksize, self.rpc_timeout)
        protocol.forged = LyingNode.forged  # type: ignore[attr-defined]
        return protocol

    forged: bytes = b""


def test_lying_nodes_cannot_inject_or_break_lookups() -> None:
    legit, victim = SigningKey.generate(), SigningKey.generate()
    genuine = make(victim, URL2)
    LyingNode.forged = genuine.raw.replace(b"127.0.0.2:8082", b"127.6.6.6:8082")

    async def scenario() -> None:
        async with SimNetwork(20) as net:
            for _ in range(4):
                await net.join([net.nodes[0].address], factory=LyingNode)
            await net.nodes[5].set(KEY, make(legit, URL1))
            for liar in net.extra:
                assert liar.protocol.sent  # they are part of the network
            client = await net.join([net.extra[0].address, net.nodes[8].address])
            # A whole walk (no quorum stop), so that every liar is asked.
            found: list[ProviderRecord] = await client.get(KEY, timeout=30, quorum=None)
            assert [r.url for r in found] == [URL1]
            assert client.last_crawl.invalid >= 4
            assert client.protocol.dropped > 0

    run(scenario())


def test_routing_state_round_trip(tmp_path: Any) -> None:
    state = tmp_path / "dht.json"

    async def scenario() -> None:
        async with SimNetwork(20) as net:
            await net.nodes[3].set(KEY, make(SigningKey.generate(), URL1))
            first = await net.join([net.nodes[0].address])
            first.save_state(state)
            node_id = first.node.id
            first.stop()
            net.kill(0)  # the original bootstrap node is gone; the saved neighbours suffice
            again = await DhtNode.load_state(state, 0, "127.0.0.1", rpc_timeout=0.5)
            net.extra.append(again)
            assert again.node.id == node_id
            assert [r.url for r in await again.get(KEY, timeout=20)] == [URL1]

    run(scenario())
    assert state.stat().st_mode & 0o777 == 0o644
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_lookup_only_clients_leave_no_trace_in_routing_tables() -> None:
    async def scenario() -> None:
        async with SimNetwork(20) as net:
            await net.nodes[2].set(KEY, make(SigningKey.generate(), URL1))
            client = await net.join([net.nodes[0].address], client=True)
            assert [r.url for r in await client.get(KEY, timeout=20)] == [URL1]
            member = await net.join([net.nodes[0].address])
            await member.get(KEY, timeout=20)

            def known_by(node: DhtNode) -> int:
                return sum(
                    1
                    for other in net.nodes
                    for contact in other.protocol.router.find_neighbors(other.node, k=100)
                    if (contact.ip, contact.port) == node.address
                )

            assert known_by(client) == 0
            assert known_by(member) > 0

    run(scenario())


def test_ipv6_loopback_network_and_discover_dht() -> None:
    from phase_client.discovery.dht import discover_dht
    from phase_client.discovery.model import Query

    url = "http://[::1]:8080/stable/arm64/manifest.json"

    async def scenario() -> None:
        async with SimNetwork(12, host="::1") as net:
            await net.nodes[3].set(KEY, make(SigningKey.generate(), url, name="v6"))
            query = Query(channel="stable", arch="arm64", timeout=10, want_all=True)
            boot = [("::1", net.nodes[0].address[1])]
            found = await asyncio.to_thread(discover_dht, query, boot)
            assert [(c.url, c.host, c.port, c.name) for c in found] == [(url, "::1", 8080, "v6")]

    run(scenario())


def test_a_publisher_keeps_its_own_records_when_the_other_holders_die() -> None:
    """Two nodes: the k closest to a key may be only the other one. Whether or not this node
    is closest, its own records must outlive the other node (8 keys: a regression fails at
    least one of them with probability 255/256)."""
    identity = SigningKey.generate()
    keys = [f"/phase/ch{i}/arm64/manifest" for i in range(8)]

    async def scenario() -> None:
        async with SimNetwork(2) as net:
            publisher = net.nodes[1]
            for key in keys:
                record = records.make_record(identity, key, URL1, "p", "1", now=int(time.time()))
                await publisher.set(key, record)
            net.kill(0)
            client = await net.join([publisher.address])
            for key in keys:
                found = await client.get(key, timeout=10)
                assert [r.url for r in found] == [URL1], key

    run(scenario())


async def counted_lookup(
    net: SimNetwork, quorum: int | None = 3
) -> tuple[Any, set[str], dict[str, int]]:
    """A fresh client's lookup of KEY: the client, the peer ids found, the RPCs it sent."""
    client = await net.join([net.nodes[7].address])
    before = dict(client.protocol.sent)
    found = await client.get(KEY, timeout=30, quorum=quorum)
    sent = {k: v - before.get(k, 0) for k, v in client.protocol.sent.items()}
    return client, {r.peer_id for r in found}, sent


def test_one_pass_finds_records_with_the_nodes_and_pages_only_what_did_not_fit() -> None:
    # Two providers: their records ride in the get_providers replies, no find_node and no
    # find_records is sent, and the walk ends at a quorum of holders. Twelve: more than fit
    # beside the contacts, so the nodes holding them are paged through with find_records, and
    # every record is still found.
    async def scenario() -> None:
        async with SimNetwork(40) as net:
            few = [SigningKey.generate() for _ in range(2)]
            for index, identity in enumerate(few):
                await net.nodes[index + 1].set(KEY, make(identity, URL1, name=f"p{index}"))
            client, found, sent = await counted_lookup(net)
            assert found == {k.public.peer_id for k in few}
            assert sent.get("find_node", 0) == 0 and sent.get("find_records", 0) == 0, sent
            # It stopped once three holders had answered (answers arriving together may add
            # one or two), long before the k = 20 closest.
            assert client.last_crawl.holders >= 3 and sent["get_providers"] < 20, sent
            # Without the quorum, the walk asks the k closest, still one message each.
            _, found, sent = await counted_lookup(net, quorum=None)
            assert found == {k.public.peer_id for k in few}
            assert sent["get_providers"] >= 20 and sent.get("find_records", 0) == 0, sent

            many = [SigningKey.generate() for _ in range(12)]
            for index, identity in enumerate(many):
                await net.nodes[index + 10].set(KEY, make(identity, URL2, name=f"m{index}"))
            _, found, sent = await counted_lookup(net)
            assert found == {k.public.peer_id for k in few + many}
            assert sent.get("find_records", 0) > 0, sent
            # Every reply stays one unfragmented datagram, records or not.
            for node in net.nodes:
                reply = node.protocol.rpc_get_providers(("127.0.0.1", 9), b"", DIGEST)
                assert len(umsgpack.packb(reply)) <= records.REPLY_BUDGET
                assert len(reply["nodes"]) >= 8 or len(reply["nodes"]) == len(net.nodes) - 1

    run(scenario())
