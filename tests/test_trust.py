"""The trust rules, exhaustively: signatures, threshold, freshness, rollback, mismatch."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phase_client.errors import (
    ExpiredError,
    ManifestError,
    MismatchError,
    RollbackError,
    SignatureError,
    UsageError,
)
from phase_client.keys import SigningKey
from phase_client.manifest import manifest_from_document, parse_manifest
from phase_client.trust import (
    MAX_FLOOR_LEAD,
    AcceptedRecord,
    TrustPolicy,
    content_digest,
    effective_now,
    verify,
)

from .conftest import T0, T_EXPIRES, key_from_byte, signed_document

NOW = T0 + 3600


def policy(*keys: SigningKey, **kw: Any) -> TrustPolicy:
    return TrustPolicy(keys=tuple(k.public for k in keys), **kw)


def check(document: dict[str, Any], pol: TrustPolicy, **kw: Any):  # type: ignore[no-untyped-def]
    kw.setdefault("now", NOW)
    return verify(manifest_from_document(document), pol, **kw)


def test_valid_manifest_verifies(key: SigningKey) -> None:
    verified = check(signed_document(key), policy(key))
    assert verified.signed_by == (key.public.keyid,)
    assert verified.digest == content_digest(verified.manifest)


def test_unsigned_manifest_refused(key: SigningKey) -> None:
    with pytest.raises(SignatureError, match="not signed"):
        check(signed_document(), policy(key))


def test_wrong_key_refused(key: SigningKey, other_key: SigningKey) -> None:
    with pytest.raises(SignatureError, match="no valid signature"):
        check(signed_document(other_key), policy(key))


def test_keyid_is_only_a_hint(key: SigningKey, other_key: SigningKey) -> None:
    document = signed_document(key)
    document["signatures"][0]["keyid"] = other_key.public.keyid
    assert check(document, policy(key)).signed_by == (key.public.keyid,)


def test_threshold_counts_distinct_keys(key: SigningKey, other_key: SigningKey) -> None:
    two = policy(key, other_key, threshold=2)
    assert len(check(signed_document(key, other_key), two).signed_by) == 2
    document = signed_document(key)
    document["signatures"] = document["signatures"] * 2  # the same key twice counts once
    with pytest.raises(SignatureError, match="only 1 of the required 2"):
        check(document, two)


def test_threshold_larger_than_keys_is_usage_error(key: SigningKey) -> None:
    with pytest.raises(UsageError):
        policy(key, key, threshold=2)  # the same key given twice is one key
    with pytest.raises(UsageError):
        policy(key, threshold=0)
    with pytest.raises(UsageError):
        TrustPolicy(keys=())
    good = policy(key)
    with pytest.raises(UsageError):  # a changed copy goes through the same checks
        good._replace(threshold=0)
    with pytest.raises(UsageError):
        TrustPolicy._make(((), 1, None, None))
    assert good._replace(arch="amd64").arch == "x86_64"


def test_signature_by_untrusted_key_does_not_count(key: SigningKey, other_key: SigningKey) -> None:
    third = key_from_byte(3)
    with pytest.raises(SignatureError):
        check(signed_document(key, third), policy(key, other_key, threshold=2))


def test_expired(key: SigningKey) -> None:
    with pytest.raises(ExpiredError, match="expired at 2025-12-26T12:00:00Z"):
        check(signed_document(key), policy(key), now=T_EXPIRES)
    check(signed_document(key), policy(key), now=T_EXPIRES - 1)


def test_effective_now_never_goes_back() -> None:
    assert effective_now(0, T0, None) == T0
    assert effective_now(0, T0, AcceptedRecord(1, T0 + 5, "x")) == T0 + 5
    assert effective_now(T0 + 9, T0, AcceptedRecord(1, T0 + 5, "x")) == T0 + 9
    assert effective_now(0, T0, AcceptedRecord(1, T0 + 5, "x", floor=T0 + 7)) == T0 + 7


def test_a_far_future_created_at_moves_the_floor_by_a_day_at_most(key: SigningKey) -> None:
    year_2030 = 1_900_000_000
    document = signed_document(key, created_at=year_2030, expires_at=year_2030 + 86400)
    verified = check(document, policy(key), now=NOW)
    assert verified.clock_floor == NOW + MAX_FLOOR_LEAD
    # Accepting it again (say, at every boot) does not ratchet the floor further.
    again = check(document, policy(key), now=NOW, previous=verified.record)
    assert again.clock_floor == NOW + MAX_FLOOR_LEAD
    # A normal manifest created now, valid for 30 days, still verifies after it.
    later = signed_document(
        key, sequence=verified.manifest.sequence + 1, expires_at=NOW + 30 * 86400
    )
    now = effective_now(NOW, T0, verified.record)
    assert check(later, policy(key), now=now, previous=verified.record)


def test_the_floor_never_goes_back(key: SigningKey) -> None:
    held = AcceptedRecord(1, T0, "x", floor=NOW + 100)
    document = signed_document(key, sequence=2)  # created_at T0: below the floor held
    assert check(document, policy(key), now=NOW + 100, previous=held).clock_floor == NOW + 100


def test_wrong_channel_or_arch(key: SigningKey) -> None:
    with pytest.raises(MismatchError, match="channel 'stable', not 'testing'"):
        check(signed_document(key), policy(key, channel="testing"))
    with pytest.raises(MismatchError, match="arch 'x86_64', not 'arm64'"):
        check(signed_document(key), policy(key, arch="aarch64"))
    assert check(signed_document(key), policy(key, channel="stable", arch="amd64"))


def test_rollback(key: SigningKey) -> None:
    document = signed_document(key)
    digest = check(document, policy(key)).digest
    with pytest.raises(RollbackError, match="lower than 43"):
        check(document, policy(key), previous=AcceptedRecord(43, T0, "x"))
    # Equal sequence: fine for identical signed content, refused for other content.
    assert check(document, policy(key), previous=AcceptedRecord(42, T0, digest))
    with pytest.raises(RollbackError, match="different content"):
        check(document, policy(key), previous=AcceptedRecord(42, T0, "0" * 64))
    assert check(document, policy(key), previous=AcceptedRecord(41, T0, "x"))


def test_signatures_are_checked_before_anything_else(
    key: SigningKey, other_key: SigningKey
) -> None:
    # An unsigned manifest that is also expired and for the wrong channel: the reason given is
    # the signature, so nothing unsigned is ever reported as if it were a real manifest.
    with pytest.raises(SignatureError):
        check(signed_document(other_key), policy(key, channel="x"), now=T_EXPIRES + 10)


# --- properties -------------------------------------------------------------------------------

SIGNED_KEY = key_from_byte(7)
BASE = signed_document(SIGNED_KEY)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    if isinstance(value, dict):
        out = []
        for k, v in value.items():
            if prefix == () and k == "signatures":
                continue
            out += _paths(v, (*prefix, k))
        return out
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _paths(v, (*prefix, i))]
    return [prefix]


LEAF_PATHS = _paths(BASE)


def _set(document: dict[str, Any], path: tuple, value: Any) -> None:
    target: Any = document
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value


def _get(document: dict[str, Any], path: tuple) -> Any:
    for part in path:
        document = document[part]
    return document


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(LEAF_PATHS), st.data())
def test_any_change_to_a_signed_field_breaks_verification(path: tuple, data: st.DataObject) -> None:
    old = _get(BASE, path)
    if isinstance(old, bool):
        new: Any = not old
    elif isinstance(old, int):
        new = data.draw(st.integers(min_value=0, max_value=2**40).filter(lambda v: v != old))
    else:
        new = data.draw(st.text(min_size=1, max_size=20).filter(lambda v: v != old))
    document = copy.deepcopy(BASE)
    _set(document, path, new)
    try:
        manifest = manifest_from_document(document)
    except ManifestError:
        return  # the change made it malformed: refused before any trust decision
    with pytest.raises(SignatureError):
        verify(manifest, policy(SIGNED_KEY), now=NOW)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(sorted(BASE)), st.text(min_size=1, max_size=10))
def test_adding_a_field_breaks_verification(existing: str, name: str) -> None:
    document = copy.deepcopy(BASE)
    if name in document:
        return
    document[name] = existing
    with pytest.raises(SignatureError):
        verify(manifest_from_document(document), policy(SIGNED_KEY), now=NOW)


@settings(max_examples=100, deadline=None)
@given(st.permutations(sorted(BASE)), st.sampled_from([None, 0, 1, 4]), st.booleans())
def test_reserialising_in_any_order_or_indent_still_verifies(
    order: list[str], indent: int | None, ascii_: bool
) -> None:
    reordered = {k: BASE[k] for k in order}
    text = json.dumps(reordered, indent=indent, ensure_ascii=ascii_).encode()
    assert verify(parse_manifest(text), policy(SIGNED_KEY), now=NOW)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=63), st.integers(min_value=0, max_value=7))
def test_any_bit_flip_in_the_signature_breaks_it(byte: int, bit: int) -> None:
    import base64

    document = copy.deepcopy(BASE)
    sig = bytearray(base64.b64decode(document["signatures"][0]["sig"]))
    sig[byte] ^= 1 << bit
    document["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    with pytest.raises(SignatureError):
        verify(manifest_from_document(document), policy(SIGNED_KEY), now=NOW)
