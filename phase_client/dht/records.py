"""Provider records: the values stored under ``/phase/{channel}/{arch}/manifest``. Pure: no I/O.

A provider record says "the provider with identity key K serves this channel/arch manifest at this
URL until ``expires_at``". It is signed with the provider's IDENTITY key (never the manifest key,
which mirrors share), over ``phase-provider-record-v1\\n`` + canonical JSON of every field except
``signature``. ``peer_id`` must be the libp2p id of ``public_key`` and ``key`` must be the DHT key
the record is stored under, so a record can be neither forged, nor stolen by another peer id, nor
replayed under another channel/arch.

Wire form: the canonical JSON of the whole record (signature in standard base64). One record per
STORE; a node keeps at most one record per (key, peer_id) -- the newest -- and answers lookups with
pages of records that each fit one UDP reply. Which peers get a slot when a node is full is
``admission``'s business.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any, NamedTuple

from ..canonical import canonical_bytes, loads_strict
from ..errors import DocumentError, PhaseError
from ..errors import RecordError as RecordError  # defined with every user-visible error
from ..keys import PublicKey, SigningKey, parse_public_key, peer_id_for
from ..manifest import MIRROR_URL_RE
from ..timefmt import format_utc, parse_utc

RECORD_DOMAIN = b"phase-provider-record-v1\n"
KEY_RE = re.compile(r"^/phase/([a-z0-9][a-z0-9_-]{0,62})/([a-z0-9][a-z0-9_-]{0,62})/manifest\Z")
FIELDS = frozenset(
    {
        "key",
        "url",
        "peer_id",
        "public_key",
        "provider_name",
        "version",
        "last_updated",
        "expires_at",
        "signature",
    }
)
MAX_RECORD_BYTES = 1024  # one record on the wire; a STORE must stay far below 8 KiB
MAX_URL = 512
MAX_NAME = 64
MAX_VERSION = 64
MAX_FUTURE_SKEW = 300  # seconds a last_updated may be ahead of the storing node's clock
MAX_TTL = 7 * 86400  # longest validity a record may claim
DEFAULT_TTL = 3600
DEFAULT_REPUBLISH = 1800
# A UDP reply should not fragment on a 1500-byte MTU (~1472 bytes of payload). rpcudp adds 21
# bytes of header and msgpack a few bytes per item and for the reply map; 1300 leaves room.
REPLY_BUDGET = 1300
PER_ITEM_OVERHEAD = 3  # msgpack bin16 header of one record


def dht_key(channel: str, arch: str) -> str:
    key = f"/phase/{channel}/{arch}/manifest"
    if not KEY_RE.match(key):
        raise RecordError(f"invalid channel/arch for a DHT key: {channel!r}/{arch!r}")
    return key


def key_digest(key: str) -> bytes:
    """The 160-bit Kademlia id of a key (what the kademlia library's ``digest`` computes)."""
    return hashlib.sha1(key.encode("utf-8")).digest()


def split_key(key: str) -> tuple[str, str]:
    match = KEY_RE.match(key)
    if not match:
        raise RecordError(f"{key!r} is not a /phase/CHANNEL/ARCH/manifest key")
    return match.group(1), match.group(2)


class ProviderRecord(NamedTuple):
    key: str
    url: str
    peer_id: str
    public_key: str  # "ed25519:<64 hex>"
    provider_name: str
    version: str
    last_updated: int  # epoch seconds (RFC 3339 UTC on the wire)
    expires_at: int
    signature: bytes
    raw: bytes  # the exact wire bytes

    @property
    def channel(self) -> str:
        return split_key(self.key)[0]

    @property
    def arch(self) -> str:
        return split_key(self.key)[1]

    def newer_than(self, other: ProviderRecord) -> bool:
        """Newest wins; ties broken deterministically so every node keeps the same record."""
        return (self.last_updated, self.expires_at, self.raw) > (
            other.last_updated,
            other.expires_at,
            other.raw,
        )

    def to_json(self) -> dict[str, Any]:
        body = loads_strict(self.raw)
        assert isinstance(body, dict)
        return body


def signing_bytes(body: Mapping[str, Any]) -> bytes:
    """What the identity key signs: the domain prefix + canonical JSON without ``signature``."""
    return RECORD_DOMAIN + canonical_bytes({k: v for k, v in body.items() if k != "signature"})


def make_record(
    identity: SigningKey,
    key: str,
    url: str,
    provider_name: str,
    version: str,
    now: int,
    ttl: int = DEFAULT_TTL,
) -> ProviderRecord:
    """Build and sign a record; validated like any received one (raises RecordError)."""
    public = identity.public
    body: dict[str, Any] = {
        "key": key,
        "url": url,
        "peer_id": public.peer_id,
        "public_key": public.keyid,
        "provider_name": provider_name,
        "version": version,
        "last_updated": format_utc(now),
        "expires_at": format_utc(now + ttl),
    }
    body["signature"] = base64.b64encode(identity.sign(signing_bytes(body))).decode("ascii")
    return parse_record(canonical_bytes(body), now=now)


def _text(body: Mapping[str, Any], name: str, max_len: int) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise RecordError(f"record field {name!r} must be a non-empty string of <= {max_len}")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise RecordError(f"record field {name!r} contains control characters")
    return value


def _time(body: Mapping[str, Any], name: str) -> int:
    try:
        return parse_utc(body.get(name))  # type: ignore[arg-type]
    except ValueError as exc:
        raise RecordError(f"record field {name!r}: {exc}") from exc


def parse_record(raw: bytes, now: int, expected_digest: bytes | None = None) -> ProviderRecord:
    """Decode and fully check one wire record; raise RecordError if it must be dropped.

    Checks, in order of cost: size, strict canonical JSON, exact field set, field types and
    lengths, key syntax (and that it hashes to ``expected_digest``), URL form, timestamps (not
    expired, not far in the future, bounded validity), peer id derived from the public key, and
    finally the Ed25519 signature.
    """
    if not isinstance(raw, bytes | bytearray):
        raise RecordError("a record must be bytes")
    raw = bytes(raw)
    if len(raw) > MAX_RECORD_BYTES:
        raise RecordError(f"record of {len(raw)} bytes exceeds {MAX_RECORD_BYTES}")
    try:
        body = loads_strict(raw)
    except DocumentError as exc:
        raise RecordError(f"record is not strict JSON: {exc}") from exc
    if not isinstance(body, dict) or set(body) != FIELDS:
        raise RecordError("record must be an object with exactly the provider-record fields")
    try:
        if canonical_bytes(body) != raw:
            raise RecordError("record is not in canonical form")
    except DocumentError as exc:
        raise RecordError(str(exc)) from exc
    key = _text(body, "key", 200)
    split_key(key)
    if expected_digest is not None and key_digest(key) != expected_digest:
        raise RecordError("record key does not hash to the DHT key it was stored under")
    url = _text(body, "url", MAX_URL)
    if not MIRROR_URL_RE.match(url):
        raise RecordError("record url must be an absolute http(s) URL")
    name = _text(body, "provider_name", MAX_NAME)
    version = _text(body, "version", MAX_VERSION)
    last_updated = _time(body, "last_updated")
    expires_at = _time(body, "expires_at")
    if last_updated > now + MAX_FUTURE_SKEW:
        raise RecordError("record last_updated is too far in the future")
    if expires_at <= now:
        raise RecordError("record has expired")
    if not last_updated < expires_at <= last_updated + MAX_TTL:
        raise RecordError(f"record validity must be between 1 s and {MAX_TTL} s")
    try:
        public: PublicKey = parse_public_key(_text(body, "public_key", 80).encode(), "public_key")
    except PhaseError as exc:
        raise RecordError(f"record public_key: {exc}") from exc
    if not body["public_key"].startswith("ed25519:"):
        raise RecordError("record public_key must be in ed25519:<hex> form")
    peer_id = _text(body, "peer_id", 80)
    if peer_id != peer_id_for(public.raw):
        raise RecordError("record peer_id is not the peer id of its public_key")
    try:
        signature = base64.b64decode(_text(body, "signature", 100), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RecordError("record signature is not base64") from exc
    if not public.verify(signing_bytes(body), signature):
        raise RecordError("record signature does not verify")
    return ProviderRecord(
        key=key,
        url=url,
        peer_id=peer_id,
        public_key=body["public_key"],
        provider_name=name,
        version=version,
        last_updated=last_updated,
        expires_at=expires_at,
        signature=signature,
        raw=raw,
    )


def try_parse(raw: Any, now: int, expected_digest: bytes | None = None) -> ProviderRecord | None:
    """``parse_record`` for untrusted input: None instead of an exception."""
    try:
        return parse_record(raw, now, expected_digest)
    except RecordError:
        return None


class MergeOutcome(Enum):
    ADDED = "added"
    REPLACED = "replaced"
    STALE = "stale"  # an equal or newer record of that peer is already held
    FULL = "full"  # a new peer id that found no slot (``admission``: its sources hold enough)


def union(records: Iterable[ProviderRecord], now: int) -> list[ProviderRecord]:
    """Newest unexpired record per peer id, newest first (not a vote: every valid one counts)."""
    best: dict[str, ProviderRecord] = {}
    for record in records:
        if record.expires_at <= now:
            continue
        current = best.get(record.peer_id)
        if current is None or record.newer_than(current):
            best[record.peer_id] = record
    return sorted(best.values(), key=lambda r: (-r.last_updated, r.peer_id))


def paginate(raws: list[bytes], budget: int = REPLY_BUDGET) -> list[list[bytes]]:
    """Split records into pages whose encoded size stays within ``budget`` (in the given order).

    A record never exceeds MAX_RECORD_BYTES < budget, so every page holds at least one record.
    """
    pages: list[list[bytes]] = []
    page: list[bytes] = []
    used = 0
    for raw in raws:
        size = len(raw) + PER_ITEM_OVERHEAD
        if page and used + size > budget:
            pages.append(page)
            page, used = [], 0
        page.append(raw)
        used += size
    if page:
        pages.append(page)
    return pages


def next_timestamp(now: int, previous: int | None) -> int:
    """A provider's last_updated must grow with each publish, even twice in one second."""
    return now if previous is None or now > previous else previous + 1
