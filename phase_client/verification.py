"""Thin glue between the pure trust rules and the outside world (key files, clock, state dir).

Used by phase-verify, phase-fetch and the initramfs alike, so every tool applies the same rules.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import TypeVar

from .buildinfo import BUILD_TIME
from .errors import PhaseError
from .keys import PublicKey, load_keys_dir, load_public_key
from .manifest import check_arch, check_channel, parse_manifest
from .state import StateStore
from .timefmt import parse_utc
from .trust import TrustPolicy, VerifiedManifest, effective_now, verify

T = TypeVar("T")


def argtype(check: Callable[[str], T]) -> Callable[[str], T]:
    """Wrap a validator raising PhaseError as an argparse ``type`` (usage error, exit 2)."""

    def convert(value: str) -> T:
        try:
            return check(value)
        except PhaseError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    convert.__name__ = check.__name__.removeprefix("check_")
    return convert


def add_trust_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("trust")
    group.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="KEY",
        help="trusted public key: a file (ed25519:<hex>, hex, base64 or 32 raw "
        "bytes) or the inline string ed25519:<hex>; repeatable",
    )
    group.add_argument(
        "--keys-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="trust every *.pub key file in DIR; repeatable",
    )
    group.add_argument(
        "--threshold",
        type=int,
        default=1,
        metavar="N",
        help="distinct trusted keys that must have signed (default 1)",
    )
    group.add_argument(
        "--channel", type=argtype(check_channel), help="required channel, e.g. stable"
    )
    group.add_argument(
        "--arch",
        type=argtype(check_arch),
        help="required architecture (x86_64, arm64; amd64/aarch64 accepted)",
    )
    group.add_argument(
        "--state-dir",
        metavar="DIR",
        help="rollback protection: refuse a sequence lower than already accepted",
    )
    group.add_argument(
        "--update-state",
        action="store_true",
        help="with --state-dir: record the manifest as accepted after success",
    )


def policy_from_args(args: argparse.Namespace) -> TrustPolicy:
    keys: list[PublicKey] = [load_public_key(spec) for spec in args.key]
    for directory in args.keys_dir:
        keys.extend(load_keys_dir(directory))
    return TrustPolicy(
        keys=tuple(keys), threshold=args.threshold, channel=args.channel, arch=args.arch
    )


def state_from_args(args: argparse.Namespace) -> StateStore | None:
    return StateStore(args.state_dir) if args.state_dir else None


def verify_bytes(
    data: bytes,
    policy: TrustPolicy,
    state: StateStore | None = None,
    *,
    system_now: int | None = None,
) -> VerifiedManifest:
    """Parse and verify manifest bytes against the policy, the clock floor and the state."""
    manifest = parse_manifest(data)
    records = state.records() if state else {}
    previous = records.get(manifest.combination)
    clock = int(time.time()) if system_now is None else system_now
    now = effective_now(clock, parse_utc(BUILD_TIME), previous)
    return verify(manifest, policy, now=now, previous=previous)


def describe(verified: VerifiedManifest) -> dict[str, object]:
    """The JSON-ready summary every tool prints for a verified manifest."""
    m = verified.manifest
    return {
        "verified": True,
        "version": m.version,
        "channel": m.channel,
        "arch": m.arch,
        "sequence": m.sequence,
        "created_at": m.document["created_at"],
        "expires_at": m.document["expires_at"],
        "signed_by": list(verified.signed_by),
        "digest": verified.digest,
        "artifacts": {
            name: {"hash": a.hash, "size": a.size, "path": a.path}
            for name, a in m.artifacts.items()
        },
    }
