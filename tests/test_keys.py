"""Key forms, keyids, peer ids; RFC 8032 test vector 1."""

from __future__ import annotations

import base64
import copy
import pickle
from pathlib import Path

import pytest

from phase_client.errors import KeyFormatError
from phase_client.keys import (
    PublicKey,
    SigningKey,
    base58btc,
    load_keys_dir,
    load_public_key,
    load_signing_key,
    parse_public_key,
    parse_signing_key,
)

RFC8032_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIG_EMPTY = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)


def test_rfc8032_vector_1() -> None:
    key = SigningKey.from_seed(RFC8032_SECRET)
    assert key.public.raw == RFC8032_PUBLIC
    assert key.sign(b"") == RFC8032_SIG_EMPTY
    assert key.public.verify(b"", RFC8032_SIG_EMPTY)
    assert not key.public.verify(b"x", RFC8032_SIG_EMPTY)
    assert not key.public.verify(b"", RFC8032_SIG_EMPTY[:63])


@pytest.mark.parametrize(
    "form",
    [
        b"ed25519:" + RFC8032_PUBLIC.hex().encode() + b"\n",
        RFC8032_PUBLIC.hex().encode(),
        RFC8032_PUBLIC.hex().upper().encode() + b"\n",
        base64.b64encode(RFC8032_PUBLIC) + b"\n",
        RFC8032_PUBLIC,
    ],
)
def test_every_public_key_form(form: bytes) -> None:
    assert parse_public_key(form).raw == RFC8032_PUBLIC


@pytest.mark.parametrize(
    "junk",
    [
        b"",
        b"ed25519:abcd",
        b"rsa:" + b"00" * 32,
        b"hello world",
        b"\x00" * 31,
        b"\xff" * 33,
        b"AAAA",
    ],
)
def test_bad_public_keys_are_refused(junk: bytes) -> None:
    with pytest.raises(KeyFormatError):
        parse_public_key(junk)


def test_signing_key_file_round_trip(tmp_path: Path) -> None:
    key = SigningKey.generate()
    path = tmp_path / "k"
    path.write_bytes(key.file_bytes())
    assert load_signing_key(path).seed == key.seed
    assert parse_signing_key(key.seed.hex().encode()).seed == key.seed
    assert key.file_bytes().startswith(b"ed25519-seed:")


def test_keyid_and_peer_id() -> None:
    public = SigningKey.from_seed(RFC8032_SECRET).public
    assert public.keyid == "ed25519:" + RFC8032_PUBLIC.hex()
    assert public.peer_id.startswith("12D3KooW")
    assert len(public.peer_id) == 52


def test_base58_known_values() -> None:
    assert base58btc(b"") == ""
    assert base58btc(b"\x00\x00\x01") == "112"
    assert base58btc(b"hello world") == "StV1DL6CwTryKyV"


def test_inline_and_file_keys(tmp_path: Path) -> None:
    inline = "ed25519:" + RFC8032_PUBLIC.hex()
    assert load_public_key(inline).raw == RFC8032_PUBLIC
    (tmp_path / "a.pub").write_text(inline + "\n")
    (tmp_path / "b.pub").write_bytes(SigningKey.from_seed(b"\x05" * 32).public.raw)
    (tmp_path / "ignored.txt").write_text("not a key")
    assert len(load_keys_dir(tmp_path)) == 2
    with pytest.raises(KeyFormatError, match="cannot read key"):
        load_public_key(str(tmp_path / "missing.pub"))
    with pytest.raises(KeyFormatError, match="does not exist"):
        load_keys_dir(tmp_path / "nope")
    big = tmp_path / "big.pub"
    big.write_bytes(b"0" * 10000)
    with pytest.raises(KeyFormatError, match="too large"):
        load_public_key(str(big))


def test_keys_are_values_that_never_change_and_never_show_a_seed() -> None:
    seed = bytes(range(32))
    signing = SigningKey.from_seed(seed)
    assert signing == SigningKey.from_seed(seed) and hash(signing) == hash(
        SigningKey.from_seed(seed)
    )
    assert seed.hex() not in repr(signing) and repr(seed) not in repr(signing)
    public = signing.public
    assert public == PublicKey.from_raw(public.raw) and len({public, signing.public}) == 1
    assert public != SigningKey.from_seed(bytes(32)).public
    with pytest.raises(AttributeError):
        public.raw = bytes(32)  # type: ignore[misc]
    with pytest.raises(AttributeError):
        signing.seed = bytes(32)  # type: ignore[misc]
    assert public.verify(b"m", signing.sign(b"m"))
    with pytest.raises(AttributeError):
        del public.raw
    for copy_of in (copy.copy, copy.deepcopy, lambda k: pickle.loads(pickle.dumps(k))):
        assert copy_of(public) == public and copy_of(public).verify(b"m", signing.sign(b"m"))
        assert copy_of(signing) == signing and copy_of(signing).public == public
