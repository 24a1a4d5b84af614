"""A flood of cheap identities against a real node, through the real rpc_store path on loopback.

Linux routes all of 127.0.0.0/8 to loopback, so sockets bound to 127.0.1.1, 127.0.2.1 and
127.0.3.1 are three senders in three /24 subnets: an attacker, a newcomer and an incumbent.
"""

from __future__ import annotations

import time

from phase_client.dht import records
from phase_client.dht.node import DhtNode
from phase_client.dht.storage import DEFAULT_MAX_PER_KEY, DEFAULT_MAX_TOTAL
from phase_client.keys import SigningKey
from tests.test_dht_network import RawPeer, run

KEY = "/phase/stable/arm64/manifest"
DIGEST = records.key_digest(KEY)
FRESH = "/phase/testing/arm64/manifest"
ATTACKER, NEWCOMER, INCUMBENT = "127.0.1.1", "127.0.2.1", "127.0.3.1"
BATCH = 100  # STOREs in flight at once: well inside a loopback socket's receive buffer
RETRIES = 5
# Nodes share one event loop, and a node joining the full target is handed (a capped number of)
# its records, whose checks hold up the other replies for a moment.
RPC_TIMEOUT = 3.0


def provider_record(identity: SigningKey, host: str, key: str = KEY) -> records.ProviderRecord:
    url = f"http://{host}:8080/stable/arm64/manifest.json"
    return records.make_record(identity, key, url, host, "1", now=int(time.time()))


async def flood(peer: RawPeer, target: tuple[str, int], items: list[tuple[bytes, bytes]]) -> int:
    """STORE every (digest, record) from ``peer``; how many the target accepted.

    Unanswered STOREs are sent again (at most ``RETRIES`` times), as a real flooder would: the
    target hands its records to every node it meets, so the attacker's own socket also fills
    with STOREs addressed to it and some replies are lost.
    """
    kept = 0
    for start in range(0, len(items), BATCH):
        pending = items[start : start + BATCH]
        for _ in range(RETRIES):
            sent = {
                peer.request(target, "store", peer.node_id, digest, raw): (digest, raw)
                for digest, raw in pending
            }
            answers = await peer.replies(set(sent), timeout=5)
            kept += sum(1 for ok in answers.values() if ok is True)
            pending = [item for msg_id, item in sent.items() if msg_id not in answers]
            if not pending:
                break
        assert not pending  # every STORE answered in the end: nothing stuck
    return kept


def test_flood_of_identities_and_junk_keys_keeps_incumbent_and_admits_newcomer() -> None:
    incumbent_key, newcomer_key = SigningKey.generate(), SigningKey.generate()
    now = int(time.time())
    fakes = [
        (
            DIGEST,
            records.make_record(
                SigningKey.generate(), KEY, f"http://10.0.{i % 250}.1/m", "x", "1", now
            ).raw,
        )
        for i in range(1000)
    ]
    junk_keys = [f"/phase/junk{k}/arm64/manifest" for k in range(64)]
    junk = [
        (
            records.key_digest(key),
            records.make_record(SigningKey.generate(), key, "http://10.1.0.1/m", "x", "1", now).raw,
        )
        for key in junk_keys
        for _ in range(64)
    ]

    async def scenario() -> None:
        target = DhtNode(rpc_timeout=RPC_TIMEOUT)
        nodes = [target]
        peer = RawPeer(ATTACKER)
        try:
            await target.listen(0, "127.0.0.1")
            incumbent = DhtNode(rpc_timeout=RPC_TIMEOUT)
            nodes.append(incumbent)
            await incumbent.listen(0, INCUMBENT)
            await incumbent.bootstrap([target.address])
            assert await incumbent.set(KEY, provider_record(incumbent_key, INCUMBENT)) == 1

            # 1000 identities on the key, then 64 junk keys of 64 records, all from one /24.
            assert await flood(peer, target.address, fakes) == DEFAULT_MAX_PER_KEY - 1
            assert (
                await flood(peer, target.address, junk) == DEFAULT_MAX_TOTAL - DEFAULT_MAX_PER_KEY
            )
            storage = target.storage
            assert storage.total() == DEFAULT_MAX_TOTAL  # full, and no more than that
            assert storage.refused == len(fakes) + len(junk) - (DEFAULT_MAX_TOTAL - 1)
            assert incumbent_key.public.peer_id in {r.peer_id for r in storage.records(DIGEST)}
            # The incumbent still refreshes; a newcomer from another /24 gets a slot both on
            # the full key and on a key the full node has never seen.
            assert await incumbent.set(KEY, provider_record(incumbent_key, INCUMBENT)) == 1
            newcomer = DhtNode(rpc_timeout=RPC_TIMEOUT)
            nodes.append(newcomer)
            await newcomer.listen(0, NEWCOMER)
            await newcomer.bootstrap([target.address])
            # (>= 1: the incumbent, a member too, may take it as well; the target is checked.)
            assert await newcomer.set(KEY, provider_record(newcomer_key, NEWCOMER)) >= 1
            assert await newcomer.set(FRESH, provider_record(newcomer_key, NEWCOMER, FRESH)) >= 1
            assert [r.peer_id for r in storage.records(records.key_digest(FRESH))] == [
                newcomer_key.public.peer_id
            ]
            assert storage.total() == DEFAULT_MAX_TOTAL
            assert storage.evicted == 2
            # The flood goes on: it only displaces its own records.
            more = [
                (
                    DIGEST,
                    records.make_record(
                        SigningKey.generate(), KEY, "http://10.2.0.1/m", "x", "1", int(time.time())
                    ).raw,
                )
                for _ in range(200)
            ]
            assert await flood(peer, target.address, more) == 0
            held = {r.peer_id for r in storage.records(DIGEST)}
            assert {incumbent_key.public.peer_id, newcomer_key.public.peer_id} <= held
            assert len(held) == DEFAULT_MAX_PER_KEY
            assert storage.total() <= storage.max_total

            # A boot client's lookup finds both honest providers among the records.
            client = DhtNode(rpc_timeout=RPC_TIMEOUT, client=True)
            nodes.append(client)
            await client.listen(0, "127.0.0.1")
            await client.bootstrap([target.address])
            found = {r.peer_id: r.url for r in await client.get(KEY, timeout=20)}
            assert INCUMBENT in found[incumbent_key.public.peer_id]
            assert NEWCOMER in found[newcomer_key.public.peer_id]
            assert [r.peer_id for r in await client.get(FRESH, timeout=20)] == [
                newcomer_key.public.peer_id
            ]
        finally:
            peer.close()
            for node in nodes:
                node.stop()

    run(scenario(), limit=240)
