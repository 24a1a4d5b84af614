"""``/ipfs/id/1.0.0`` (answered when a peer asks, as every libp2p peer does right after
connecting) and ``/ipfs/ping/1.0.0``. The message building is pure.

Our identify answer lists the addresses we want known: a provider's HTTP endpoint
(``/ip4/A/tcp/P/http``), nothing for a booting client. We never list ``/ipfs/kad/1.0.0``
among our protocols: we are a DHT client, so no peer puts us in its routing table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from . import multistream, protobuf
from .multiaddr import Multiaddr
from .peerid import encode_public_key

IDENTIFY = "/ipfs/id/1.0.0"
PING = "/ipfs/ping/1.0.0"
PROTOCOL_VERSION = "ipfs/0.1.0"
AGENT_VERSION = "phase-client/0.1"
PING_SIZE = 32
MAX_PINGS = 8  # per stream: a peer keeping a ping stream busy gets it closed


def identify_message(
    public_raw: bytes,
    listen_addrs: Sequence[Multiaddr],
    observed: Multiaddr | None,
    protocols: Sequence[str] = (IDENTIFY, PING),
) -> bytes:
    parts = [
        protobuf.field_bytes(5, PROTOCOL_VERSION),
        protobuf.field_bytes(6, AGENT_VERSION),
        protobuf.field_bytes(1, encode_public_key(public_raw)),
        *(protobuf.field_bytes(2, ma.to_bytes()) for ma in listen_addrs),
        *(protobuf.field_bytes(3, p) for p in protocols),
    ]
    if observed is not None:
        parts.append(protobuf.field_bytes(4, observed.to_bytes()))
    return b"".join(parts)


class InboundStream(multistream.Duplex, Protocol):
    async def close(self) -> None: ...


async def answer(
    stream: InboundStream,
    public_raw: bytes,
    listen_addrs: Sequence[Multiaddr],
    observed: Multiaddr | None,
) -> None:
    """Serve one inbound stream: identify or ping; anything else is refused with ``na``."""
    chosen = await multistream.handle(stream, (IDENTIFY, PING))
    if chosen == IDENTIFY:
        message = identify_message(public_raw, listen_addrs, observed)
        await stream.send(protobuf.length_prefixed(message))
    elif chosen == PING:
        for _ in range(MAX_PINGS):
            await stream.send(await stream.readexactly(PING_SIZE))
    await stream.close()
