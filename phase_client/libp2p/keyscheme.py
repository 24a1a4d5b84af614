"""Where a channel/arch's providers are found in libp2p Kademlia, and what their addresses
mean. Pure.

The provider key of ``/phase/{channel}/{arch}/manifest`` is the sha2-256 multihash of that
UTF-8 string: the bytes GET_PROVIDERS/ADD_PROVIDER carry, and in js-libp2p terms
``CID.createV1(raw, sha256(...)).multihash``. A provider's peer info carries its HTTP endpoint as
a multiaddr (``/ip4/A/tcp/P/http``); a client turns it into
``http://A:P/{channel}/{arch}/manifest.json``. Nothing here is trusted: a record says where to
look for a signed manifest, the manifest's signatures decide.
"""

from __future__ import annotations

import base64
import hashlib

from .errors import MultiaddrError
from .multiaddr import Multiaddr

RAW_CODEC = 0x55
CID_V1 = 0x01


def key_text(channel: str, arch: str) -> str:
    return f"/phase/{channel}/{arch}/manifest"


def provider_key(channel: str, arch: str) -> bytes:
    """The sha2-256 multihash (0x12 0x20 + digest) of ``/phase/{channel}/{arch}/manifest``."""
    return b"\x12\x20" + hashlib.sha256(key_text(channel, arch).encode("utf-8")).digest()


def cid_text(multihash: bytes) -> str:
    """CIDv1 (raw codec) in base32, as ``CID.toString()`` prints it (``bafkrei...``)."""
    data = bytes([CID_V1, RAW_CODEC]) + multihash
    return "b" + base64.b32encode(data).decode().lower().rstrip("=")


def manifest_path(channel: str, arch: str) -> str:
    return f"/{channel}/{arch}/manifest.json"


def manifest_url(address: bytes | Multiaddr, channel: str, arch: str) -> str | None:
    """The manifest URL a provider's multiaddr points at, or None when it is no HTTP address
    (its libp2p addresses, junk)."""
    try:
        ma = address if isinstance(address, Multiaddr) else Multiaddr.from_bytes(address)
    except MultiaddrError:
        return None
    return ma.http_url(manifest_path(channel, arch))
