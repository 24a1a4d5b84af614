"""RSA signature checks for libp2p peers with RSA identity keys (most long-lived go-ipfs
nodes, the public bootstrap peers among them: ``Qm...`` peer ids). Pure.

A libp2p RSA public key is DER ``SubjectPublicKeyInfo`` (PKIX); its signatures are PKCS #1 v1.5
over SHA-256 (go-libp2p's ``rsa.SignPKCS1v15(..., crypto.SHA256, ...)``). Only verification is
done here (we never sign with RSA), with a small bounded DER reader: keys of 2048 to 8192 bits
(libp2p refuses smaller ones too).
"""

from __future__ import annotations

import hashlib

from .errors import ProtocolError

RSA_OID = bytes.fromhex("2a864886f70d010101")  # 1.2.840.113549.1.1.1 rsaEncryption
SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")
MIN_BITS = 2048
MAX_BITS = 8192


def _read(data: bytes, offset: int, tag: int) -> tuple[bytes, int]:
    """The content of the DER element of ``tag`` at ``offset``, and the offset after it."""
    if offset + 2 > len(data) or data[offset] != tag:
        raise ProtocolError("RSA key: unexpected DER element")
    length = data[offset + 1]
    offset += 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 2 or offset + count > len(data):
            raise ProtocolError("RSA key: bad DER length")
        length = int.from_bytes(data[offset : offset + count], "big")
        offset += count
    if offset + length > len(data):
        raise ProtocolError("RSA key: truncated DER")
    return data[offset : offset + length], offset + length


def parse_public_key(der: bytes) -> tuple[int, int]:
    """(modulus, public exponent) of a DER SubjectPublicKeyInfo holding an RSA key."""
    spki, end = _read(der, 0, 0x30)
    if end != len(der):
        raise ProtocolError("RSA key: trailing bytes")
    algorithm, offset = _read(spki, 0, 0x30)
    oid, _ = _read(algorithm, 0, 0x06)
    if oid != RSA_OID:
        raise ProtocolError("RSA key: not rsaEncryption")
    bits, _ = _read(spki, offset, 0x03)
    if not bits or bits[0] != 0:
        raise ProtocolError("RSA key: bad bit string")
    inner, _ = _read(bits[1:], 0, 0x30)
    n_bytes, offset = _read(inner, 0, 0x02)
    e_bytes, _ = _read(inner, offset, 0x02)
    n = int.from_bytes(n_bytes, "big")
    e = int.from_bytes(e_bytes, "big")
    if not MIN_BITS <= n.bit_length() <= MAX_BITS or not 3 <= e < n or e % 2 == 0:
        raise ProtocolError(f"RSA key of {n.bit_length()} bits refused")
    return n, e


def verify(der: bytes, message: bytes, signature: bytes) -> bool:
    """PKCS #1 v1.5 with SHA-256."""
    n, e = parse_public_key(der)
    size = (n.bit_length() + 7) // 8
    if len(signature) != size:
        return False
    s = int.from_bytes(signature, "big")
    if s >= n:
        return False
    em = pow(s, e, n).to_bytes(size, "big")
    digest_info = SHA256_DIGEST_INFO + hashlib.sha256(message).digest()
    expected = b"\x00\x01" + b"\xff" * (size - len(digest_info) - 3) + b"\x00" + digest_info
    return em == expected
