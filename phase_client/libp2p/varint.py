"""Unsigned LEB128 varints as multiformats and protobuf use them. Pure.

Bounded: at most 9 bytes (63 bits, the multiformats limit); the minimal encoding is required
(a trailing ``0x80 0x00`` padding is refused), as the unsigned-varint spec says.
"""

from __future__ import annotations

from .errors import ProtocolError

MAX_VARINT_BYTES = 9


def encode(value: int) -> bytes:
    if value < 0 or value >= 1 << 63:
        raise ValueError(f"varint out of range: {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int]:
    """(value, offset after it); ProtocolError when truncated, too long or not minimal."""
    value = 0
    for i in range(MAX_VARINT_BYTES):
        if offset + i >= len(data):
            raise ProtocolError("truncated varint")
        byte = data[offset + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise ProtocolError("varint not minimally encoded")
            return value, offset + i + 1
    raise ProtocolError(f"varint longer than {MAX_VARINT_BYTES} bytes")
