"""The trust flags every client tool shares (``--root``, ``--key``, ``--keys-dir``,
``--threshold``, ``--channel``, ``--arch``, ``--state-dir``, ``--update-state``) and their turning
into the root a client starts from (docs/trust.md) and the library's ``StateStore``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError
from ..names import check_arch, check_channel
from ._common import argtype

if TYPE_CHECKING:
    from ..keys import PublicKey
    from ..root import Root
    from ..state import StateStore

# The keys, the root and the state (PyNaCl, the manifest's parser) are imported where a root is
# made, not with the flags: phase-boot --start-when adds the flags before the network is up and
# loads the root only once it is, while discovery runs (~0.5 s of start-up under emulation).


def add_trust_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "trust",
        "Trust starts from a root of trust (docs/trust.md): --root FILE, or DIR/root.json of\n"
        "a --keys-dir DIR that has one. The chain of newer roots is walked from it, and\n"
        "manifests must be signed by the release keys of the newest. Bare --key/--keys-dir\n"
        "keys (no root.json) are a version-1 root with those keys in every role: no chain.",
    )
    group.add_argument(
        "--root",
        metavar="FILE",
        help="the root of trust to start from (root.json, made by plasmd root init); not "
        "with --key, --keys-dir or --threshold",
    )
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
        help="trust every *.pub key file in DIR; repeatable. If DIR holds root.json, that root "
        "is the trust instead (as --root DIR/root.json) and the *.pub files are ignored",
    )
    group.add_argument(
        "--threshold",
        type=int,
        default=None,
        metavar="N",
        help="with bare keys: distinct trusted keys that must have signed (default 1); a "
        "root sets its own thresholds",
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


def root_from_args(args: argparse.Namespace) -> Root:
    """The root a client starts from: ``--root FILE``, ``DIR/root.json`` of a ``--keys-dir``,
    or the bare keys as a version-1 root (``root_from_keys``)."""
    from ..fetch.rootchain import ROOT_NAME, read_root_file
    from ..keys import load_keys_dir, load_public_key
    from ..root import root_from_keys

    in_dirs = [Path(d) / ROOT_NAME for d in args.keys_dir if os.path.lexists(Path(d) / ROOT_NAME)]
    files = ([args.root] if args.root else []) + [str(p) for p in in_dirs]
    if files:
        others = len(args.keys_dir) - len(in_dirs) + len(args.key)
        if len(files) > 1 or others or args.threshold is not None:
            raise UsageError(
                f"the root {files[0]} is the whole trust: not with other roots, --key, "
                "--keys-dir without root.json, or --threshold (the root sets its thresholds)"
            )
        return read_root_file(files[0])
    keys: list[PublicKey] = [load_public_key(spec) for spec in args.key]
    for directory in args.keys_dir:
        keys.extend(load_keys_dir(directory))
    return root_from_keys(keys, 1 if args.threshold is None else args.threshold)


def state_from_args(args: argparse.Namespace) -> StateStore | None:
    from ..state import StateStore

    return StateStore(args.state_dir) if args.state_dir else None
