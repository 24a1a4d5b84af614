"""The signed boot manifest, format version 1 (see docs/manifest.md). Pure: no I/O.

``parse_manifest`` turns untrusted bytes into a validated ``Manifest`` or raises ManifestError;
it does not check signatures (that is ``trust``). ``signed_bytes`` is recomputed from the parsed
object, never taken from the file, so layout and key order cannot matter.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from .canonical import canonical_bytes, loads_strict
from .errors import DocumentError, ManifestError
from .fsutil import read_regular_file
from .keys import KEYID_RE, SigningKey
from .names import ARCH_RE, CHANNEL_RE
from .timefmt import format_utc, parse_utc

MANIFEST_VERSION = 1
SIGNED_PREFIX = b"phase-manifest-v1\n"
MAX_MANIFEST_BYTES = 1024 * 1024  # the one cap on a manifest, wherever it is read
MAX_SEQUENCE = 2**63 - 1
MAX_SIZE = 2**63 - 1

ARTIFACT_NAME_RE = re.compile(r"^[a-z0-9_-]+\Z")
# phase-fetch writes each artifact to DIR/<name> beside DIR/cmdline: an artifact may not take it.
RESERVED_ARTIFACT_NAMES = frozenset({"cmdline"})
HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}\Z")
# A relative URL path: safe segments only, so a path never escapes the manifest's base.
PATH_SEGMENT_RE = re.compile(r"^[A-Za-z0-9._~-]+\Z")
MIRROR_URL_RE = re.compile(r"^https?://[^\s/?#]+(/[^\s#]*)?\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# Artifact file names in a provider's DIR/<channel>/<arch>/, and the manifest name of each.
# The file name of a manifest beside the artifacts it names (phase-fetch's output, a provider's
# mirror directory, what stage 1 carries across kexec).
MANIFEST_FILE = "manifest.json"
ARTIFACT_FILES = {
    "vmlinuz": "kernel",
    "initramfs.img": "initramfs",
    "rootfs.sqfs": "rootfs",
    "dtb": "dtb",
}
REQUIRED_ARTIFACT = "kernel"


class Artifact(NamedTuple):
    name: str
    hash: str
    size: int
    path: str
    urls: tuple[str, ...] = ()

    @property
    def sha256(self) -> str:
        """The lower-case hex digest."""
        return self.hash.split(":", 1)[1]


class Signature(NamedTuple):
    keyid: str
    sig: bytes


class Manifest(NamedTuple):
    version: str
    sequence: int
    channel: str
    arch: str
    created_at: int
    expires_at: int
    cmdline: str | None
    artifacts: Mapping[str, Artifact]
    signatures: tuple[Signature, ...]
    document: Mapping[str, Any]  # the whole parsed object, signatures included
    # Canonicalised once, from the parsed object (never the file's own bytes). Compared too: two
    # documents Python finds equal but whose signed bytes differ (true against 1) are unequal.
    signed: bytes

    def signed_bytes(self) -> bytes:
        return self.signed

    @property
    def combination(self) -> str:
        return f"{self.channel}/{self.arch}"


def signed_bytes_of(document: Mapping[str, Any]) -> bytes:
    """The bytes signatures cover: prefix + canonical JSON without ``signatures``."""
    body = {k: v for k, v in document.items() if k != "signatures"}
    try:
        return SIGNED_PREFIX + canonical_bytes(body)
    except DocumentError as exc:  # canonical's neutral error, as this format's
        raise ManifestError(str(exc)) from exc


def _need(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise ManifestError(f"{where}missing field {key!r}")
    value = obj[key]
    # bool is an int in Python; it is never a valid integer field here.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ManifestError(f"{where}field {key!r} must be {_kind_name(name)}")
    return value


def _kind_name(name: str) -> str:
    return {"str": "a string", "int": "an integer", "dict": "an object", "list": "an array"}.get(
        name, name
    )


def _text(value: str, field_name: str, max_len: int, where: str = "") -> str:
    if not value or len(value) > max_len:
        raise ManifestError(f"{where}field {field_name!r} must be 1 to {max_len} characters")
    if _CONTROL.search(value):
        raise ManifestError(f"{where}field {field_name!r} contains control characters")
    return value


def _check_path(path: str, where: str) -> str:
    if not path or len(path) > 1024:
        raise ManifestError(f"{where}field 'path' must be 1 to 1024 characters")
    for segment in path.split("/"):
        if segment in ("", ".", "..") or not PATH_SEGMENT_RE.match(segment):
            raise ManifestError(
                f"{where}field 'path' {path!r} must be a relative path of plain segments"
            )
    return path


def _parse_artifact(name: str, entry: Any) -> Artifact:
    where = f"artifact {name!r}: "
    if not ARTIFACT_NAME_RE.match(name):
        raise ManifestError(f"artifact name {name!r} must match [a-z0-9_-]+")
    if name in RESERVED_ARTIFACT_NAMES:
        raise ManifestError(f"artifact name {name!r} is reserved (phase-fetch writes DIR/{name})")
    if not isinstance(entry, dict):
        raise ManifestError(f"{where}must be an object")
    digest = _need(entry, "hash", str, where)
    if not HASH_RE.match(digest):
        raise ManifestError(f"{where}field 'hash' must be sha256:<64 lower-case hex digits>")
    size = _need(entry, "size", int, where)
    if not 0 <= size <= MAX_SIZE:
        raise ManifestError(f"{where}field 'size' must be a non-negative integer")
    path = _check_path(_need(entry, "path", str, where), where)
    urls: list[str] = []
    if "urls" in entry:
        raw_urls = _need(entry, "urls", list, where)
        for url in raw_urls:
            if not isinstance(url, str) or not MIRROR_URL_RE.match(url) or len(url) > 2048:
                raise ManifestError(f"{where}'urls' must hold absolute http(s) URLs")
            urls.append(url)
    return Artifact(name=name, hash=digest, size=size, path=path, urls=tuple(urls))


def _parse_signatures(value: Any) -> tuple[Signature, ...]:
    if not isinstance(value, list):
        raise ManifestError("field 'signatures' must be an array")
    result = []
    for index, entry in enumerate(value):
        where = f"signature {index}: "
        if not isinstance(entry, dict):
            raise ManifestError(f"{where}must be an object")
        keyid = _need(entry, "keyid", str, where)
        if not KEYID_RE.match(keyid):
            raise ManifestError(f"{where}keyid must be ed25519:<64 lower-case hex digits>")
        text = _need(entry, "sig", str, where)
        try:
            sig = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ManifestError(f"{where}sig is not standard base64") from exc
        if len(sig) != 64:
            raise ManifestError(f"{where}sig must be 64 bytes, got {len(sig)}")
        result.append(Signature(keyid=keyid, sig=sig))
    return tuple(result)


def manifest_from_document(document: Any) -> Manifest:
    """Validate a parsed JSON value as a format-1 manifest."""
    if not isinstance(document, dict):
        raise ManifestError("a manifest must be a JSON object")
    mv = _need(document, "manifest_version", int, "")
    if mv != MANIFEST_VERSION:
        raise ManifestError(f"unsupported manifest_version {mv} (this tool reads version 1)")
    version = _text(_need(document, "version", str, ""), "version", 64)
    sequence = _need(document, "sequence", int, "")
    if not 0 <= sequence <= MAX_SEQUENCE:
        raise ManifestError("field 'sequence' must be a non-negative integer")
    channel = _need(document, "channel", str, "")
    if not CHANNEL_RE.match(channel):
        raise ManifestError(f"field 'channel' {channel!r} is not a valid channel name")
    arch = _need(document, "arch", str, "")
    if not ARCH_RE.match(arch):
        raise ManifestError(f"field 'arch' {arch!r} is not a valid architecture name")
    times = {}
    for key in ("created_at", "expires_at"):
        try:
            times[key] = parse_utc(_need(document, key, str, ""))
        except ValueError as exc:
            raise ManifestError(f"field {key!r}: {exc}") from exc
    if times["expires_at"] <= times["created_at"]:
        raise ManifestError("expires_at must be later than created_at")
    cmdline = None
    if "cmdline" in document:
        cmdline = _need(document, "cmdline", str, "")
        if len(cmdline.encode()) > 4096 or _CONTROL.search(cmdline):
            raise ManifestError("field 'cmdline' must be one line of at most 4096 bytes")
    raw_artifacts = _need(document, "artifacts", dict, "")
    artifacts = {name: _parse_artifact(name, entry) for name, entry in raw_artifacts.items()}
    if REQUIRED_ARTIFACT not in artifacts:
        raise ManifestError("artifact 'kernel' is required")
    signatures = _parse_signatures(document.get("signatures", []))
    # Canonicalisation must succeed, or the document could never be signed or verified.
    signed = signed_bytes_of(document)
    return Manifest(
        version=version,
        sequence=sequence,
        channel=channel,
        arch=arch,
        created_at=times["created_at"],
        expires_at=times["expires_at"],
        cmdline=cmdline,
        artifacts=MappingProxyType(dict(sorted(artifacts.items()))),
        signatures=signatures,
        document=MappingProxyType(document),
        signed=signed,
    )


def manifest_too_large(size: int | None = None, where: str = "") -> ManifestError:
    """The refusal of a manifest over ``MAX_MANIFEST_BYTES`` (``size``: when it is known)."""
    what = "is larger than" if size is None else f"is {size} bytes, over"
    return ManifestError(f"{where}{': ' if where else ''}manifest {what} the 1 MiB limit")


def read_manifest_file(path: str | os.PathLike[str]) -> bytes:
    """A manifest file's bytes, read once: a regular file only (a FIFO planted as
    ``manifest.json`` fails at once), refused past the cap before it is all read. OSError as
    the file system gives it."""
    data = read_regular_file(path, MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:
        raise manifest_too_large(where=str(path))
    return data


def parse_manifest(data: bytes) -> Manifest:
    """Untrusted bytes -> validated (not yet verified) Manifest."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise manifest_too_large(len(data))
    try:
        document = loads_strict(data)
    except DocumentError as exc:  # canonical's neutral error, as this format's
        raise ManifestError(str(exc)) from exc
    return manifest_from_document(document)


