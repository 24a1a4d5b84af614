"""``plasmd key show [FILE]``: the public form of a key (keyid, peer id), from a private or a
public key file; by default plasmd's identity key.

Top-level imports stay light: ``plasmd --help`` imports this module.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import EXIT_OK, exit_codes_help

EPILOG = """FILE is a private key (ed25519-seed:..., as plasmd keygen writes it) or a public one
(ed25519:..., FILE.pub); by default the identity key of the state dir (--state-dir; default
/var/lib/plasmd for root, else $XDG_STATE_HOME/plasmd). The public key printed is what clients
are given: phase-fetch --key ed25519:... or a .pub file holding that line (--public prints
only that line, e.g. to write one: plasmd key show KEY --public > KEY.pub).

""" + exit_codes_help({2: "missing or unreadable key file"}, codes=(0, 2, 70))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="key_command", metavar="ACTION")
    sub.required = True
    show = sub.add_parser(
        "show",
        help="print a key's public form, keyid and peer id",
        description="Print a key's public form (keyid) and libp2p peer id.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    show.add_argument("file", metavar="FILE", nargs="?", help="default: the identity key")
    show.add_argument("--state-dir", metavar="DIR", help="where the identity key is")
    show.add_argument("--public", action="store_true", help="print only the public key line")
    show.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    import sys

    from ..errors import KeyFormatError, UsageError
    from ..fsutil import read_regular_file
    from ..keys import MAX_KEY_FILE, PUBLIC_PREFIX, parse_public_key, parse_signing_key
    from ..provider.config import default_state_dir
    from ..provider.statedir import IDENTITY_FILE
    from ._common import emit

    path = Path(args.file) if args.file else Path(args.state_dir or default_state_dir())
    if not args.file:
        path = path / IDENTITY_FILE
    try:
        data = read_regular_file(path, MAX_KEY_FILE + 1)
    except OSError as exc:
        hint = "" if args.file else " (no identity yet: plasmd serve creates it on first start)"
        raise UsageError(f"cannot read key {path}: {exc.strerror or exc}{hint}") from exc
    private = not data.strip().startswith(PUBLIC_PREFIX.encode())
    try:
        if private:
            public = parse_signing_key(data, what=f"key {path}").public
        else:
            public = parse_public_key(data, what=f"key {path}")
    except KeyFormatError as exc:
        raise UsageError(str(exc)) from exc
    if args.public and not args.json:
        sys.stdout.write(public.keyid + "\n")
        return EXIT_OK
    kind = "private" if private else "public"
    emit(
        args,
        {"file": str(path), "kind": kind, "keyid": public.keyid, "peer_id": public.peer_id},
        f"keyid   {public.keyid}\npeer id {public.peer_id}\n{kind:<7} {path}\n",
    )
    return EXIT_OK
