"""Canonical JSON: exact bytes, refusals, and independence from input layout."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phase_client.canonical import canonical_bytes, loads_strict
from phase_client.errors import DocumentError


def test_sorted_keys_no_whitespace_utf8_kept() -> None:
    assert (
        canonical_bytes({"b": 1, "a": ["é", None, True]}) == '{"a":["é",null,true],"b":1}'.encode()
    )


def test_nested_keys_sorted_by_code_point() -> None:
    assert canonical_bytes({"Z": {"b": 0, "B": 1}, "a": 2}) == b'{"Z":{"B":1,"b":0},"a":2}'


@pytest.mark.parametrize("text", ["1.5", "1e3", "-0.0", "NaN", "Infinity", "-Infinity"])
def test_floats_and_constants_refused(text: str) -> None:
    with pytest.raises(DocumentError):
        loads_strict(f'{{"x": {text}}}'.encode())


def test_float_refused_when_canonicalising() -> None:
    with pytest.raises(DocumentError, match="floating-point"):
        canonical_bytes({"x": 1.0})


def test_duplicate_keys_refused() -> None:
    with pytest.raises(DocumentError, match="duplicate key 'a'"):
        loads_strict(b'{"a": 1, "a": 2}')


@pytest.mark.parametrize(
    "data",
    [b"\xff\xfe{}", b"\xef\xbb\xbf{}", b'{"a": "\\ud800"}', b"[" * 5000 + b"]" * 5000, b"{", b""],
)
def test_garbage_is_a_manifest_error(data: bytes) -> None:
    with pytest.raises(DocumentError):
        loads_strict(data)


@pytest.mark.parametrize("digits", [21, 4301, 100_000])
def test_huge_integers_are_a_manifest_error_not_a_crash(digits: int) -> None:
    # int() itself raises ValueError past 4300 digits: that must stay the document's failure.
    for text in (b"9" * digits, b"-" + b"9" * digits):
        with pytest.raises(DocumentError, match="too long"):
            loads_strict(b'{"sequence": ' + text + b"}")


def test_largest_64_bit_integers_parse() -> None:
    assert loads_strict(b"[18446744073709551615, -9223372036854775808]") == [2**64 - 1, -(2**63)]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values, st.integers(min_value=0, max_value=4), st.booleans())
def test_any_layout_gives_the_same_canonical_bytes(
    value: object, indent: int, ascii_: bool
) -> None:
    text = json.dumps(value, indent=indent or None, ensure_ascii=ascii_)
    assert canonical_bytes(loads_strict(text.encode())) == canonical_bytes(value)
