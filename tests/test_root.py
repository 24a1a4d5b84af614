"""The versioned root of trust, pure (phase_client/root.py, docs/trust.md): the document, a step,
a walk of the chain, the final root's freshness, and manifests against the release role."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Iterable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phase_client.errors import (
    ExpiredError,
    RollbackError,
    RootChainError,
    RootError,
    SignatureError,
    UsageError,
)
from phase_client.keys import SigningKey
from phase_client.manifest import manifest_from_document, sign_document, signed_bytes_of
from phase_client.root import (
    MAX_CHAIN_STEPS,
    MAX_ROOT_BYTES,
    SIGNED_PREFIX,
    Role,
    Root,
    accept,
    build_root_document,
    check_fresh,
    check_step,
    parse_root,
    release_policy,
    root_from_document,
    root_from_keys,
    sign_root_document,
    walk,
)
from phase_client.trust import verify

from .conftest import T0, key_from_byte, make_document

NOW = T0 + 3600
ROOT_EXPIRES = T0 + 365 * 86400

# Root keys R1..R5, release keys K1..K5: deterministic.
R = [key_from_byte(100 + i) for i in range(6)]
K = [key_from_byte(150 + i) for i in range(6)]


def role(keys: Sequence[SigningKey], threshold: int = 1) -> Role:
    return Role(tuple(k.public for k in keys), threshold)


def root_document(
    version: int,
    root_keys: Sequence[SigningKey],
    release_keys: Sequence[SigningKey],
    *,
    signed_by: Iterable[SigningKey] = (),
    root_threshold: int = 1,
    release_threshold: int = 1,
    expires_at: int = ROOT_EXPIRES,
) -> dict[str, Any]:
    document = build_root_document(
        version,
        expires_at,
        {
            "root": role(root_keys, root_threshold),
            "release": role(release_keys, release_threshold),
        },
    )
    for key in signed_by:
        document = sign_root_document(document, key)
    return document


def raw(document: dict[str, Any]) -> bytes:
    return json.dumps(document, indent=2).encode()


def make_root(*args: Any, **kw: Any) -> Root:
    return parse_root(raw(root_document(*args, **kw)))


def chain_source(*documents: dict[str, Any]) -> Any:
    """candidates(N) over in-memory documents, recording which versions were asked for."""
    by_version = {d["version"]: raw(d) for d in documents}
    asked: list[int] = []

    def candidates(version: int) -> Iterable[tuple[str, bytes]]:
        asked.append(version)
        if version in by_version:
            yield f"mem/{version}", by_version[version]

    candidates.asked = asked  # type: ignore[attr-defined]
    return candidates


ROOT1 = root_document(1, [R[0]], [K[0]], signed_by=[R[0]])
# 2: root key R0 -> R1, release K0 -> K1; signed by the old root key and the new one.
ROOT2 = root_document(2, [R[1]], [K[1]], signed_by=[R[0], R[1]])
# 3: root key R1 -> R2, release K1 -> K2 (K0, K1 revoked).
ROOT3 = root_document(3, [R[2]], [K[2]], signed_by=[R[1], R[2]])


def manifest(*signers: SigningKey, sequence: int = 42) -> Any:
    document = make_document(sequence=sequence)
    for key in signers:
        document = sign_document(document, key)
    return manifest_from_document(document)


# -- the document -----------------------------------------------------------------------------


def test_a_root_round_trips_and_its_signature_covers_the_prefix() -> None:
    root = parse_root(raw(ROOT1))
    assert root.version == 1 and root.expires_at == ROOT_EXPIRES
    assert root.root_role.keys == (R[0].public,) and root.release_role.threshold == 1
    body = {k: v for k, v in ROOT1.items() if k != "signatures"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    assert root.signed == SIGNED_PREFIX + canonical
    # Layout does not matter: the canonical bytes are recomputed from what was parsed.
    assert parse_root(json.dumps(ROOT1, separators=(",", ":")).encode()).digest == root.digest


def test_a_manifest_signature_does_not_sign_a_root() -> None:
    """Distinct prefixes: a signature over a manifest's bytes never counts on a root."""
    document = root_document(2, [R[0]], [K[0]])
    body = {k: v for k, v in document.items() if k != "signatures"}
    forged = base64.b64encode(R[0].sign(signed_bytes_of(body))).decode()
    document["signatures"] = [{"keyid": R[0].public.keyid, "sig": forged}]
    with pytest.raises(RootChainError, match="signed by 0 of the 1"):
        accept(parse_root(raw(ROOT1)), raw(document))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("roles"), "missing field 'roles'"),
        (lambda d: d["roles"].pop("release"), "role 'release' is required"),
        (lambda d: d["roles"].pop("root"), "role 'root' is required"),
        (lambda d: d.update(root_format=2), "unsupported root_format"),
        (lambda d: d.update(version=0), "positive integer"),
        (lambda d: d.update(version=True), "must be an integer"),
        (lambda d: d.update(expires_at="tomorrow"), "expires_at"),
        (lambda d: d["roles"]["root"].update(threshold=2), "threshold must be 1 to 1"),
        (lambda d: d["roles"]["root"].update(threshold=0), "threshold must be 1 to 1"),
        (lambda d: d["roles"]["root"].update(keys=[]), "1 to 256 keys"),
        (lambda d: d["roles"]["root"].update(keys=["ed25519:00"]), "ed25519:<64"),
        (lambda d: d["roles"]["root"]["keys"].append(R[0].public.keyid), "names a key twice"),
        (lambda d: d["signatures"].append({"keyid": "x", "sig": ""}), "keyid must be"),
    ],
)
def test_malformed_roots_are_refused(change: Any, message: str) -> None:
    document = copy.deepcopy(ROOT1)
    change(document)
    with pytest.raises(RootError, match=message):
        parse_root(raw(document))


