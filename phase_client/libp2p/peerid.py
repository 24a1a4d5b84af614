"""libp2p peer ids and public keys. Pure.

A peer id is a multihash of the protobuf ``PublicKey{Type, Data}``: the identity multihash for
keys of at most 42 bytes (every Ed25519 key: ``12D3KooW...``), sha2-256 for larger ones
(``Qm...``, RSA). Its text is base58btc. Ed25519 keys are checked with PyNaCl, RSA keys by
``rsa.py``; a peer with another key type (secp256k1, ECDSA: rare) cannot complete our handshake
and is skipped, never trusted blindly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..keys import base58btc
from . import protobuf
from .errors import MultiaddrError, ProtocolError

KEY_TYPE_RSA = 0
KEY_TYPE_ED25519 = 1
MH_IDENTITY = 0x00
MH_SHA2_256 = 0x12
MAX_PEER_ID_TEXT = 128
MAX_IDENTITY_DIGEST = 42
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}


def base58_decode(text: str) -> bytes:
    if not text or len(text) > MAX_PEER_ID_TEXT:
        raise MultiaddrError("peer id: empty or too long")
    number = 0
    for char in text:
        digit = _B58_INDEX.get(char)
        if digit is None:
            raise MultiaddrError(f"peer id: {char!r} is not a base58 character")
        number = number * 58 + digit
    zeros = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\0" * zeros + body


def encode_public_key(raw_ed25519: bytes) -> bytes:
    """protobuf PublicKey{Type=Ed25519, Data=key}: 08 01 12 20 <32 bytes>."""
    return protobuf.field_varint(1, KEY_TYPE_ED25519) + protobuf.field_bytes(2, raw_ed25519)


def decode_public_key(data: bytes) -> tuple[int, bytes]:
    """(key type, key bytes) of a protobuf PublicKey."""
    found = protobuf.fields(data)
    key_type = protobuf.one_int(found, 1)
    key = protobuf.one_bytes(found, 2)
    if key_type is None or key is None:
        raise ProtocolError("public key without type or data")
    return key_type, key


def ed25519_from_public_key(data: bytes) -> bytes:
    key_type, key = decode_public_key(data)
    if key_type != KEY_TYPE_ED25519:
        raise ProtocolError(f"unsupported libp2p key type {key_type} (Ed25519 and RSA are checked)")
    if len(key) != 32:
        raise ProtocolError("an Ed25519 public key is 32 bytes")
    return key


@dataclass(frozen=True, order=True)
class PeerId:
    """A peer id as its multihash bytes (what Kademlia messages carry)."""

    raw: bytes

    @classmethod
    def from_public_key(cls, public_key_proto: bytes) -> PeerId:
        if len(public_key_proto) <= MAX_IDENTITY_DIGEST:
            return cls(bytes([MH_IDENTITY, len(public_key_proto)]) + public_key_proto)
        return cls(bytes([MH_SHA2_256, 32]) + hashlib.sha256(public_key_proto).digest())

    @classmethod
    def from_ed25519(cls, raw_public: bytes) -> PeerId:
        return cls.from_public_key(encode_public_key(raw_public))

    @classmethod
    def from_bytes(cls, raw: bytes) -> PeerId:
        """A multihash peer id; ProtocolError unless it is identity (<= 42) or sha2-256 (32)."""
        if len(raw) < 2:
            raise ProtocolError("peer id too short")
        code, length = raw[0], raw[1]
        if len(raw) != 2 + length:
            raise ProtocolError("peer id multihash length mismatch")
        if code == MH_IDENTITY and 0 < length <= MAX_IDENTITY_DIGEST:
            return cls(bytes(raw))
        if code == MH_SHA2_256 and length == 32:
            return cls(bytes(raw))
        raise ProtocolError(f"peer id is not an identity or sha2-256 multihash (code {code})")

    @classmethod
    def from_text(cls, text: str) -> PeerId:
        """``12D3KooW...`` or ``Qm...`` (base58btc multihash); MultiaddrError otherwise."""
        try:
            return cls.from_bytes(base58_decode(text))
        except ProtocolError as exc:
            raise MultiaddrError(f"invalid peer id {text[:60]!r}: {exc}") from None

    def ed25519_key(self) -> bytes | None:
        """The Ed25519 public key an identity-multihash id embeds, if it does."""
        if self.raw[0] != MH_IDENTITY:
            return None
        try:
            return ed25519_from_public_key(self.raw[2:])
        except ProtocolError:
            return None

    def matches(self, public_key_proto: bytes) -> bool:
        return PeerId.from_public_key(public_key_proto) == self

    @property
    def kad_id(self) -> bytes:
        """The Kademlia key-space position: sha256 of the multihash bytes."""
        return hashlib.sha256(self.raw).digest()

    def __str__(self) -> str:
        return base58btc(self.raw)

    def short(self) -> str:
        text = str(self)
        return text if len(text) < 16 else f"{text[:8]}..{text[-6:]}"
