"""Ed25519 keys: parsing every accepted key form, keyids and libp2p peer ids.

Public keys are accepted as ``ed25519:<64 hex>``, bare 64 hex, standard base64 of 32 bytes, or
32 raw bytes (a file holding exactly those bytes). Private keys are stored as
``ed25519-seed:<64 hex of the 32-byte seed>`` (file mode 0600); the same other forms are accepted
on reading (bare hex, base64, raw 32-byte seed).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import nacl.exceptions
import nacl.signing

from .errors import KeyFormatError
from .fsutil import read_regular_file

PUBLIC_PREFIX = "ed25519:"
SEED_PREFIX = "ed25519-seed:"
KEYID_RE = re.compile(r"^ed25519:[0-9a-f]{64}\Z")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}\Z")
MAX_KEY_FILE = 4096

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def base58btc(data: bytes) -> str:
    """Bitcoin-alphabet base58, as used by libp2p peer ids."""
    number = int.from_bytes(data, "big")
    out = []
    while number:
        number, rem = divmod(number, 58)
        out.append(_B58_ALPHABET[rem])
    leading_zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * leading_zeros + "".join(reversed(out))


def peer_id_for(raw_public: bytes) -> str:
    """libp2p peer id of an Ed25519 key: base58btc(identity-multihash(protobuf PublicKey)).

    protobuf PublicKey{Type=Ed25519(1), Data=32 bytes} = 08 01 12 20 <key>; the identity
    multihash prefixes code 0x00 and length 0x24 (36), so every such id starts ``12D3KooW``.
    """
    proto = b"\x08\x01\x12\x20" + raw_public
    return base58btc(b"\x00" + bytes([len(proto)]) + proto)


class _Key:
    """The 32 bytes an Ed25519 key is made from, and PyNaCl's object made from them once.
    Equal, hashed, copied and pickled by the bytes alone (a copy is made again from them by
    ``_from_bytes``); never changed or deleted once made. A plain class, no dataclass: it is on
    the boot's path (docs/architecture.md, "Records on the client tools' path")."""

    __slots__ = ("_bytes", "_nacl")
    _bytes: bytes

    def __init__(self, key_bytes: bytes, nacl_key: Any) -> None:
        object.__setattr__(self, "_bytes", key_bytes)
        object.__setattr__(self, "_nacl", nacl_key)

    @classmethod
    def _from_bytes(cls, key_bytes: bytes) -> Self:
        """The key made from its bytes, checked (``from_raw``, ``from_seed``)."""
        raise NotImplementedError

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__}.{name} cannot be changed")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__}.{name} cannot be deleted")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Key) and type(other) is type(self) and other._bytes == self._bytes

    def __hash__(self) -> int:
        return hash(self._bytes)

    def __reduce__(self) -> tuple[Callable[[bytes], Self], tuple[bytes]]:
        return (self._from_bytes, (self._bytes,))


class PublicKey(_Key):
    """An Ed25519 public key: ``raw``, its 32 bytes, and PyNaCl's verifier."""

    __slots__ = ()
    _nacl: nacl.signing.VerifyKey

    @property
    def raw(self) -> bytes:
        return self._bytes

    def __repr__(self) -> str:
        return f"PublicKey(raw={self.raw!r})"

    @classmethod
    def _from_bytes(cls, key_bytes: bytes) -> Self:
        return cls.from_raw(key_bytes)

    @classmethod
    def from_raw(cls, raw: bytes) -> Self:
        if len(raw) != 32:
            raise KeyFormatError(f"an Ed25519 public key is 32 bytes, got {len(raw)}")
        return cls(bytes(raw), nacl.signing.VerifyKey(bytes(raw)))

    @property
    def keyid(self) -> str:
        return PUBLIC_PREFIX + self.raw.hex()

    @property
    def peer_id(self) -> str:
        return peer_id_for(self.raw)

    def verify(self, message: bytes, signature: bytes) -> bool:
        if len(signature) != 64:
            return False
        try:
            self._nacl.verify(message, signature)
        except nacl.exceptions.BadSignatureError:
            return False
        return True


