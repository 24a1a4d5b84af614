"""Fuzz targets for the root document and the chain walk (phase_client/root.py), like the
manifest's (docs/fuzz.md): any bytes give a Root or a RootError, never another exception; a
mutated signed root never follows its predecessor unless the signed content is unchanged; a walk
over hostile copies never raises and only ever moves up by one verified version."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from phase_client.errors import RollbackError, RootChainError, RootError
from phase_client.root import accept, parse_root, walk
from tests.conftest import fuzz_settings

from .test_root import K, R, raw, root_document

ROOT1 = parse_root(raw(root_document(1, [R[0]], [K[0]], signed_by=[R[0]])))
ROOT2 = root_document(2, [R[1]], [K[1]], signed_by=[R[0], R[1]])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)


@fuzz_settings(300)
@given(st.binary(max_size=2000))
def test_any_bytes_are_a_root_or_a_root_error(data: bytes) -> None:
    with contextlib.suppress(RootError):
        parse_root(data)


@fuzz_settings(200)
@given(st.sampled_from(sorted(ROOT2)), json_values)
def test_a_changed_member_never_verifies(member: str, value: Any) -> None:
    document = json.loads(raw(ROOT2))
    if member == "signatures" or document[member] == value:
        return
    document[member] = value
    try:
        accept(ROOT1, json.dumps(document).encode())
    except (RootError, RootChainError, RollbackError):
        return
    raise AssertionError(f"a root with {member} changed to {value!r} was accepted")


@fuzz_settings(100)
@given(st.lists(st.binary(max_size=300) | st.just(raw(ROOT2)), max_size=6))
def test_a_walk_over_hostile_copies_never_raises(copies: list[bytes]) -> None:
    def candidates(version: int) -> Iterable[tuple[str, bytes]]:
        for index, data in enumerate(copies):
            yield f"copy {index}", data

    result = walk(ROOT1, candidates)
    assert result.root.version == (2 if raw(ROOT2) in copies else 1)
