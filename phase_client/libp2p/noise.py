"""Noise XX for libp2p (``/noise``): ``Noise_XX_25519_ChaChaPoly_SHA256``. Pure: no sockets.

The handshake state machine of the Noise spec (revision 34) with libp2p's rules: an empty
prologue, 2-byte big-endian length-prefixed messages of at most 65535 bytes, and a handshake
payload (``NoiseHandshakePayload``) carrying the libp2p identity key and its Ed25519 signature
over ``"noise-libp2p-static-key:" + the static X25519 key``. The initiator sends its payload in
message 3, the responder in message 2.

Primitives: X25519 (``crypto_scalarmult``), ChaCha20-Poly1305 IETF (96-bit nonce: 4 zero bytes
and the 64-bit little-endian counter), SHA-256 and HMAC-SHA256 (HKDF).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass

import nacl.bindings
import nacl.exceptions

from ..keys import PublicKey, SigningKey
from . import protobuf, rsa
from .errors import ProtocolError
from .peerid import (
    KEY_TYPE_RSA,
    PeerId,
    decode_public_key,
    ed25519_from_public_key,
    encode_public_key,
)

PROTOCOL_NAME = b"Noise_XX_25519_ChaChaPoly_SHA256"
PROTOCOL_ID = "/noise"
SIG_PREFIX = b"noise-libp2p-static-key:"
MAX_MESSAGE = 65535
TAG = 16
MAX_PLAINTEXT = MAX_MESSAGE - TAG
DH_LEN = 32
MAX_NONCE = (1 << 64) - 1


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def hkdf(chaining_key: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    """Noise's HKDF with two outputs."""
    temp = _hmac(chaining_key, ikm)
    out1 = _hmac(temp, b"\x01")
    out2 = _hmac(temp, out1 + b"\x02")
    return out1, out2


def x25519_keypair(private: bytes | None = None) -> tuple[bytes, bytes]:
    secret = private if private is not None else os.urandom(32)
    return secret, nacl.bindings.crypto_scalarmult_base(secret)


def dh(private: bytes, public: bytes) -> bytes:
    if len(public) != DH_LEN:
        raise ProtocolError("X25519 public key is not 32 bytes")
    try:
        return nacl.bindings.crypto_scalarmult(private, public)
    except (nacl.exceptions.RuntimeError, nacl.exceptions.CryptoError):
        raise ProtocolError("X25519 with a low-order public key") from None


class CipherState:
    """ChaCha20-Poly1305 with a counter nonce; key None means pass-through (handshake start)."""

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key
        self.nonce = 0

    def _next_nonce(self) -> bytes:
        if self.nonce >= MAX_NONCE:
            raise ProtocolError("noise nonce exhausted")
        nonce = b"\0\0\0\0" + self.nonce.to_bytes(8, "little")
        self.nonce += 1
        return nonce

    def encrypt(self, ad: bytes, plaintext: bytes) -> bytes:
        if self.key is None:
            return plaintext
        return nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(
            plaintext, ad, self._next_nonce(), self.key
        )

    def decrypt(self, ad: bytes, ciphertext: bytes) -> bytes:
        if self.key is None:
            return ciphertext
        try:
            return nacl.bindings.crypto_aead_chacha20poly1305_ietf_decrypt(
                ciphertext, ad, self._next_nonce(), self.key
            )
        except nacl.exceptions.CryptoError:
            raise ProtocolError("noise: decryption failed (bad tag)") from None


