"""The trust flags every client tool shares (``--key``, ``--keys-dir``, ``--threshold``,
``--channel``, ``--arch``, ``--state-dir``, ``--update-state``) and their turning into the
library's ``TrustPolicy`` and ``StateStore``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

from ..errors import PhaseError
from ..keys import PublicKey, load_keys_dir, load_public_key
from ..manifest import check_arch, check_channel
from ..state import StateStore
from ..trust import TrustPolicy

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