def build_document(
    *,
    version: str,
    sequence: int,
    channel: str,
    arch: str,
    created_at: int,
    expires_at: int,
    artifacts: Mapping[str, Mapping[str, Any]],
    cmdline: str | None = None,
) -> dict[str, Any]:
    """A new unsigned manifest document, validated."""
    document: dict[str, Any] = {
        "manifest_version": MANIFEST_VERSION,
        "version": version,
        "sequence": sequence,
        "channel": channel,
        "arch": arch,
        "created_at": format_utc(created_at),
        "expires_at": format_utc(expires_at),
        "artifacts": {name: dict(entry) for name, entry in artifacts.items()},
        "signatures": [],
    }
    if cmdline is not None:
        document["cmdline"] = cmdline
    manifest_from_document(document)
    return document


def sign_document(document: Mapping[str, Any], key: SigningKey) -> dict[str, Any]:
    """A copy of ``document`` with ``key``'s signature added (replacing an older one by it)."""
    manifest_from_document(dict(document))
    signature = base64.b64encode(key.sign(signed_bytes_of(document))).decode("ascii")
    keyid = key.public.keyid
    others = [s for s in document.get("signatures", []) if s.get("keyid") != keyid]
    result = dict(document)
    result["signatures"] = [*others, {"keyid": keyid, "sig": signature}]
    return result


def dump_document(document: Mapping[str, Any]) -> bytes:
    """Human-friendly, deterministic file form (verifiers canonicalise anyway)."""
    return (json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()
