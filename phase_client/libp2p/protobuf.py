"""A tiny protobuf (proto2/proto3 wire format) codec: enough for libp2p's messages. Pure.

Decoding gives ``(field number, wire type, value)`` triples: an int for varints, bytes for
length-delimited fields; fixed32/fixed64 fields are returned as bytes and groups are refused.
Every length is checked against what is left, so a hostile message can only fail, never make
us allocate more than its own size.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from . import varint
from .errors import ProtocolError

VARINT = 0
FIXED64 = 1
LEN = 2
FIXED32 = 5
MAX_FIELDS = 4096  # per message: a bound on the work one message can cause


def field_varint(number: int, value: int) -> bytes:
    return varint.encode(number << 3 | VARINT) + varint.encode(value)


def field_bytes(number: int, value: bytes | str) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return varint.encode(number << 3 | LEN) + varint.encode(len(data)) + data


def iter_fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    offset = 0
    count = 0
    while offset < len(data):
        count += 1
        if count > MAX_FIELDS:
            raise ProtocolError(f"protobuf message with more than {MAX_FIELDS} fields")
        tag, offset = varint.decode(data, offset)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise ProtocolError("protobuf field number 0")
        if wire == VARINT:
            value, offset = varint.decode(data, offset)
            yield number, wire, value
        elif wire == LEN:
            length, offset = varint.decode(data, offset)
            if length > len(data) - offset:
                raise ProtocolError("protobuf field longer than its message")
            yield number, wire, bytes(data[offset : offset + length])
            offset += length
        elif wire in (FIXED64, FIXED32):
            size = 8 if wire == FIXED64 else 4
            if size > len(data) - offset:
                raise ProtocolError("truncated protobuf fixed field")
            yield number, wire, bytes(data[offset : offset + size])
            offset += size
        else:
            raise ProtocolError(f"unsupported protobuf wire type {wire}")


def fields(data: bytes) -> dict[int, list[int | bytes]]:
    """Every field's values by number, in order (repeated fields keep all of theirs)."""
    out: dict[int, list[int | bytes]] = {}
    for number, _wire, value in iter_fields(data):
        out.setdefault(number, []).append(value)
    return out


def one_bytes(found: dict[int, list[int | bytes]], number: int) -> bytes | None:
    """The last value of a bytes field (protobuf: the last one wins); ProtocolError on a type
    mismatch."""
    values = found.get(number)
    if not values:
        return None
    value = values[-1]
    if not isinstance(value, bytes):
        raise ProtocolError(f"protobuf field {number} is not length-delimited")
    return value


def one_int(found: dict[int, list[int | bytes]], number: int) -> int | None:
    values = found.get(number)
    if not values:
        return None
    value = values[-1]
    if not isinstance(value, int):
        raise ProtocolError(f"protobuf field {number} is not a varint")
    return value


def all_bytes(found: dict[int, list[int | bytes]], number: int) -> list[bytes]:
    out = []
    for value in found.get(number, []):
        if not isinstance(value, bytes):
            raise ProtocolError(f"protobuf field {number} is not length-delimited")
        out.append(value)
    return out


def join(parts: Iterable[bytes]) -> bytes:
    return b"".join(parts)


def length_prefixed(message: bytes) -> bytes:
    """A message as libp2p streams carry it: varint length, then the bytes."""
    return varint.encode(len(message)) + message
