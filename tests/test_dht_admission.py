"""Admission when a key or the node is full: deterministic, injected clock, no sockets.

The attacker here has what a review said was enough before: free identities (an Ed25519 key
each) and one network. These tests pin what that no longer buys, and what many networks still do.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from phase_client.dht import admission, records
from phase_client.dht.admission import Policy
from phase_client.dht.records import MergeOutcome, ProviderRecord
from phase_client.dht.storage import RecordStorage
from phase_client.keys import SigningKey
from tests.conftest import T0
from tests.test_dht_records import Clock

KEY = "/phase/stable/arm64/manifest"
DIGEST = records.key_digest(KEY)
POLICY = Policy()
HONEST = "203.0.113.5"
NEWCOMER = "192.0.2.7"
ATTACKER = "198.51.100.66"


def identity(n: int) -> SigningKey:
    return SigningKey.from_seed(n.to_bytes(32, "big"))


def rec(n: int, now: int, host: str, key: str = KEY, ttl: int = 3600) -> ProviderRecord:
    url = f"http://{host}:8080/stable/arm64/manifest.json"
    return records.make_record(identity(n), key, url, f"p{n}", "1", now=now, ttl=ttl)


def self_published(store: RecordStorage, n: int, host: str, key: str = KEY) -> MergeOutcome:
    """A provider storing its own record from its own address (its URL's host)."""
    outcome = store.put(records.key_digest(key), rec(n, store.clock(), host, key).raw, host)
    assert outcome is not None
    return outcome


def held(store: RecordStorage, key: str = KEY) -> set[str]:
    return {r.peer_id for r in store.records(records.key_digest(key))}


def peer(n: int) -> str:
    return identity(n).public.peer_id


def flood_host(i: int) -> str:
    """Junk URLs spread over many subnets: the sender's subnet still ties them together."""
    return f"10.{i // 250}.{i % 250}.1"


def test_labels() -> None:
    assert admission.subnet_label("198.51.100.7") == "v4:198.51.100.0/24"
    assert admission.subnet_label("::ffff:198.51.100.7") == "v4:198.51.100.0/24"
    assert admission.subnet_label("2001:db8:1:2:3::4") == "v6:2001:db8:1:2::/64"
    assert admission.subnet_label("fe80::1%eth0") == "v6:fe80::/64"
    assert admission.subnet_label("boot.example.com") is None
    assert admission.url_label("http://198.51.100.9:8080/m.json") == "v4:198.51.100.0/24"
    assert admission.url_label("http://[2001:db8:1:2::9]:80/m") == "v6:2001:db8:1:2::/64"
    assert admission.url_label("https://a.b.Example.COM./m") == "dns:example.com"
    assert admission.url_label("http://1-2-3-4.nip.io/m") == "dns:nip.io"
    own = rec(1, T0, "198.51.100.9")
    assert admission.labels_for(own, "198.51.100.7") == {"v4:198.51.100.0/24"}
    assert admission.labels_for(own, "192.0.2.1") == {"v4:198.51.100.0/24", "v4:192.0.2.0/24"}
    assert admission.labels_for(own, None) == {"v4:198.51.100.0/24"}


def test_a_flood_from_one_subnet_neither_pushes_out_nor_keeps_out_other_subnets() -> None:
    clock = Clock(T0)
    store = RecordStorage(clock=clock)
    assert self_published(store, 1, HONEST) is MergeOutcome.ADDED
    outcomes = Counter(
        store.put(DIGEST, rec(1000 + i, T0, flood_host(i)).raw, ATTACKER) for i in range(1000)
    )
    # The key fills up; after that the flood only competes with itself, and loses (first come).
    assert outcomes == {MergeOutcome.ADDED: 63, MergeOutcome.FULL: 937}
    assert peer(1) in held(store)
    # A newcomer from another subnet takes a slot from the biggest source.
    clock.now += 10
    assert self_published(store, 2, NEWCOMER) is MergeOutcome.ADDED
    assert store.evicted == 1
    assert {peer(1), peer(2)} <= held(store)
    assert store.total() == 64
    # The attacker keeps its 62 slots established (refreshed after the gap) and floods again.
    clock.now += POLICY.refresh_gap
    mine = [
        int(r.provider_name[1:]) for r in store.records(DIGEST) if r.url.startswith("http://10.")
    ]
    assert len(mine) == 62
    for n in mine:
        assert store.put(DIGEST, rec(n, clock.now, flood_host(n - 1000)).raw, ATTACKER) is (
            MergeOutcome.REPLACED
        )
    for i in range(1000, 1200):
        assert store.put(DIGEST, rec(1000 + i, clock.now, flood_host(i)).raw, ATTACKER) is (
            MergeOutcome.FULL
        )
    assert {peer(1), peer(2)} <= held(store)
    # ...and every further subnet still gets in, each at the flood's expense.
    for n in range(3, 13):
        assert self_published(store, n, f"192.0.{n}.7") is MergeOutcome.ADDED
    assert {peer(n) for n in range(1, 13)} <= held(store)
    assert store.total() == 64


def test_same_subnet_flood_cannot_push_out_and_silence_frees_slots() -> None:
    clock = Clock(T0)
    store = RecordStorage(max_per_key=16, clock=clock)
    neighbour = "198.51.100.5"  # the honest provider shares the attacker's /24
    assert self_published(store, 1, neighbour) is MergeOutcome.ADDED
    for i in range(200):
        store.put(DIGEST, rec(1000 + i, T0, flood_host(i), ttl=86400).raw, ATTACKER)
    assert peer(1) in held(store)
    assert store.total() == 16
    # Same subnet: a newcomer there waits behind records that keep being refreshed...
    assert self_published(store, 2, "198.51.100.7") is MergeOutcome.FULL
    # ...but the flood's records are signed for a day and never refreshed: after fresh_for
    # they give way, while the provider that republishes (every 1800 s) keeps its slot.
    for step in (1800, 1800, 1):
        clock.now += step
        assert self_published(store, 1, neighbour) is MergeOutcome.REPLACED
    assert clock.now - T0 > POLICY.fresh_for
    assert self_published(store, 2, "198.51.100.7") is MergeOutcome.ADDED
    assert {peer(1), peer(2)} <= held(store)


def test_more_subnets_than_slots_cannot_displace_an_established_provider() -> None:
    """The documented limit: with more subnets than a key has slots, an attacker keeps
    newcomers out (each next subnet displaces the youngest), but a provider that was there
    first and keeps republishing stays; only its silence lets it go."""
    clock = Clock(T0)
    store = RecordStorage(max_per_key=8, clock=clock)
    assert self_published(store, 1, HONEST) is MergeOutcome.ADDED
    clock.now += POLICY.refresh_gap
    assert self_published(store, 1, HONEST) is MergeOutcome.REPLACED  # established
    for n in range(100, 107):  # seven subnets fill the key and get established too
        assert self_published(store, n, f"10.0.{n}.1") is MergeOutcome.ADDED
    clock.now += POLICY.refresh_gap
    for n in range(100, 107):
        assert self_published(store, n, f"10.0.{n}.1") is MergeOutcome.REPLACED
    honest_newcomer_seen = 0
    for n in range(200, 300):  # one new subnet after another; an honest one in between
        if n == 250:
            assert self_published(store, 2, NEWCOMER) is MergeOutcome.ADDED
        assert self_published(store, n, f"10.1.{n}.1") is MergeOutcome.ADDED
        honest_newcomer_seen += peer(2) in held(store)
        assert peer(1) in held(store)
    assert honest_newcomer_seen == 0  # displaced at once: the limit stated in docs/dht.md
    # Silence is what costs a slot: the established records that stop refreshing go first.
    clock.now += POLICY.fresh_for + 1
    assert self_published(store, 400, "10.2.0.1") is MergeOutcome.ADDED
    assert peer(1) not in held(store)  # it did not republish for over an hour


def test_junk_keys_cannot_fill_the_node_against_newcomers() -> None:
    clock = Clock(T0)
    store = RecordStorage(max_per_key=8, max_total=64, clock=clock)
    assert self_published(store, 1, HONEST) is MergeOutcome.ADDED
    junk = [f"/phase/junk{k}/arm64/manifest" for k in range(16)]
    outcomes = Counter(
        store.put(records.key_digest(key), rec(1000 + 8 * k + i, T0, "10.0.0.1", key).raw, ATTACKER)
        for k, key in enumerate(junk)
        for i in range(8)
    )
    assert outcomes == {MergeOutcome.ADDED: 63, MergeOutcome.FULL: 65}
    assert store.total() == 64
    other = "/phase/testing/x86_64/manifest"
    assert self_published(store, 2, NEWCOMER, other) is MergeOutcome.ADDED
    assert self_published(store, 3, "192.0.3.7", other) is MergeOutcome.ADDED
    assert store.total() == 64
    assert peer(1) in held(store)
    assert held(store, other) == {peer(2), peer(3)}
    assert store.put(records.key_digest(other), rec(9999, T0, "10.0.0.1", other).raw, ATTACKER) is (
        MergeOutcome.FULL
    )


def test_url_subnet_counts_together_whoever_sends() -> None:
    """Records pointing into one subnet share one label even from (spoofed) distinct senders."""
    store = RecordStorage(max_per_key=16, clock=Clock(T0))
    assert self_published(store, 1, HONEST) is MergeOutcome.ADDED
    for n in range(100, 200):
        store.put(DIGEST, rec(n, T0, "192.0.2.80").raw, f"10.{n}.0.1")
    assert peer(1) in held(store)
    assert self_published(store, 2, NEWCOMER.replace("192.0.2", "192.0.9")) is MergeOutcome.ADDED
    assert {peer(1), peer(2)} <= held(store)


def test_own_records_are_kept_and_a_relay_does_not_keep_the_charge() -> None:
    clock = Clock(T0)
    store = RecordStorage(max_per_key=4, max_total=6, clock=clock)
    for n in range(100, 104):
        store.put(DIGEST, rec(n, T0, flood_host(n)).raw, ATTACKER)
    own = rec(1, T0, HONEST)
    assert store.put(DIGEST, own.raw, local=True) is MergeOutcome.ADDED  # key full: still kept
    for n in range(200, 260):
        store.put(DIGEST, rec(n, T0, f"10.9.{n}.1").raw, f"10.9.{n}.1")
    assert peer(1) in held(store)
    # A relay forwards a record first: it is charged to the relay and the record's network...
    other = "/phase/testing/arm64/manifest"
    relayed = rec(2, T0, NEWCOMER, other)
    assert store.put(records.key_digest(other), relayed.raw, ATTACKER) is MergeOutcome.ADDED
    entry = store.data[records.key_digest(other)][peer(2)]
    assert entry.labels == {"v4:198.51.100.0/24", "v4:192.0.2.0/24"}
    # ...until the provider's own copy arrives from its own network.
    assert store.put(records.key_digest(other), relayed.raw, NEWCOMER) is MergeOutcome.STALE
    assert entry.labels == {"v4:192.0.2.0/24"}
    assert store.label_counts == _recount(store)


def _recount(store: RecordStorage) -> Counter[str]:
    return Counter(
        label
        for entries in store.data.values()
        for entry in entries.values()
        if not entry.pinned
        for label in entry.labels
    )


SENDERS = ["198.51.100.1", "198.51.100.2", "203.0.113.9", "192.0.2.1", "2001:db8::1", "10.0.0.1"]
KEYS = [f"/phase/k{i}/arm64/manifest" for i in range(4)]
IDENTITIES = [identity(n) for n in range(1, 25)]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, len(IDENTITIES) - 1),
            st.integers(0, len(KEYS) - 1),
            st.integers(0, len(SENDERS) - 1),
            st.sampled_from([0, 0, 1, 400, 2000]),
            st.booleans(),
        ),
        max_size=80,
    )
)
def test_admission_invariants(ops: list[tuple[int, int, int, int, bool]]) -> None:
    """Caps hold, indexes stay exact, own records stay, and a refused newcomer always shared
    the most-held label of the scope that was full (a smaller source is never refused)."""
    clock = Clock(T0)
    store = RecordStorage(max_per_key=4, max_total=10, clock=clock)
    own: dict[bytes, ProviderRecord] = {}
    for who, key_index, sender_index, step, url_is_sender in ops:
        clock.now += step
        key, sender = KEYS[key_index], SENDERS[sender_index]
        digest = records.key_digest(key)
        host = sender if url_is_sender else flood_host(who)
        if ":" in host:
            host = f"[{host}]"
        local = who == 0  # this node's identity: at most one own record per key
        record = records.make_record(
            IDENTITIES[who], key, f"http://{host}/m", "p", "1", now=clock.now, ttl=3600
        )
        store.records(digest)  # drops the key's expired records, as put does first
        entries = store.data.get(digest, {})
        newcomer = record.peer_id not in entries
        if len(entries) >= store.max_per_key:
            scope = Counter(label for e in entries.values() if not e.pinned for label in e.labels)
        else:
            store.cull()
            scope = _recount(store)
        labels = admission.labels_for(record, sender)
        outcome = store.put(digest, record.raw, sender, local=local)
        if local:
            own[digest] = record
        if outcome is MergeOutcome.FULL:
            assert newcomer and not local
            assert max(scope[label] for label in labels) == max(scope.values())
        assert store.total() == sum(len(e) for e in store.data.values()) <= store.max_total
        assert all(len(e) <= store.max_per_key for e in store.data.values())
        assert store.label_counts == _recount(store)
        members = {
            label: {id(e) for e in store.label_members[label].values()}
            for label in store.label_members
        }
        assert members == {
            label: {
                id(e)
                for entries in store.data.values()
                for e in entries.values()
                if label in e.labels and not e.pinned
            }
            for label in store.label_counts
        }
        for own_digest, mine in own.items():
            if mine.expires_at > clock.now:
                assert IDENTITIES[0].public.peer_id in {
                    r.peer_id for r in store.records(own_digest)
                }