class SigningKey(_Key):
    """An Ed25519 key pair from ``seed``, its 32 bytes; never shown by ``repr``."""

    __slots__ = ()
    _nacl: nacl.signing.SigningKey

    @property
    def seed(self) -> bytes:
        return self._bytes

    def __repr__(self) -> str:
        return "SigningKey()"

    @classmethod
    def _from_bytes(cls, key_bytes: bytes) -> Self:
        return cls.from_seed(key_bytes)

    @classmethod
    def from_seed(cls, seed: bytes) -> Self:
        if len(seed) != 32:
            raise KeyFormatError(f"an Ed25519 seed is 32 bytes, got {len(seed)}")
        return cls(bytes(seed), nacl.signing.SigningKey(bytes(seed)))

    @classmethod
    def generate(cls) -> SigningKey:
        return cls.from_seed(os.urandom(32))

    @property
    def public(self) -> PublicKey:
        return PublicKey.from_raw(bytes(self._nacl.verify_key))

    def sign(self, message: bytes) -> bytes:
        return self._nacl.sign(message).signature

    def file_bytes(self) -> bytes:
        return f"{SEED_PREFIX}{self.seed.hex()}\n".encode()


def _decode_32(data: bytes, prefix: str, what: str) -> bytes:
    """Decode the 32 key bytes from any accepted textual or raw form."""
    if len(data) == 32:
        # No textual form is 32 characters long (hex is 64, base64 44), so 32 bytes are raw.
        return data
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError as exc:
        raise KeyFormatError(f"{what}: not a key (binary data of {len(data)} bytes)") from exc
    other = SEED_PREFIX if prefix == PUBLIC_PREFIX else PUBLIC_PREFIX
    if text.startswith(other):  # the other half of a key pair: say so, not "unknown type"
        if other == SEED_PREFIX:
            raise KeyFormatError(
                f"{what}: this is a private key ({SEED_PREFIX}...) where a public key is "
                "expected; give its public key (the .pub file, or: plasmd key show FILE)"
            )
        raise KeyFormatError(
            f"{what}: this is a public key ({PUBLIC_PREFIX}...) where a private (signing) key "
            "is expected"
        )
    if text.startswith(prefix):
        body = text[len(prefix) :]
        if not _HEX64.match(body):
            raise KeyFormatError(f"{what}: expected {prefix}<64 hex digits>")
        return bytes.fromhex(body)
    if ":" in text:
        raise KeyFormatError(f"{what}: unknown key type {text.split(':', 1)[0]!r} (want {prefix})")
    if _HEX64.match(text):
        return bytes.fromhex(text)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) == 32:
        return raw
    raise KeyFormatError(f"{what}: not an Ed25519 key ({prefix}<hex>, hex, base64 or 32 raw bytes)")


def parse_public_key(data: bytes, what: str = "key") -> PublicKey:
    return PublicKey.from_raw(_decode_32(data, PUBLIC_PREFIX, what))


def parse_signing_key(data: bytes, what: str = "signing key") -> SigningKey:
    return SigningKey.from_seed(_decode_32(data, SEED_PREFIX, what))


def _read_key_file(path: Path) -> bytes:
    try:  # a FIFO where a key should be fails at once instead of waiting for a writer
        data = read_regular_file(path, MAX_KEY_FILE + 1)
    except OSError as exc:
        raise KeyFormatError(f"cannot read key {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_KEY_FILE:
        raise KeyFormatError(f"key file {path} is too large to be a key")
    return data


def load_public_key(spec: str) -> PublicKey:
    """``--key`` value: an inline ``ed25519:<hex>`` or the path of a key file."""
    if spec.startswith(PUBLIC_PREFIX) and not Path(spec).exists():
        return parse_public_key(spec.encode(), what="inline key")
    return parse_public_key(_read_key_file(Path(spec)), what=f"key {spec}")


def load_keys_dir(directory: str | os.PathLike[str]) -> list[PublicKey]:
    """Every ``*.pub`` file in ``directory`` (sorted, so the result is stable)."""
    path = Path(directory)
    if not path.is_dir():
        raise KeyFormatError(f"keys directory {path} does not exist or is not a directory")
    return [
        parse_public_key(_read_key_file(p), what=f"key {p}") for p in sorted(path.glob("*.pub"))
    ]


def load_signing_key(path: str | os.PathLike[str]) -> SigningKey:
    return parse_signing_key(_read_key_file(Path(path)), what=f"signing key {path}")


def unique_keys(keys: list[PublicKey]) -> tuple[PublicKey, ...]:
    seen: dict[bytes, PublicKey] = {}
    for key in keys:
        seen.setdefault(key.raw, key)
    return tuple(seen.values())
