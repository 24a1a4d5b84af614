"""Canonical JSON: the exact bytes that signatures cover. Pure: no I/O.

Canonical JSON = UTF-8, object keys sorted, no whitespace, non-ASCII kept as UTF-8. Only objects,
arrays, strings, integers, booleans and null exist; floats (and NaN/Infinity) are refused because
their textual form is not unique across implementations. Duplicate object keys are refused when
parsing, because two parsers could otherwise see two different documents behind one signature.

Errors are ``DocumentError``: each format built on this (manifests, DHT records) turns them into its
own subclass.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import DocumentError

MAX_DEPTH = 32
MAX_INT_DIGITS = 20  # 2**64 has 20 digits


def _refuse_float(text: str) -> Any:
    raise DocumentError(f"floating-point number {text!r} is not allowed")


def _bounded_int(text: str) -> int:
    # A manifest's integers fit 64 bits; refusing long digit runs up front also keeps int()
    # from raising its own ValueError past 4300 digits (CVE-2020-10735's limit).
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise DocumentError(f"integer of {len(text)} characters is too long")
    return int(text)


def _refuse_constant(text: str) -> Any:
    raise DocumentError(f"{text} is not valid JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise DocumentError(f"duplicate key {key!r}")
        result[key] = value
    return result


def check_types(value: Any, depth: int = 0) -> None:
    """Raise DocumentError unless ``value`` is made only of canonical-JSON types."""
    if depth > MAX_DEPTH:
        raise DocumentError(f"nesting deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise DocumentError("string is not valid Unicode (lone surrogate)") from exc
        return
    if isinstance(value, float):
        raise DocumentError(f"floating-point number {value!r} is not allowed")
    if isinstance(value, list):
        for item in value:
            check_types(item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise DocumentError(f"object key {key!r} is not a string")
            check_types(key, depth + 1)
            check_types(item, depth + 1)
        return
    raise DocumentError(f"value of type {type(value).__name__} is not allowed in canonical JSON")


def canonical_bytes(value: Any) -> bytes:
    """The canonical encoding of ``value`` (raises DocumentError on a non-canonical type)."""
    check_types(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def loads_strict(data: bytes) -> Any:
    """Parse JSON bytes, refusing floats, NaN/Infinity, duplicate keys and invalid UTF-8."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError(f"not valid UTF-8 at byte {exc.start}") from exc
    if text.startswith("\ufeff"):
        raise DocumentError("byte-order mark is not allowed")
    try:
        value = json.loads(
            text,
            parse_float=_refuse_float,
            parse_int=_bounded_int,
            parse_constant=_refuse_constant,
            object_pairs_hook=_no_duplicates,
        )
    except json.JSONDecodeError as exc:
        raise DocumentError(
            f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except RecursionError as exc:
        raise DocumentError("JSON nested too deeply") from exc
    except ValueError as exc:  # anything else json or int() refuses is still malformed input
        raise DocumentError(f"not valid JSON: {exc}") from exc
    check_types(value)
    return value