def test_not_canonical_json_is_a_root_error() -> None:
    with pytest.raises(RootError, match="floating-point"):
        parse_root(raw(ROOT1).replace(b'"version": 1', b'"version": 1.0'))
    with pytest.raises(RootError, match="duplicate key"):
        parse_root(b'{"version": 1, "version": 1}')


def test_an_oversized_root_is_refused() -> None:
    document = copy.deepcopy(ROOT2)
    document["padding"] = "x" * MAX_ROOT_BYTES
    with pytest.raises(RootError, match="512 KiB"):
        parse_root(raw(document))
    result = walk(parse_root(raw(ROOT1)), chain_source(document))
    assert result.root.version == 1 and "512 KiB" in result.refused[0]


def test_unknown_members_and_roles_are_signed_and_ignored() -> None:
    document = root_document(2, [R[1]], [K[1]])
    document["roles"]["mirror"] = {"keys": [K[5].public.keyid], "threshold": 1}
    document["comment"] = "rotated after the laptop was lost"
    document = sign_root_document(sign_root_document(document, R[0]), R[1])
    root = accept(parse_root(raw(ROOT1)), raw(document))
    assert set(root.roles) == {"mirror", "release", "root"}
    tampered = copy.deepcopy(document)
    tampered["comment"] = "nothing happened"
    with pytest.raises(RootChainError):
        accept(parse_root(raw(ROOT1)), raw(tampered))


# -- a step -----------------------------------------------------------------------------------


def test_chain_one_two_three_is_accepted() -> None:
    source = chain_source(ROOT2, ROOT3)
    result = walk(parse_root(raw(ROOT1)), source)
    assert [r.version for r in result.steps] == [2, 3]
    assert result.root.release_role.keys == (K[2].public,)
    assert not result.bounded and not result.refused
    assert source.asked == [2, 3, 4]  # each one after the one before verified, then the end


def test_a_gap_is_refused() -> None:
    """1 -> 3: root 3 is signed by root 2's keys, which root 1 never vouched for."""
    with pytest.raises(RootChainError, match="gap"):
        accept(parse_root(raw(ROOT1)), raw(ROOT3))
    # Even signed by root 1's own key, a version that skips one is a gap.
    skipping = root_document(3, [R[0]], [K[2]], signed_by=[R[0]])
    with pytest.raises(RootChainError, match="gap"):
        accept(parse_root(raw(ROOT1)), raw(skipping))
    result = walk(parse_root(raw(ROOT1)), lambda n: [(f"mem/{n}", raw(skipping))])
    assert result.root.version == 1 and "gap" in result.refused[0]


def test_signed_by_the_new_keys_only_is_refused() -> None:
    only_new = root_document(2, [R[1]], [K[1]], signed_by=[R[1]])
    with pytest.raises(RootChainError, match="signed by 0 of the 1 required root keys of root 1"):
        accept(parse_root(raw(ROOT1)), raw(only_new))


def test_signed_by_the_old_keys_only_is_refused() -> None:
    only_old = root_document(2, [R[1]], [K[1]], signed_by=[R[0]])
    with pytest.raises(RootChainError, match="signed by 0 of the 1 required root keys of itself"):
        accept(parse_root(raw(ROOT1)), raw(only_old))


def test_threshold_two_of_three_with_one_key_lost_still_rotates() -> None:
    one = root_document(1, R[0:3], [K[0]], root_threshold=2, signed_by=R[0:2])
    # R2 is lost: R0 and R1 (2 of 3 of root 1) sign root 2, which replaces R2 by R3.
    two = root_document(2, [R[0], R[1], R[3]], [K[0]], root_threshold=2, signed_by=[R[0], R[1]])
    root = accept(parse_root(raw(one)), raw(two))
    assert R[2].public not in root.root_role.keys


