"""multistream-select 1.0: agreeing on a protocol for a connection or a stream.

Each message is a varint length, UTF-8 text and ``\\n``. The dialer sends the header and its
proposal at once (as js- and go-libp2p do); the listener answers the header and either echoes
the protocol or says ``na``. Bounded: messages of at most ``MAX_MESSAGE`` bytes, at most
``MAX_PROPOSALS`` proposals answered per negotiation.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from . import varint
from .errors import Libp2pError, ProtocolError

HEADER = "/multistream/1.0.0"
NA = "na"
MAX_MESSAGE = 1024
MAX_PROPOSALS = 8


class Duplex(Protocol):
    async def readexactly(self, n: int) -> bytes: ...

    async def send(self, data: bytes) -> None: ...


class NotSupported(Libp2pError):
    """The other side does not speak the protocol we proposed."""


def encode(message: str) -> bytes:
    data = message.encode() + b"\n"
    return varint.encode(len(data)) + data


async def read_varint(stream: Duplex, limit: int) -> int:
    """A varint length read byte by byte; ProtocolError above ``limit``."""
    raw = bytearray()
    while True:
        raw += await stream.readexactly(1)
        if not raw[-1] & 0x80:
            break
        if len(raw) >= varint.MAX_VARINT_BYTES:
            raise ProtocolError("varint too long")
    value, _ = varint.decode(raw)
    if value > limit:
        raise ProtocolError(f"message of {value} bytes exceeds the limit of {limit}")
    return value


async def read_length_prefixed(stream: Duplex, limit: int) -> bytes:
    length = await read_varint(stream, limit)
    return await stream.readexactly(length)


async def read_message(stream: Duplex) -> str:
    data = await read_length_prefixed(stream, MAX_MESSAGE)
    if not data.endswith(b"\n"):
        raise ProtocolError("multistream message without its newline")
    try:
        return data[:-1].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("multistream message is not UTF-8") from None


async def select(stream: Duplex, protocol: str) -> None:
    """As the dialer: agree on ``protocol`` or raise NotSupported."""
    await stream.send(encode(HEADER) + encode(protocol))
    header = await read_message(stream)
    if header != HEADER:
        raise ProtocolError(f"not multistream-select 1.0: {header[:60]!r}")
    answer = await read_message(stream)
    if answer == protocol:
        return
    if answer == NA:
        raise NotSupported(f"peer does not support {protocol}")
    raise ProtocolError(f"multistream: unexpected answer {answer[:60]!r}")


async def handle(stream: Duplex, supported: Collection[str]) -> str | None:
    """As the listener: the protocol agreed on, or None when the dialer gave up (we said
    ``na`` to ``MAX_PROPOSALS`` proposals)."""
    header = await read_message(stream)
    if header != HEADER:
        raise ProtocolError(f"not multistream-select 1.0: {header[:60]!r}")
    await stream.send(encode(HEADER))
    for _ in range(MAX_PROPOSALS):
        proposal = await read_message(stream)
        if proposal in supported:
            await stream.send(encode(proposal))
            return proposal
        await stream.send(encode(NA))
    return None
