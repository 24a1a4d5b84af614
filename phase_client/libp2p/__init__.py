"""A focused libp2p client: just enough of the stack to speak Kademlia (``/ipfs/kad/1.0.0``)
with the libp2p network that exists (go-, js- and rust-libp2p nodes, the public Amino DHT).

TCP, multistream-select 1.0, Noise XX (X25519, ChaCha20-Poly1305, SHA-256; the handshake payload
signed by our Ed25519 identity key), Yamux, answers to ``/ipfs/id/1.0.0`` and ``/ipfs/ping/1.0.0``,
and the Kademlia messages a provider and a client need: FIND_NODE, GET_PROVIDERS, ADD_PROVIDER.
Always a DHT *client* (never listed as a Kademlia server, no listening socket).

One concern per module; the pure parts (codecs, key derivation, message building) open no
socket: ``varint``, ``protobuf``, ``multiaddr``, ``peerid``, ``keyscheme``, ``noise``
(``HandshakeState``, ``CipherState``), ``yamux`` (frames), ``kadmsg``. The I/O sits in
``multistream``, ``conn`` (dial: TCP -> Noise -> Yamux), ``identify``, ``kad`` (the lookups)
and ``client`` (the two calls a caller needs). PyNaCl and hashlib provide every primitive.

Nothing learnt from the DHT is trusted: it only says where to look for a signed manifest.
"""

from __future__ import annotations

from .errors import Libp2pError, ProtocolError

__all__ = ["Libp2pError", "ProtocolError"]
