"""Kademlia messages of ``/ipfs/kad/1.0.0`` (the ``dht.proto`` every libp2p implementation
shares). Pure.

``Message{type=1, key=2, record=3, closerPeers=8, providerPeers=9, clusterLevelRaw=10}`` and
``Peer{id=1, addrs=2, connection=3}``. Decoding is bounded: at most ``MAX_PEERS`` peers of each
list and ``MAX_ADDRS`` addresses per peer are kept; a peer with an invalid id and an address
that cannot be decoded are dropped (counted in ``dropped``), the rest of the message stands.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from . import protobuf
from .errors import MultiaddrError, ProtocolError
from .multiaddr import Multiaddr
from .peerid import PeerId

PUT_VALUE, GET_VALUE, ADD_PROVIDER, GET_PROVIDERS, FIND_NODE, PING = range(6)
TYPE_NAMES = {
    PUT_VALUE: "PUT_VALUE",
    GET_VALUE: "GET_VALUE",
    ADD_PROVIDER: "ADD_PROVIDER",
    GET_PROVIDERS: "GET_PROVIDERS",
    FIND_NODE: "FIND_NODE",
    PING: "PING",
}
PROTOCOL_ID = "/ipfs/kad/1.0.0"
MAX_MESSAGE = 256 * 1024  # a response with 20 peers of many addresses fits easily
MAX_PEERS = 20
MAX_ADDRS = 16
MAX_KEY = 128


@dataclass(frozen=True)
class PeerInfo:
    peer: PeerId
    addrs: tuple[Multiaddr, ...] = ()

    def encode(self) -> bytes:
        return protobuf.field_bytes(1, self.peer.raw) + b"".join(
            protobuf.field_bytes(2, ma.to_bytes()) for ma in self.addrs
        )


@dataclass(frozen=True)
class Message:
    type: int
    key: bytes
    closer: tuple[PeerInfo, ...] = ()
    providers: tuple[PeerInfo, ...] = ()
    dropped: int = 0  # peers or addresses refused while decoding


def encode(kind: int, key: bytes, providers: Sequence[PeerInfo] = ()) -> bytes:
    return b"".join(
        (
            protobuf.field_varint(1, kind),
            protobuf.field_bytes(2, key),
            *(protobuf.field_bytes(9, p.encode()) for p in providers),
        )
    )


def _peers(raw_list: list[bytes]) -> tuple[tuple[PeerInfo, ...], int]:
    out: list[PeerInfo] = []
    dropped = max(0, len(raw_list) - MAX_PEERS)
    for raw in raw_list[:MAX_PEERS]:
        try:
            found = protobuf.fields(raw)
            peer_raw = protobuf.one_bytes(found, 1)
            if peer_raw is None:
                raise ProtocolError("peer without id")
            peer = PeerId.from_bytes(peer_raw)
            addr_bytes = protobuf.all_bytes(found, 2)
        except ProtocolError:
            dropped += 1
            continue
        addrs = []
        for data in addr_bytes[:MAX_ADDRS]:
            try:
                addrs.append(Multiaddr.from_bytes(data))
            except MultiaddrError:
                dropped += 1
        dropped += max(0, len(addr_bytes) - MAX_ADDRS)
        out.append(PeerInfo(peer, tuple(addrs)))
    return tuple(out), dropped


def decode(data: bytes) -> Message:
    """A message; ProtocolError when it is not a Kademlia message at all."""
    if len(data) > MAX_MESSAGE:
        raise ProtocolError(f"kad message of {len(data)} bytes")
    found = protobuf.fields(data)
    kind = protobuf.one_int(found, 1) or 0
    if kind not in TYPE_NAMES:
        raise ProtocolError(f"kad message type {kind}")
    key = protobuf.one_bytes(found, 2) or b""
    if len(key) > MAX_KEY:
        raise ProtocolError("kad message key too long")
    closer, dropped_closer = _peers(protobuf.all_bytes(found, 8))
    providers, dropped_providers = _peers(protobuf.all_bytes(found, 9))
    return Message(kind, key, closer, providers, dropped_closer + dropped_providers)
