"""Fuzz target for DHT provider records (phase_client/dht/records.py): parse_record and try_parse
on any value a peer can send, and on mutated valid signed records. docs/fuzz.md: make fuzz.

Property: parse_record returns a ProviderRecord that keeps every promise of the format, or
raises RecordError; try_parse never raises; a mutated record is never accepted unless what the
identity key signed is unchanged.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from hypothesis import event, given
from hypothesis import strategies as st

from phase_client.canonical import canonical_bytes
from phase_client.dht import records
from phase_client.dht.records import ProviderRecord, RecordError
from phase_client.errors import DocumentError
from phase_client.keys import parse_public_key, peer_id_for
from phase_client.manifest import MIRROR_URL_RE
from tests.conftest import T0, fuzz_settings, key_from_byte
from tests.test_fuzz_manifest import (
    containers,
    emit,
    encode,
    hostile,
    json_values,
    mutate_bytes,
    mutate_tree,
    to_tree,
)

IDENTITIES = [key_from_byte(b) for b in (11, 12, 13)]
plain = st.text(st.characters(min_codepoint=0x20, exclude_categories=("Cs",)), min_size=1)
labels = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,12}", fullmatch=True)
urls = st.builds(
    lambda scheme, host, path: f"{scheme}://{host}/{path}",
    st.sampled_from(["http", "https"]),
    st.from_regex(r"[a-z0-9.-]{1,20}(:[0-9]{1,5})?|\[[0-9a-f:]{2,20}\]:[0-9]{1,5}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9._~/-]{0,40}", fullmatch=True),
)


@st.composite
def valid_records(draw: st.DrawFn) -> tuple[ProviderRecord, int]:
    """A signed record and the index of the identity that signed it."""
    who = draw(st.integers(0, len(IDENTITIES) - 1))
    record = records.make_record(
        IDENTITIES[who],
        records.dht_key(draw(labels), draw(labels)),
        draw(urls),
        draw(plain.filter(lambda s: "\x7f" not in s and len(s) <= records.MAX_NAME)),
        draw(plain.filter(lambda s: "\x7f" not in s and len(s) <= records.MAX_VERSION)),
        now=T0 + draw(st.integers(-records.MAX_FUTURE_SKEW, 0)),
        ttl=draw(st.integers(1, records.MAX_TTL)),
    )
    return record, who


def check_record(record: ProviderRecord, now: int) -> None:
    """Every promise a parsed record makes to discovery and storage."""
    assert len(record.raw) <= records.MAX_RECORD_BYTES
    body = json.loads(record.raw)
    assert canonical_bytes(body) == record.raw and set(body) == records.FIELDS
    assert records.split_key(record.key) == (record.channel, record.arch)
    assert MIRROR_URL_RE.match(record.url) and len(record.url) <= records.MAX_URL
    public = parse_public_key(record.public_key.encode())
    assert record.peer_id == peer_id_for(public.raw)
    assert public.verify(records.signing_bytes(body), record.signature)
    assert record.last_updated <= now + records.MAX_FUTURE_SKEW
    assert now < record.expires_at <= record.last_updated + records.MAX_TTL
    assert record.last_updated < record.expires_at


def parse_or_refuse(raw: Any, now: int, digest: bytes | None) -> ProviderRecord | None:
    try:
        record = records.parse_record(raw, now, digest)
    except RecordError as exc:
        assert records.try_parse(raw, now, digest) is None
        event("refused: " + re.sub(r"\d+", "N", str(exc).split(":")[0])[:40])
        return None
    check_record(record, now)
    assert records.try_parse(raw, now, digest) == record
    event("accepted")
    return record


# --- targets ----------------------------------------------------------------------------------
peer_values = st.one_of(
    st.binary(max_size=1100),
    st.text(max_size=50),
    st.integers(),
    st.none(),
    st.lists(st.binary(max_size=8), max_size=3),
    json_values.map(canonical_bytes),
)


@fuzz_settings(300)
@given(peer_values, st.integers(0, 2**40), st.none() | st.binary(min_size=20, max_size=20))
def test_anything_a_peer_sends(raw: Any, now: int, digest: bytes | None) -> None:
    parse_or_refuse(raw, now, digest)


@fuzz_settings(200)
@given(valid_records(), st.data())
def test_mutated_record_is_refused_unless_unchanged(
    valid: tuple[ProviderRecord, int], data: st.DataObject
) -> None:
    record, _ = valid
    body = json.loads(record.raw)
    if data.draw(st.booleans()):
        raw = mutate_bytes(data, record.raw)
    else:
        tree = to_tree(body)
        for _ in range(data.draw(st.integers(1, 2))):
            mutate_tree(data, tree)
        raw = encode(emit(tree))
    digest = records.key_digest(record.key) if data.draw(st.booleans()) else None
    now = T0 + data.draw(st.integers(-records.MAX_TTL, records.MAX_TTL))
    accepted = parse_or_refuse(raw, now, digest)
    if accepted is not None:
        # Only the signature's own spelling may differ (base64 padding bits): what is signed,
        # and so every field, is the original's.
        assert records.signing_bytes(json.loads(accepted.raw)) == records.signing_bytes(body)
        assert accepted.signature == record.signature


@fuzz_settings(150)
@given(valid_records(), st.data())
def test_resigned_hostile_fields(valid: tuple[ProviderRecord, int], data: st.DataObject) -> None:
    """A peer with a real identity signs whatever it likes: still a record or RecordError."""
    record, who = valid
    tree = to_tree(json.loads(record.raw))
    field = data.draw(st.sampled_from(sorted(records.FIELDS - {"signature"})))
    pairs = tree.pairs
    index = next(i for i, (k, _) in enumerate(pairs) if k == field)
    pairs[index] = (field, data.draw(hostile))
    if containers(pairs[index][1]) and data.draw(st.booleans()):
        mutate_tree(data, pairs[index][1])
    try:
        body = json.loads(encode(emit(tree)))
        unsigned = records.signing_bytes(body)
    except (ValueError, RecursionError, DocumentError):  # no JSON a signer could produce
        event("not signable")
        return
    body["signature"] = base64.b64encode(IDENTITIES[who].sign(unsigned)).decode()
    try:
        raw = canonical_bytes(body)
    except DocumentError:
        event("not signable")
        return
    parse_or_refuse(raw, T0, None)