def test_one_of_two_required_old_keys_is_not_enough() -> None:
    one = root_document(1, R[0:3], [K[0]], root_threshold=2, signed_by=R[0:2])
    # A thief with R0 alone names his own root keys and signs with all of them.
    stolen = root_document(2, [R[0], R[4]], [K[4]], signed_by=[R[0], R[4]])
    with pytest.raises(RootChainError, match="signed by 1 of the 2 required root keys of root 1"):
        accept(parse_root(raw(one)), raw(stolen))


def test_the_same_key_twice_counts_once() -> None:
    one = root_document(1, R[0:2], [K[0]], root_threshold=2, signed_by=R[0:2])
    two = root_document(2, R[0:2], [K[1]], root_threshold=2, signed_by=R[0:2])
    doubled = copy.deepcopy(two)
    doubled["signatures"] = [two["signatures"][0], two["signatures"][0]]
    with pytest.raises(RootChainError, match="signed by 1 of the 2"):
        accept(parse_root(raw(one)), raw(doubled))


def test_rollback_to_an_older_root_is_refused() -> None:
    three = parse_root(raw(ROOT3))
    with pytest.raises(RollbackError, match="lower than 3"):
        check_step(three, parse_root(raw(ROOT2)))
    # A source answering "4" with root 2 (an old copy) moves nothing.
    result = walk(three, lambda n: [(f"mem/{n}", raw(ROOT2))])
    assert result.root is three and "lower than 3" in result.refused[0]


def test_a_fork_is_refused() -> None:
    other_two = root_document(2, [R[1]], [K[4]], signed_by=[R[0], R[1]])
    held = parse_root(raw(ROOT2))
    with pytest.raises(RootChainError, match="fork"):
        check_step(held, parse_root(raw(other_two)))
    with pytest.raises(RootChainError, match="the one held"):
        check_step(held, parse_root(raw(ROOT2)))


def test_intermediate_roots_may_have_expired_but_not_the_final_one() -> None:
    two = root_document(2, [R[1]], [K[1]], signed_by=[R[0], R[1]], expires_at=T0 + 1)
    later = T0 + 400 * 86400
    three = root_document(3, [R[2]], [K[2]], signed_by=[R[1], R[2]], expires_at=later + 1)
    result = walk(parse_root(raw(ROOT1)), chain_source(two, three))
    assert result.root.version == 3
    check_fresh(result.root, later)
    with pytest.raises(ExpiredError, match="root version 3 expired at"):
        check_fresh(result.root, later + 1)


# -- the walk ---------------------------------------------------------------------------------


def endless_key(version: int) -> SigningKey:
    return R[0] if version == 1 else key_from_byte(version % 200 + 20)


def endless(version: int) -> Iterable[tuple[str, bytes]]:
    """A chain that never ends: root N is made on demand, each properly signed."""
    keys = [endless_key(version - 1), endless_key(version)]
    yield f"mem/{version}", raw(root_document(version, keys[1:], [K[0]], signed_by=keys))


def test_an_endless_chain_stops_at_the_bound() -> None:
    result = walk(parse_root(raw(ROOT1)), endless)
    assert result.bounded and len(result.steps) == MAX_CHAIN_STEPS
    assert result.root.version == 1 + MAX_CHAIN_STEPS
    # The next run goes on from where this one stopped, again bounded.
    again = walk(result.root, endless, max_steps=3)
    assert again.bounded and again.root.version == 4 + MAX_CHAIN_STEPS


def test_a_bad_copy_is_that_copys_failure_and_the_next_copy_is_tried() -> None:
    asked: list[str] = []

    def candidates(version: int) -> Iterable[tuple[str, bytes]]:
        for where, data in [("hostile", b"{not json"), ("good", raw(ROOT2)), ("never", b"")]:
            if version == 2:
                asked.append(where)
                yield where, data

    result = walk(parse_root(raw(ROOT1)), candidates)
    assert result.root.version == 2
    assert asked == ["hostile", "good"]  # the third copy is never fetched
    assert result.refused[0].startswith("hostile: ")


# -- manifests against the release role -------------------------------------------------------


def test_the_revoked_keys_manifest_is_refused_after_rotation() -> None:
    one = parse_root(raw(ROOT1))
    three = walk(one, chain_source(ROOT2, ROOT3)).root
    old = manifest(K[0], sequence=10**6)  # newer by sequence, signed only by revoked K0
    assert verify(old, release_policy(one), now=NOW).signed_by == (K[0].public.keyid,)
    with pytest.raises(SignatureError, match="no valid signature"):
        verify(old, release_policy(three), now=NOW)
    assert verify(manifest(K[2]), release_policy(three), now=NOW).signed_by == (K[2].public.keyid,)


