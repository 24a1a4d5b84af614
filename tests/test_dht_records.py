"""Provider records and record storage: pure rules, tested exhaustively (no sockets)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phase_client.canonical import canonical_bytes
from phase_client.dht import records
from phase_client.dht.records import MergeOutcome, ProviderRecord, RecordError
from phase_client.dht.storage import RecordStorage
from phase_client.keys import SigningKey
from tests.conftest import T0, key_from_byte

KEY = "/phase/stable/arm64/manifest"
DIGEST = records.key_digest(KEY)
URL = "http://192.168.1.100:8080/stable/arm64/manifest.json"


def record(
    identity: SigningKey | None = None, now: int = T0, ttl: int = 3600, **kw: Any
) -> ProviderRecord:
    return records.make_record(
        identity or key_from_byte(1),
        kw.get("key", KEY),
        kw.get("url", URL),
        kw.get("name", "my-mac"),
        kw.get("version", "2025.11.26"),
        now=now,
        ttl=ttl,
    )


def body_of(rec: ProviderRecord) -> dict[str, Any]:
    return json.loads(rec.raw)


def resign(body: dict[str, Any], signer: SigningKey) -> bytes:
    body = dict(body)
    body["signature"] = base64.b64encode(signer.sign(records.signing_bytes(body))).decode()
    return canonical_bytes(body)


# --- records ------------------------------------------------------------------------------
def test_round_trip_and_seed_fields() -> None:
    rec = record()
    body = body_of(rec)
    # The seed's value fields, plus what makes the record verifiable.
    assert body["url"] == URL
    assert body["peer_id"].startswith("12D3KooW")
    assert body["provider_name"] == "my-mac"
    assert body["last_updated"] == "2025-11-26T12:00:00Z"
    assert body["expires_at"] == "2025-11-26T13:00:00Z"
    assert body["public_key"] == key_from_byte(1).public.keyid
    again = records.parse_record(rec.raw, now=T0 + 10, expected_digest=DIGEST)
    assert again == rec
    assert (again.channel, again.arch) == ("stable", "arm64")
    assert len(rec.raw) < records.MAX_RECORD_BYTES


def test_signing_bytes_have_the_domain_prefix() -> None:
    rec = record()
    message = records.signing_bytes(body_of(rec))
    assert message.startswith(b"phase-provider-record-v1\n")
    assert b"signature" not in message
    assert key_from_byte(1).public.verify(message, rec.signature)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("url", "http://evil.example/stable/arm64/manifest.json"),
        ("provider_name", "someone-else"),
        ("version", "9999"),
        ("last_updated", "2025-11-26T12:00:01Z"),
        ("expires_at", "2025-11-26T13:30:00Z"),
        ("key", "/phase/testing/arm64/manifest"),
    ],
)
def test_any_changed_field_breaks_the_signature(field: str, value: str) -> None:
    body = body_of(record())
    body[field] = value
    with pytest.raises(RecordError, match="signature"):
        records.parse_record(canonical_bytes(body), now=T0)


def test_record_for_someone_elses_peer_id_is_refused() -> None:
    victim, attacker = key_from_byte(1), key_from_byte(2)
    body = body_of(record(victim))
    # Claim the victim's peer id and key, sign with our own key: signature fails.
    with pytest.raises(RecordError, match="signature"):
        records.parse_record(resign(body, attacker), now=T0)
    # Keep our own key but claim the victim's peer id: the peer id check fails.
    body["public_key"] = attacker.public.keyid
    with pytest.raises(RecordError, match="peer_id"):
        records.parse_record(resign(body, attacker), now=T0)


def test_record_cannot_be_replayed_under_another_key() -> None:
    rec = record()
    other = records.key_digest("/phase/testing/arm64/manifest")
    with pytest.raises(RecordError, match="hash"):
        records.parse_record(rec.raw, now=T0, expected_digest=other)


@pytest.mark.parametrize(
    ("now", "ttl", "message"),
    [
        (T0 + 3600, 3600, "expired"),
        (T0 + 5000, 3600, "expired"),
        (T0 - records.MAX_FUTURE_SKEW - 1, 3600, "future"),
        (T0, records.MAX_TTL + 1, "validity"),
    ],
)
def test_time_rules(now: int, ttl: int, message: str) -> None:
    rec = record(ttl=ttl) if ttl <= records.MAX_TTL else None
    if rec is None:
        with pytest.raises(RecordError, match=message):
            record(ttl=ttl)
        return
    with pytest.raises(RecordError, match=message):
        records.parse_record(rec.raw, now=now)


def test_small_clock_skew_is_tolerated() -> None:
    rec = record()
    assert records.parse_record(rec.raw, now=T0 - records.MAX_FUTURE_SKEW) == rec


def test_zero_validity_is_refused() -> None:
    body = body_of(record())
    body["expires_at"] = body["last_updated"]
    with pytest.raises(RecordError, match="validity"):
        records.parse_record(resign(body, key_from_byte(1)), now=T0 - 10)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b.update(extra="x"),
        lambda b: b.pop("version"),
        lambda b: b.update(url="ftp://host/manifest.json"),
        lambda b: b.update(url="/relative/manifest.json"),
        lambda b: b.update(provider_name=""),
        lambda b: b.update(provider_name="a\nb"),
        lambda b: b.update(provider_name="x" * 65),
        lambda b: b.update(version=7),
        lambda b: b.update(key="/phase/Stable/arm64/manifest"),
        lambda b: b.update(key="/other/stable/arm64/manifest"),
        lambda b: b.update(public_key=key_from_byte(1).public.raw.hex()),
        lambda b: b.update(last_updated="2025-11-26 12:00:00"),
    ],
)
def test_malformed_fields_are_refused(mutate: Any) -> None:
    body = body_of(record())
    mutate(body)
    with pytest.raises(RecordError):
        records.parse_record(resign(body, key_from_byte(1)), now=T0)


@pytest.mark.parametrize("signature", ["!!", "", "AAAA", base64.b64encode(bytes(64)).decode()])
def test_bad_signature_encodings_are_refused(signature: str) -> None:
    body = body_of(record())
    body["signature"] = signature
    with pytest.raises(RecordError, match="signature"):
        records.parse_record(canonical_bytes(body), now=T0)


def test_non_canonical_and_oversized_encodings_are_refused() -> None:
    rec = record()
    spaced = json.dumps(body_of(rec), indent=1).encode()
    with pytest.raises(RecordError, match="canonical"):
        records.parse_record(spaced, now=T0)
    with pytest.raises(RecordError, match="exceeds"):
        records.parse_record(b"{" + b" " * records.MAX_RECORD_BYTES + b"}", now=T0)
    long_url = "http://h/" + "a" * 500
    with pytest.raises(RecordError):
        record(url=long_url + "a" * 20)
    for junk in (b"", b"\xff\xfe", b"[]", b"null", b'{"url": 1.5}', 42, None, "text"):
        with pytest.raises(RecordError):
            records.parse_record(junk, now=T0)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1200))
def test_arbitrary_bytes_never_raise_anything_else(data: bytes) -> None:
    assert records.try_parse(data, now=T0) is None


@settings(max_examples=100, deadline=None)
@given(st.integers(0, len(record().raw) - 1), st.integers(1, 255))
def test_any_flipped_byte_is_refused(position: int, xor: int) -> None:
    raw = bytearray(record().raw)
    raw[position] ^= xor
    assert records.try_parse(bytes(raw), now=T0) is None


def test_dht_key() -> None:
    assert records.dht_key("stable", "arm64") == KEY
    assert records.split_key(KEY) == ("stable", "arm64")
    for channel, arch in (("Stable", "arm64"), ("stable", "a/b"), ("", "x86_64")):
        with pytest.raises(RecordError):
            records.dht_key(channel, arch)


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


# --- merge, union, pages ------------------------------------------------------------------
def test_newest_record_per_peer_wins() -> None:
    store = RecordStorage(clock=Clock(T0 + 60))
    old, new = record(now=T0), record(now=T0 + 60, version="2")
    other = record(key_from_byte(2))
    assert store.put(DIGEST, old.raw) is MergeOutcome.ADDED
    assert store.put(DIGEST, other.raw) is MergeOutcome.ADDED
    assert store.put(DIGEST, new.raw) is MergeOutcome.REPLACED
    assert store.put(DIGEST, old.raw) is MergeOutcome.STALE
    assert store.put(DIGEST, new.raw) is MergeOutcome.STALE
    assert {r.version for r in store.records(DIGEST)} == {"2", "2025.11.26"}
    assert store.total() == 2  # a refresh of one provider never erases another


def test_full_key_keeps_incumbents_of_one_source_and_expiry_frees_room() -> None:
    clock = Clock(T0)
    store = RecordStorage(max_per_key=3, clock=clock)
    for i in range(1, 4):
        assert store.put(DIGEST, record(key_from_byte(i), ttl=100).raw, "192.0.2.1") is (
            MergeOutcome.ADDED
        )
    # Same source as every incumbent: first come keeps the slot (``admission`` has the rest).
    newcomer = record(key_from_byte(9), now=T0 + 140)
    assert store.put(DIGEST, newcomer.raw, "192.0.2.9") is MergeOutcome.FULL
    # An incumbent may still refresh when full.
    assert store.put(DIGEST, record(key_from_byte(1), now=T0 + 1).raw, "192.0.2.1") is (
        MergeOutcome.REPLACED
    )
    # Once the others expire, the newcomer fits.
    clock.now = T0 + 150
    assert store.put(DIGEST, newcomer.raw, "192.0.2.9") is MergeOutcome.ADDED
    assert store.total() == 2


def test_union_newest_first_no_expired() -> None:
    a_old, a_new = record(key_from_byte(1), now=T0), record(key_from_byte(1), now=T0 + 5)
    b = record(key_from_byte(2), now=T0 + 1)
    c_expired = record(key_from_byte(3), now=T0, ttl=2)
    result = records.union([a_old, b, a_new, c_expired, a_old], now=T0 + 3)
    assert result == [a_new, b]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, records.MAX_RECORD_BYTES), max_size=80))
def test_paginate_keeps_order_and_budget(sizes: list[int]) -> None:
    raws = [bytes([i % 256]) * size for i, size in enumerate(sizes)]
    pages = records.paginate(raws)
    assert [r for page in pages for r in page] == raws
    for page in pages:
        assert page
        assert sum(len(r) + records.PER_ITEM_OVERHEAD for r in page) <= records.REPLY_BUDGET


def test_typical_record_pages_hold_two() -> None:
    raws = [record(key_from_byte(i)).raw for i in range(1, 7)]
    assert [len(p) for p in records.paginate(raws)] == [2, 2, 2]


def test_next_timestamp_strictly_grows() -> None:
    assert records.next_timestamp(T0, None) == T0
    assert records.next_timestamp(T0, T0 - 1) == T0
    assert records.next_timestamp(T0, T0) == T0 + 1
    assert records.next_timestamp(T0, T0 + 5) == T0 + 6


# --- storage ------------------------------------------------------------------------------
def test_storage_validates_merges_and_expires() -> None:
    clock = Clock(T0)
    store = RecordStorage(clock=clock)
    a, b = record(key_from_byte(1), ttl=100), record(key_from_byte(2), ttl=300)
    assert store.put(DIGEST, a.raw) is MergeOutcome.ADDED
    assert store.put(DIGEST, b.raw) is MergeOutcome.ADDED
    assert store.put(records.key_digest("/phase/x/y/manifest"), a.raw) is None  # wrong key
    assert store.put(DIGEST, b"junk") is None
    assert store.rejected == 2
    assert {r.peer_id for r in store.records(DIGEST)} == {a.peer_id, b.peer_id}
    assert sorted(store.get(DIGEST)) == sorted([a.raw, b.raw])
    assert len(list(store)) == 2  # one (digest, record) per record: one STORE each on hand-off
    clock.now = T0 + 150
    assert store.records(DIGEST) == [b]
    clock.now = T0 + 400
    assert store.get(DIGEST) is None
    with pytest.raises(KeyError):
        store[DIGEST]
    assert store.total() == 0


def test_storage_caps_are_hard() -> None:
    store = RecordStorage(max_per_key=5, max_total=8, clock=Clock(T0))
    keys = [SigningKey.from_seed(bytes([i]) * 32) for i in range(1, 30)]
    for k in keys:
        store.put(DIGEST, record(k).raw)
    assert store.total() == 5
    other = records.key_digest("/phase/testing/arm64/manifest")
    for k in keys:
        store.put(other, record(k, key="/phase/testing/arm64/manifest").raw)
    assert store.total() == 8
    assert len(store.records(DIGEST)) == 5
    # The first five providers stay and may refresh.
    assert store.put(DIGEST, record(keys[0], now=T0 + 1).raw) is MergeOutcome.REPLACED


def test_storage_iter_older_than() -> None:
    store = RecordStorage(clock=Clock(T0))
    store.put(DIGEST, record().raw)
    assert store.iter_older_than(3600) == []
    assert store.iter_older_than(0) == [(DIGEST, record().raw)]


# --- routing table ------------------------------------------------------------------------
@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**32), st.integers(5, 400))
def test_find_neighbors_returns_the_xor_closest(seed: int, count: int) -> None:
    import asyncio
    import random

    from kademlia.node import Node

    from phase_client.dht.protocol import XorRoutingTable

    class NoPing:
        async def call_ping(self, node: Node) -> None:
            """A full bucket pings its oldest contact; nothing to ping here."""

    rng = random.Random(seed)
    own = Node(rng.randbytes(20))
    table = XorRoutingTable(NoPing(), 20, own)

    async def fill() -> None:
        for port in range(1, count + 1):
            table.add_contact(Node(rng.randbytes(20), "127.0.0.1", port))

    asyncio.run(fill())
    held = [n for bucket in table.buckets for n in bucket.nodes.values()]
    target = Node(rng.randbytes(20))
    expected = sorted(held, key=target.distance_to)[:20]
    assert [n.id for n in table.find_neighbors(target)] == [n.id for n in expected]
    exclude = expected[0]
    assert exclude.id not in {n.id for n in table.find_neighbors(target, exclude=exclude)}