class SymmetricState:
    def __init__(self) -> None:
        # A 32-byte protocol name is its own initial hash (Noise spec 5.2).
        self.h = PROTOCOL_NAME
        self.ck = self.h
        self.cipher = CipherState()
        self.mix_hash(b"")  # the (empty) prologue

    def mix_key(self, ikm: bytes) -> None:
        self.ck, temp = hkdf(self.ck, ikm)
        self.cipher = CipherState(temp)

    def mix_hash(self, data: bytes) -> None:
        self.h = hashlib.sha256(self.h + data).digest()

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cipher.decrypt(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        k1, k2 = hkdf(self.ck, b"")
        return CipherState(k1), CipherState(k2)


def make_payload(identity: SigningKey, static_public: bytes) -> bytes:
    """NoiseHandshakePayload{identity_key=1, identity_sig=2}."""
    signature = identity.sign(SIG_PREFIX + static_public)
    return protobuf.field_bytes(1, encode_public_key(identity.public.raw)) + protobuf.field_bytes(
        2, signature
    )


def check_payload(payload: bytes, remote_static: bytes) -> PeerId:
    """The remote's peer id, once its identity key's signature over its static key checks."""
    found = protobuf.fields(payload)
    key_proto = protobuf.one_bytes(found, 1)
    signature = protobuf.one_bytes(found, 2)
    if key_proto is None or signature is None:
        raise ProtocolError("noise payload without identity key or signature")
    key_type, key = decode_public_key(key_proto)
    message = SIG_PREFIX + remote_static
    if key_type == KEY_TYPE_RSA:
        good = rsa.verify(key, message, signature)
    else:
        good = PublicKey.from_raw(ed25519_from_public_key(key_proto)).verify(message, signature)
    if not good:
        raise ProtocolError("noise payload: bad identity signature over the static key")
    return PeerId.from_public_key(key_proto)


@dataclass
class Result:
    remote_peer: PeerId
    send: CipherState
    recv: CipherState


class HandshakeState:
    """XX: -> e; <- e, ee, s, es; -> s, se. ``write``/``read`` handle one message each, in the
    order of the pattern; ``result`` is set after the third message."""

    def __init__(
        self,
        initiator: bool,
        identity: SigningKey,
        static_private: bytes | None = None,
        ephemeral: Callable[[], tuple[bytes, bytes]] = x25519_keypair,
    ) -> None:
        self.initiator = initiator
        self.identity = identity
        self.s_priv, self.s_pub = x25519_keypair(static_private)
        self._ephemeral = ephemeral
        self.e_priv = self.e_pub = b""
        self.re = self.rs = b""
        self.sym = SymmetricState()
        self.step = 0
        self.remote_peer: PeerId | None = None
        self.result: Result | None = None

    def _payload(self) -> bytes:
        return make_payload(self.identity, self.s_pub)

    def write(self) -> bytes:
        sym = self.sym
        if self.initiator and self.step == 0:
            self.e_priv, self.e_pub = self._ephemeral()
            sym.mix_hash(self.e_pub)
            out = self.e_pub + sym.encrypt_and_hash(b"")
        elif not self.initiator and self.step == 1:
            self.e_priv, self.e_pub = self._ephemeral()
            sym.mix_hash(self.e_pub)
            sym.mix_key(dh(self.e_priv, self.re))
            enc_s = sym.encrypt_and_hash(self.s_pub)
            sym.mix_key(dh(self.s_priv, self.re))
            out = self.e_pub + enc_s + sym.encrypt_and_hash(self._payload())
        elif self.initiator and self.step == 2:
            enc_s = sym.encrypt_and_hash(self.s_pub)
            sym.mix_key(dh(self.s_priv, self.re))
            out = enc_s + sym.encrypt_and_hash(self._payload())
            self._finish()
        else:
            raise ProtocolError("noise: write out of turn")
        self.step += 1
        if len(out) > MAX_MESSAGE:
            raise ProtocolError("noise handshake message too long")
        return out

    def read(self, message: bytes) -> None:
        sym = self.sym
        if len(message) > MAX_MESSAGE:
            raise ProtocolError("noise handshake message too long")
        if not self.initiator and self.step == 0:
            if len(message) < DH_LEN:
                raise ProtocolError("noise message 1 too short")
            self.re = message[:DH_LEN]
            sym.mix_hash(self.re)
            sym.decrypt_and_hash(message[DH_LEN:])  # payload of message 1: ignored
        elif self.initiator and self.step == 1:
            if len(message) < DH_LEN + DH_LEN + TAG + TAG:
                raise ProtocolError("noise message 2 too short")
            self.re = message[:DH_LEN]
            sym.mix_hash(self.re)
            sym.mix_key(dh(self.e_priv, self.re))
            self.rs = sym.decrypt_and_hash(message[DH_LEN : DH_LEN * 2 + TAG])
            sym.mix_key(dh(self.e_priv, self.rs))
            payload = sym.decrypt_and_hash(message[DH_LEN * 2 + TAG :])
            self.remote_peer = check_payload(payload, self.rs)
        elif not self.initiator and self.step == 2:
            if len(message) < DH_LEN + TAG + TAG:
                raise ProtocolError("noise message 3 too short")
            self.rs = sym.decrypt_and_hash(message[: DH_LEN + TAG])
            sym.mix_key(dh(self.e_priv, self.rs))
            payload = sym.decrypt_and_hash(message[DH_LEN + TAG :])
            self.remote_peer = check_payload(payload, self.rs)
            self._finish()
        else:
            raise ProtocolError("noise: read out of turn")
        self.step += 1

    def _finish(self) -> None:
        assert self.remote_peer is not None
        first, second = self.sym.split()
        if self.initiator:
            self.result = Result(self.remote_peer, send=first, recv=second)
        else:
            self.result = Result(self.remote_peer, send=second, recv=first)


def frame(message: bytes) -> bytes:
    if len(message) > MAX_MESSAGE:
        raise ProtocolError("noise frame too long")
    return len(message).to_bytes(2, "big") + message
