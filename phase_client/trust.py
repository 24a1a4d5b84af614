"""Trust decisions: is this manifest to be booted? Pure: no I/O, no clock, no files.

The caller hands in everything the decision depends on (trusted keys, the time, what was accepted
before) and gets a ``VerifiedManifest`` or a precise VerificationError. Checks run in this order,
so that nothing is believed before the signatures are:
  1. signatures: at least ``threshold`` distinct trusted keys signed the canonical bytes;
  2. wrong software: channel/arch equal to what was asked for;
  3. freshness: ``expires_at`` is later than "now", where now = max(system clock, build time of
     the tool, the clock floor left by the manifest accepted before for the same channel/arch) -
     a wrong clock at boot can only make the check stricter, never let an expired manifest in;
  4. rollback: ``sequence`` not lower than the highest accepted for that channel/arch (equal only
     for the identical signed content).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any, NamedTuple, Self

from .errors import ExpiredError, MismatchError, RollbackError, SignatureError, UsageError
from .keys import PublicKey, unique_keys
from .manifest import Manifest, Signature
from .names import normalize_arch
from .timefmt import format_utc

# How far ahead of the effective "now" an accepted manifest's ``created_at`` may push the clock
# floor. A manifest dated years ahead (by mistake, or by a key holder) would otherwise make every
# later manifest of that channel/arch look expired until that date; bounded, it costs a day.
MAX_FLOOR_LEAD = 86400
# A signature failure names the keyids that signed and those trusted, this many of each at most.
MAX_KEYIDS_SHOWN = 8


class _Policy(NamedTuple):
    keys: tuple[PublicKey, ...]
    threshold: int
    channel: str | None
    arch: str | None


class TrustPolicy(_Policy):
    """The keys trusted, how many of them must sign, and the channel/arch a manifest must
    name (None: any). Checked when made: distinct keys, 1 <= threshold <= their number."""

    __slots__ = ()

    def __new__(
        cls,
        keys: Iterable[PublicKey],
        threshold: int = 1,
        channel: str | None = None,
        arch: str | None = None,
    ) -> TrustPolicy:
        distinct = unique_keys(list(keys))
        if not distinct:
            raise UsageError("no trusted key given (use --key or --keys-dir)")
        if threshold < 1:
            raise UsageError("--threshold must be at least 1")
        if threshold > len(distinct):
            raise UsageError(
                f"--threshold {threshold} but only {len(distinct)} distinct trusted key(s)"
            )
        if arch is not None:
            arch = normalize_arch(arch)
        return super().__new__(cls, distinct, threshold, channel, arch)

    @classmethod
    def _make(cls, iterable: Iterable[Any]) -> Self:  # type: ignore[override]
        """Through ``__new__``'s checks (``_replace`` comes here too), never around them.
        (The ignore: mypy types NamedTuple's own ``_make`` as generic over the tuple.)"""
        return cls(*iterable)


class AcceptedRecord(NamedTuple):
    """What the state directory remembers of the last manifest accepted for a channel/arch.

    ``floor``: the earliest "now" a later check of that channel/arch may assume (see
    ``clock_floor``); None in state written before it existed, then ``created_at`` stands in."""

    sequence: int
    created_at: int
    digest: str
    floor: int | None = None

    @property
    def clock_floor(self) -> int:
        return self.created_at if self.floor is None else self.floor


class VerifiedManifest(NamedTuple):
    manifest: Manifest
    signed_by: tuple[str, ...]
    digest: str
    clock_floor: int  # what accepting it does to "now" for its channel/arch (clock_floor())

    @property
    def record(self) -> AcceptedRecord:
        m = self.manifest
        return AcceptedRecord(m.sequence, m.created_at, self.digest, self.clock_floor)


def content_digest(manifest: Manifest) -> str:
    """sha256 of the signed bytes: identifies the signed content, whatever its file layout."""
    return hashlib.sha256(manifest.signed_bytes()).hexdigest()


def effective_now(system_now: int, floor: int, previous: AcceptedRecord | None) -> int:
    """The latest of the system clock, the tool's build time and the floor the manifest accepted
    before for the same channel/arch left behind. Other channels do not move it."""
    return max(system_now, floor, previous.clock_floor if previous else 0)


def clock_floor(created_at: int, now: int, previous: AcceptedRecord | None) -> int:
    """The floor accepting a manifest leaves: its ``created_at``, but never more than
    MAX_FLOOR_LEAD past the effective ``now``, and never lower than the floor already held."""
    held = previous.clock_floor if previous else 0
    return max(held, min(created_at, now + MAX_FLOOR_LEAD))


def valid_signers(
    message: bytes, signatures: tuple[Signature, ...], keys: tuple[PublicKey, ...]
) -> tuple[str, ...]:
    """Keyids of the distinct ``keys`` with a valid signature over ``message`` among
    ``signatures`` (manifests and root documents alike).

    The keyid in a signature is only a hint: the key it names is tried first, then every other
    key not yet counted, so a wrong keyid neither helps nor hurts.
    """
    by_id = {key.keyid: key for key in keys}
    valid: dict[str, None] = {}
    for signature in signatures:
        hinted = by_id.get(signature.keyid)
        candidates = [hinted] if hinted else []
        candidates += [k for k in keys if k is not hinted]
        for key in candidates:
            if key.keyid not in valid and key.verify(message, signature.sig):
                valid[key.keyid] = None
                break
    return tuple(valid)


def check_signatures(
    manifest: Manifest, keys: tuple[PublicKey, ...], threshold: int
) -> tuple[str, ...]:
    """Keyids of the distinct trusted keys whose signature over the signed bytes is valid;
    SignatureError unless there are at least ``threshold`` of them."""
    valid = valid_signers(manifest.signed_bytes(), manifest.signatures, keys)
    if len(valid) < threshold:
        if not manifest.signatures:
            raise SignatureError("manifest is not signed")
        named = keyid_list(s.keyid for s in manifest.signatures)
        trusted = keyid_list(k.keyid for k in keys)
        if not valid:
            raise SignatureError(
                f"no valid signature by a trusted key (signed by {named}; trusted: {trusted})"
            )
        raise SignatureError(
            f"only {len(valid)} of the required {threshold} trusted keys signed the manifest "
            f"({keyid_list(valid)}; signed by {named}; trusted: {trusted})"
        )
    return valid


def keyid_list(keyids: Iterable[str], most: int = MAX_KEYIDS_SHOWN) -> str:
    """Distinct keyids in order for a message, at most ``most`` of them then how many more."""
    unique = list(dict.fromkeys(keyids))
    shown = ", ".join(unique[:most])
    return shown + (f" and {len(unique) - most} more" if len(unique) > most else "")


def check_rollback(manifest: Manifest, digest: str, previous: AcceptedRecord | None) -> None:
    """A lower sequence than accepted before, or the same one with other content: refused."""
    if previous is None:
        return
    if manifest.sequence < previous.sequence:
        raise RollbackError(
            f"sequence {manifest.sequence} is lower than {previous.sequence}, "
            f"already accepted for {manifest.combination}"
        )
    if manifest.sequence == previous.sequence and digest != previous.digest:
        raise RollbackError(
            f"sequence {manifest.sequence} was already accepted for {manifest.combination} "
            "with different content"
        )


def verify(
    manifest: Manifest,
    policy: TrustPolicy,
    *,
    now: int,
    previous: AcceptedRecord | None = None,
) -> VerifiedManifest:
    """Apply every trust rule; ``now`` is already the effective time (see effective_now)."""
    signed_by = check_signatures(manifest, policy.keys, policy.threshold)
    if policy.channel is not None and manifest.channel != policy.channel:
        raise MismatchError(f"manifest is for channel {manifest.channel!r}, not {policy.channel!r}")
    if policy.arch is not None and normalize_arch(manifest.arch) != policy.arch:
        raise MismatchError(f"manifest is for arch {manifest.arch!r}, not {policy.arch!r}")
    if manifest.expires_at <= now:
        raise ExpiredError(
            f"manifest expired at {format_utc(manifest.expires_at)} (now is {format_utc(now)})"
        )
    digest = content_digest(manifest)
    check_rollback(manifest, digest, previous)
    return VerifiedManifest(
        manifest=manifest,
        signed_by=signed_by,
        digest=digest,
        clock_floor=clock_floor(manifest.created_at, now, previous),
    )