def test_mix_and_match_manifest_valid_under_root_one_is_refused() -> None:
    """A manifest that verified under root 1 (K0) is refused by a client holding root 2, even
    though root 2 was signed by root 1's key: roots sign roots, release keys sign manifests."""
    two = walk(parse_root(raw(ROOT1)), chain_source(ROOT2)).root
    with pytest.raises(SignatureError):
        verify(manifest(K[0]), release_policy(two), now=NOW)
    # A root key is not a release key either.
    with pytest.raises(SignatureError):
        verify(manifest(R[1]), release_policy(two), now=NOW)


def test_release_threshold_applies_to_manifests() -> None:
    one = root_document(1, [R[0]], K[0:3], release_threshold=2, signed_by=[R[0]])
    root = parse_root(raw(one))
    with pytest.raises(SignatureError, match="only 1 of the required 2"):
        verify(manifest(K[0]), release_policy(root), now=NOW)
    assert len(verify(manifest(K[0], K[2]), release_policy(root), now=NOW).signed_by) == 2


def test_bare_keys_are_a_version_one_root_in_every_role() -> None:
    root = root_from_keys([K[0].public, K[1].public], threshold=2)
    assert root.version == 1 and root.expires_at is None and root.digest == ""
    assert root.root_role == root.release_role == role(K[0:2], 2)
    check_fresh(root, 2**62)  # never expires
    # Such a root rotates like any other: both old keys (its threshold) and the new ones sign.
    two = root_document(2, [R[1]], [K[2]], signed_by=[K[0], K[1], R[1]])
    assert accept(root, raw(two)).version == 2
    with pytest.raises(RootChainError, match="signed by 1 of the 2"):
        accept(root, raw(root_document(2, [R[1]], [K[2]], signed_by=[K[0], R[1]])))
    with pytest.raises(UsageError, match="no trusted key"):
        root_from_keys([])
    with pytest.raises(UsageError, match="--threshold 3"):
        root_from_keys([K[0].public, K[1].public], threshold=3)


def test_to_json_reports_the_root() -> None:
    report = parse_root(raw(ROOT1)).to_json()
    assert report["version"] == 1 and report["expires_at"] == "2026-11-26T12:00:00Z"
    assert report["release"] == {"keys": [K[0].public.keyid], "threshold": 1}


def test_documents_validate_on_build() -> None:
    with pytest.raises(RootError):
        build_root_document(0, ROOT_EXPIRES, {"root": role([R[0]]), "release": role([K[0]])})
    with pytest.raises(RootError, match="role 'release' is required"):
        build_root_document(1, ROOT_EXPIRES, {"root": role([R[0]])})
    assert root_from_document(ROOT1).version == 1


# -- properties -------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    old=st.integers(1, 4),
    new=st.integers(1, 4),
    data=st.data(),
)
def test_a_step_is_accepted_exactly_when_both_thresholds_sign(
    old: int, new: int, data: st.DataObject
) -> None:
    old_keys, new_keys = R[:4], [*R[2:4], K[4], K[5]]
    t_old = data.draw(st.integers(1, old), label="old threshold")
    t_new = data.draw(st.integers(1, new), label="new threshold")
    signing = data.draw(st.sets(st.sampled_from(range(8))), label="signers")
    pool = [*old_keys, K[4], K[5], *R[4:6]]
    held = make_root(1, old_keys[:old], [K[0]], root_threshold=t_old)
    document = root_document(
        2,
        new_keys[:new],
        [K[1]],
        root_threshold=t_new,
        signed_by=[pool[i] for i in sorted(signing)],
    )
    signers_ = {pool[i].public for i in signing}
    ok = (
        len(signers_ & set(k.public for k in old_keys[:old])) >= t_old
        and len(signers_ & set(k.public for k in new_keys[:new])) >= t_new
    )
    if ok:
        assert accept(held, raw(document)).version == 2
    else:
        with pytest.raises(RootChainError):
            accept(held, raw(document))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 8), max_size=10))
def test_whatever_versions_are_served_the_walk_only_moves_up_by_one(served: list[int]) -> None:
    """A source serving arbitrary (validly signed) versions: the walk accepts only N+1 each
    time, so the result is a contiguous prefix of 2, 3, ..."""
    documents = {
        v: raw(root_document(v, [R[0]], [K[v % 5]], signed_by=[R[0]])) for v in range(1, 9)
    }
    answers = iter(served)

    def candidates(version: int) -> Iterable[tuple[str, bytes]]:
        for v in answers:
            yield f"v{v}", documents[v]

    result = walk(parse_root(documents[1]), candidates)
    versions = [r.version for r in result.steps]
    assert versions == list(range(2, 2 + len(versions)))
    # Never higher than what was offered.
    assert result.root.version <= max([1, *served])
