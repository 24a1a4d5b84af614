"""Manifest parsing and validation: every field rule, and the fixed test vector."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest

from phase_client.canonical import canonical_bytes
from phase_client.errors import ManifestError
from phase_client.keys import SigningKey
from phase_client.manifest import (
    MAX_MANIFEST_BYTES,
    dump_document,
    manifest_from_document,
    parse_manifest,
    sign_document,
    signed_bytes_of,
)
from phase_client.names import normalize_arch

from .conftest import make_document

VECTOR = json.loads((Path(__file__).parent / "vectors" / "manifest-v1.json").read_text("utf-8"))


def test_fixed_vector_signed_bytes_and_signature() -> None:
    key = SigningKey.from_seed(bytes.fromhex(VECTOR["seed_hex"]))
    assert key.public.keyid == VECTOR["public_key"]
    assert key.public.peer_id == VECTOR["peer_id"]
    document = VECTOR["manifest"]
    assert signed_bytes_of(document).hex() == VECTOR["signed_bytes_hex"]
    assert signed_bytes_of(document).startswith(b"phase-manifest-v1\n{")
    # Ed25519 is deterministic: re-signing reproduces the published signature.
    resigned = sign_document({k: v for k, v in document.items() if k != "signatures"}, key)
    assert resigned["signatures"][0]["sig"] == VECTOR["expected_signature"]
    sig = base64.b64decode(VECTOR["expected_signature"])
    assert key.public.verify(bytes.fromhex(VECTOR["signed_bytes_hex"]), sig)


def test_parse_round_trip() -> None:
    document = make_document()
    manifest = parse_manifest(dump_document(document))
    assert manifest.version == "2025.11.26"
    assert manifest.sequence == 42
    assert manifest.combination == "stable/x86_64"
    assert manifest.artifacts["kernel"].sha256 == "ab" * 32
    assert manifest.artifacts["kernel"].path == "vmlinuz"
    assert manifest.cmdline == "console=ttyS0 quiet"
    assert manifest.signed_bytes() == signed_bytes_of(document)


def mutated(change: Any) -> dict[str, Any]:
    document = copy.deepcopy(make_document())
    change(document)
    return document


BAD_DOCUMENTS = {
    "not an object": lambda d: d.clear() or d.update({"x": [1]}),
    "manifest_version 2": lambda d: d.update(manifest_version=2),
    "manifest_version as string": lambda d: d.update(manifest_version="1"),
    "manifest_version true": lambda d: d.update(manifest_version=True),
    "missing version": lambda d: d.pop("version"),
    "empty version": lambda d: d.update(version=""),
    "version with newline": lambda d: d.update(version="1\n2"),
    "negative sequence": lambda d: d.update(sequence=-1),
    "sequence bool": lambda d: d.update(sequence=False),
    "huge sequence": lambda d: d.update(sequence=2**64),
    "bad channel": lambda d: d.update(channel="Stable!"),
    "bad arch": lambda d: d.update(arch="x86 64"),
    "timestamp with offset": lambda d: d.update(created_at="2025-11-26T12:00:00+01:00"),
    "timestamp invalid date": lambda d: d.update(expires_at="2025-02-30T12:00:00Z"),
    "expires before created": lambda d: d.update(expires_at="2025-11-26T11:00:00Z"),
    "cmdline with newline": lambda d: d.update(cmdline="a\nreboot"),
    "cmdline not string": lambda d: d.update(cmdline=["a"]),
    "no kernel": lambda d: d["artifacts"].pop("kernel"),
    "artifact name upper": lambda d: d["artifacts"].update(Kernel=d["artifacts"]["kernel"]),
    "artifact not object": lambda d: d["artifacts"].update(dtb="x"),
    "hash uppercase": lambda d: d["artifacts"]["kernel"].update(hash="sha256:" + "AB" * 32),
    "hash md5": lambda d: d["artifacts"]["kernel"].update(hash="md5:" + "ab" * 16),
    "size negative": lambda d: d["artifacts"]["kernel"].update(size=-5),
    "size string": lambda d: d["artifacts"]["kernel"].update(size="5"),
    "path traversal": lambda d: d["artifacts"]["kernel"].update(path="../../etc/shadow"),
    "path absolute": lambda d: d["artifacts"]["kernel"].update(path="/etc/shadow"),
    "path encoded traversal": lambda d: d["artifacts"]["kernel"].update(path="%2e%2e/x"),
    "path url": lambda d: d["artifacts"]["kernel"].update(path="http://evil/x"),
    "path backslash": lambda d: d["artifacts"]["kernel"].update(path="..\\x"),
    "path empty segment": lambda d: d["artifacts"]["kernel"].update(path="a//b"),
    "mirror not http": lambda d: d["artifacts"]["kernel"].update(urls=["file:///etc/passwd"]),
    "mirror not list": lambda d: d["artifacts"]["kernel"].update(urls="http://x/y"),
    "signatures not list": lambda d: d.update(signatures={}),
    "bad keyid": lambda d: d.update(signatures=[{"keyid": "rsa:1", "sig": "AA=="}]),
    "sig not base64": lambda d: d.update(
        signatures=[{"keyid": "ed25519:" + "0" * 64, "sig": "!!!"}]
    ),
    "sig wrong length": lambda d: d.update(
        signatures=[{"keyid": "ed25519:" + "0" * 64, "sig": base64.b64encode(b"x" * 63).decode()}]
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_DOCUMENTS))
def test_invalid_documents_are_refused(case: str) -> None:
    with pytest.raises(ManifestError):
        manifest_from_document(mutated(BAD_DOCUMENTS[case]))


def test_float_anywhere_is_refused() -> None:
    text = dump_document(make_document()).replace(b'"size": 1024', b'"size": 1024.0')
    with pytest.raises(ManifestError, match="floating-point"):
        parse_manifest(text)


def test_oversized_manifest_refused_before_parsing() -> None:
    with pytest.raises(ManifestError, match="1 MiB"):
        parse_manifest(b" " * (MAX_MANIFEST_BYTES + 1))


def test_unknown_fields_are_kept_and_signed() -> None:
    document = make_document()
    document["x-extra"] = {"note": "signed too"}
    assert b"x-extra" in signed_bytes_of(document)
    assert manifest_from_document(document).document["x-extra"] == {"note": "signed too"}


def test_sign_document_replaces_own_signature_and_keeps_others() -> None:
    a, b = SigningKey.from_seed(b"\x0a" * 32), SigningKey.from_seed(b"\x0b" * 32)
    document = sign_document(sign_document(sign_document(make_document(), a), b), a)
    assert [s["keyid"] for s in document["signatures"]] == [b.public.keyid, a.public.keyid]


def test_signed_bytes_exclude_signatures_only() -> None:
    document = make_document()
    body = {k: v for k, v in document.items() if k != "signatures"}
    assert signed_bytes_of(document) == b"phase-manifest-v1\n" + canonical_bytes(body)


@pytest.mark.parametrize(
    ("given", "expected"),
    [("amd64", "x86_64"), ("AARCH64", "arm64"), ("x86_64", "x86_64"), ("riscv64", "riscv64")],
)
def test_arch_aliases(given: str, expected: str) -> None:
    assert normalize_arch(given) == expected


def test_an_artifact_named_cmdline_is_refused() -> None:
    # It would land on DIR/cmdline, the file phase-fetch writes the signed command line to.
    document = make_document()
    document["artifacts"]["cmdline"] = dict(document["artifacts"]["kernel"])
    with pytest.raises(ManifestError, match="reserved"):
        manifest_from_document(document)
