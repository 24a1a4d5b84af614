"""``plasmd root init|rotate|sign|show``: make, rotate and sign the root of trust (root.json,
docs/trust.md). Root private keys stay offline: these commands only read and write files.

Top-level imports stay light: ``plasmd --help`` imports this module.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    add_verbosity,
    emit,
    exit_codes_help,
    failure,
    number,
    report,
)

if TYPE_CHECKING:
    from ..keys import PublicKey
    from ..root import Role, Root

EPILOG = """\
root keys are offline (they sign roots), release keys online (they sign manifests; plasmd
serve's --key is one). Root N+1 is trusted by a client holding N only when a threshold of N's
root keys AND a threshold of its own root keys signed it.

example: a first root, then revoking release key old.pub for new.pub
  plasmd keygen --out r1.key; plasmd keygen --out r2.key
  plasmd root init --root-key r1.key.pub --root-key r2.key.pub --root-threshold 1 \\
      --release-key old.pub --sign-with r1.key --output ARTIFACTS/root/1.json
  plasmd root rotate --from ARTIFACTS/root/1.json --release-key new.pub \\
      --output root-2.json                     # unsigned: version 2
  plasmd root sign root-2.json --key r1.key    # offline, by each holder
  plasmd root show root-2.json --previous ARTIFACTS/root/1.json && \\
      mv root-2.json ARTIFACTS/root/2.json     # plasmd serve serves /root/2.json

A stick built with make initramfs ROOT=ARTIFACTS/root/1.json walks to root 2 at its next boot.

""" + exit_codes_help(
    {
        0: "done (show: signed enough to be trusted, after --previous when given)",
        1: "show: not yet signed enough, or not a valid next root of --previous",
        2: "bad arguments, unreadable key or root file, unwritable output",
    },
    codes=(0, 1, 2, 70),
)

DEFAULT_VALIDITY_DAYS = 365


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_verbosity(parser, inherit=True)


def _add_making(parser: argparse.ArgumentParser, first: bool) -> None:
    keep = "" if first else " (default: the same as --from)"
    parser.add_argument(
        "--root-key",
        action="append",
        default=[],
        metavar="KEY",
        help=f"public key of the root role (signs roots); repeatable{keep}",
    )
    parser.add_argument(
        "--release-key",
        action="append",
        default=[],
        metavar="KEY",
        help=f"public key of the release role (signs manifests); repeatable{keep}",
    )
    default = "1" if first else "the previous one, at most the number of keys"
    for role in ("root", "release"):
        parser.add_argument(
            f"--{role}-threshold",
            type=number(1, 256, integer=True),
            metavar="N",
            help=f"signatures of the {role} role required (default {default})",
        )
    parser.add_argument(
        "--expires-in",
        type=number(0, 36500, low_open=True),
        default=DEFAULT_VALIDITY_DAYS,
        metavar="DAYS",
        help=f"validity in days (default {DEFAULT_VALIDITY_DAYS}; bounds how long a client "
        "that never sees a newer root keeps trusting this one)",
    )
    parser.add_argument(
        "--sign-with",
        action="append",
        default=[],
        metavar="FILE",
        help="sign with this private (root) key at once; repeatable",
    )
    parser.add_argument("--output", required=True, metavar="FILE", help="root file to write")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --output")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="root_command", metavar="ACTION")
    sub.required = True
    init = sub.add_parser(
        "init",
        help="write root version 1",
        description="Write root version 1 with the given root and release keys.",
    )
    _add_making(init, first=True)
    _add_common(init)
    rotate = sub.add_parser(
        "rotate",
        help="write the next version of a root (keys added, replaced, revoked)",
        description="Write root version N+1 from root N: --root-key/--release-key replace a "
        "role's keys, --revoke removes a key from every role. Unsigned unless --sign-with: a "
        "threshold of N's root keys and of its own must sign it (plasmd root sign).",
    )
    rotate.add_argument("--from", dest="previous", required=True, metavar="FILE", help="root N")
    rotate.add_argument(
        "--revoke",
        action="append",
        default=[],
        metavar="KEY",
        help="public key to remove from every role; repeatable",
    )
    _add_making(rotate, first=False)
    _add_common(rotate)
    sign = sub.add_parser(
        "sign",
        help="add a signature to a root file",
        description="Add the signature of a private key to a root file (in place, or --output).",
    )
    sign.add_argument("file", metavar="FILE")
    sign.add_argument("--key", required=True, metavar="FILE", help="private key (ed25519-seed)")
    sign.add_argument("--output", metavar="FILE", help="write here instead of in place")
    _add_common(sign)
    show = sub.add_parser(
        "show",
        help="show a root, who signed it, and whether it is trusted after --previous",
        description="Show a root's roles and signatures; exit 1 unless it is signed by a "
        "threshold of its own root keys and, with --previous, is a valid next root of it.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=exit_codes_help(
            {0: "complete", 1: "not signed enough / not a valid next root"}, codes=(0, 1, 2, 70)
        ),
    )
    show.add_argument("file", metavar="FILE")
    show.add_argument("--previous", metavar="FILE", help="root N, to check FILE as root N+1")
    _add_common(show)
    for action in (init, rotate, sign, show):
        action.set_defaults(func=run)


def _read_root(path: str) -> tuple[Root, dict[str, Any]]:
    from ..errors import PhaseError, UsageError
    from ..fsutil import read_regular_file
    from ..root import MAX_ROOT_BYTES, parse_root

    try:
        root = parse_root(read_regular_file(path, MAX_ROOT_BYTES + 1))
    except OSError as exc:
        raise UsageError(f"cannot read root {path}: {exc.strerror or exc}") from exc
    except PhaseError as exc:
        raise UsageError(f"root {path}: {exc}") from exc
    assert root.document is not None
    return root, dict(root.document)


def _keys(specs: list[str]) -> tuple[PublicKey, ...]:
    from ..keys import load_public_key, unique_keys

    return unique_keys([load_public_key(spec) for spec in specs])


def _role(keys: tuple[PublicKey, ...], threshold: int | None, before: Role | None) -> Role:
    from ..errors import UsageError
    from ..root import Role

    if threshold is None:
        threshold = min(before.threshold, len(keys)) if before else 1
    if threshold > len(keys):
        raise UsageError(f"threshold {threshold} but only {len(keys)} key(s) in the role")
    return Role(keys, threshold)


def _write(path: str, document: Mapping[str, Any], force: bool) -> None:
    from ..manifest import dump_document
    from .plasmd import write_new_file

    write_new_file(Path(path), dump_document(document), 0o644, force)


def _signed(document: dict[str, Any], key_files: list[str]) -> dict[str, Any]:
    from ..keys import load_signing_key
    from ..root import sign_root_document

    for key_file in key_files:
        document = sign_root_document(document, load_signing_key(key_file))
    return document


def _make(args: argparse.Namespace) -> dict[str, Any]:
    """init and rotate: the new document, signed with --sign-with."""
    import time

    from ..errors import UsageError
    from ..root import REQUIRED_ROLES, build_root_document

    expires_at = int(time.time() + args.expires_in * 86400)
    if args.root_command == "init":
        version, before = 1, None
        if not args.root_key or not args.release_key:
            raise UsageError("init needs at least one --root-key and one --release-key")
    else:
        before, _ = _read_root(args.previous)
        version = before.version + 1
    revoked = {key.raw for key in _keys(getattr(args, "revoke", []))}
    roles: dict[str, Role] = dict(before.roles) if before else {}
    for name in REQUIRED_ROLES:
        given = _keys(getattr(args, f"{name}_key"))
        old = before.roles[name] if before else None
        keys = tuple(k for k in (given or (old.keys if old else ())) if k.raw not in revoked)
        if not keys:
            raise UsageError(f"the {name} role would have no key left")
        roles[name] = _role(keys, getattr(args, f"{name}_threshold"), old)
    for name in set(roles) - set(REQUIRED_ROLES):  # other roles: revocation applies too
        keys = tuple(k for k in roles[name].keys if k.raw not in revoked)
        if keys:
            roles[name] = _role(keys, None, roles[name])
        else:
            del roles[name]
    return _signed(build_root_document(version, expires_at, roles), args.sign_with)


def _status(root: Root, previous: Root | None) -> tuple[bool, list[str]]:
    """(complete, one line per check) for show and for what init/rotate/sign report."""
    from ..errors import PhaseError
    from ..root import check_self_signed, check_step, signers

    lines = []
    own = signers(root, root.root_role)
    lines.append(f"own root keys: {len(own)} of {root.root_role.threshold} required signed")
    complete = True
    try:
        check_self_signed(root)
    except PhaseError:
        complete = False
    if previous is not None:
        got = signers(root, previous.root_role)
        lines.append(
            f"root keys of version {previous.version}: {len(got)} of "
            f"{previous.root_role.threshold} required signed"
        )
        try:
            check_step(previous, root)
            lines.append(f"a valid next root of version {previous.version}")
        except PhaseError as exc:
            complete = False
            lines.append(f"NOT a valid next root of version {previous.version}: {exc}")
    return complete, lines


def _describe(root: Root, path: str, lines: list[str]) -> str:
    from ..timefmt import format_utc

    assert root.expires_at is not None
    out = [f"{path}: root version {root.version}, expires {format_utc(root.expires_at)}"]
    for name, role in root.roles.items():
        out.append(f"  {name}: {role.threshold} of {len(role.keys)}")
        out += [f"    {key.keyid}" for key in role.keys]
    out.append(f"  signatures: {', '.join(s.keyid for s in root.signatures) or 'none'}")
    out += [f"  {line}" for line in lines]
    return "\n".join(out) + "\n"


def _report(args: argparse.Namespace, path: str, document: Mapping[str, Any]) -> int:
    from ..root import root_from_document

    root = root_from_document(dict(document))
    previous = None
    if getattr(args, "previous", None):
        previous = _read_root(args.previous)[0]
    complete, lines = _status(root, previous)
    info = {
        "file": path,
        **root.to_json(),
        "roles": {name: role.to_json() for name, role in root.roles.items()},
        "signatures": [s.keyid for s in root.signatures],
        "complete": complete,
        "checks": lines,
    }
    text = _describe(root, path, lines)
    if complete or args.root_command != "show":
        emit(args, info, text)
        return EXIT_OK
    message = f"root version {root.version} is not trusted yet: " + "; ".join(lines)
    sys.stdout.write("" if args.json else text)
    report("plasmd", args, failure(EXIT_FAILED, "incomplete", message, info), message)
    return EXIT_FAILED


def run(args: argparse.Namespace) -> int:
    from ..keys import load_signing_key
    from ..root import sign_root_document

    if args.root_command in ("init", "rotate"):
        document = _make(args)
        _write(args.output, document, args.force)
        return _report(args, args.output, document)
    _, document = _read_root(args.file)
    if args.root_command == "sign":
        document = sign_root_document(document, load_signing_key(args.key))
        output = args.output or args.file
        _write(output, document, force=True)
        return _report(args, output, document)
    return _report(args, args.file, document)
