"""phase-verify: walk the root chain, then check a manifest's signatures, freshness,
channel/arch and rollback state."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from ..boot.stage import check_dir, stage
from ..errors import EXIT_FAILED, EXIT_OK, ManifestError, PhaseError, UsageError
from ..fetch.rootchain import RootUpdate, places_for, update_root
from ..manifest import MAX_MANIFEST_BYTES, manifest_too_large, read_manifest_file
from ..root import release_policy
from ..trust import VerifiedManifest
from ..verification import verify_bytes
from ._common import (
    Parser,
    add_verbosity,
    exit_codes_help,
    failure_of,
    print_json,
    report,
    run,
    setup_logging,
    success,
)
from ._trust import add_trust_arguments, root_from_args, state_from_args

PROG = "phase-verify"
NOT_VERIFIED = {"verified": False}  # the --json failure envelope's empty result


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Verify a signed boot manifest: Ed25519 signatures by trusted keys "
        "(threshold), expiry, channel/arch, and rollback state. '-' reads standard input. "
        "With a root of trust (--root, or root.json in --keys-dir), the chain of newer roots "
        "is walked first from root.<N>.json files in the state directory and beside the "
        "manifest (docs/trust.md); --update-state keeps the new roots in the state directory.",
        epilog=exit_codes_help(
            {0: "verified", 1: "not verified (FAILED: <reason>: <detail>)"},
            codes=(0, 1, 2, 70, 130),
        ),
        json_failure=NOT_VERIFIED,
    )
    parser.add_argument("manifest_pos", nargs="?", metavar="MANIFEST", help="manifest file")
    parser.add_argument(
        "--manifest",
        dest="manifest_opt",
        metavar="MANIFEST",
        help="manifest file (same as the positional argument)",
    )
    add_trust_arguments(parser)
    parser.add_argument(
        "--check-dir",
        metavar="DIR",
        help="also check that DIR holds what phase-fetch wrote for the verified manifest: "
        "DIR/<artifact name> (kernel, initramfs, ...) regular files with its sizes and sha256, "
        "DIR/cmdline its cmdline, no kernel/initramfs/rootfs/dtb it does not name; exit 1 on "
        "any difference",
    )
    parser.add_argument(
        "--stage-into",
        metavar="PRIVDIR",
        help="with --check-dir: create PRIVDIR (mode 0700; it must not exist) and copy into it, "
        "hashed as they are copied, exactly what kexec loads: PRIVDIR/kernel, PRIVDIR/initrd "
        "(the initramfs, then the rootfs in a cpio as phase/rootfs.sqfs), PRIVDIR/dtb, and "
        "PRIVDIR/cmdline (the manifest's cmdline, phase.version=, phase.rootfs_sha256=); "
        "first refused unless MemAvailable covers the copies and kexec's own copy of them; "
        "removed again on failure (kexec-boot's last step before loading; docs/boot.md)",
    )
    parser.add_argument(
        "--consume",
        action="store_true",
        help="with --stage-into: remove DIR's artifact files once everything is staged (they "
        "are not needed to load; kexec-boot --consume, where RAM is short); the memory check "
        "counts their room as freed",
    )
    parser.add_argument(
        "--meminfo",
        metavar="FILE",
        default="/proc/meminfo",
        help="with --stage-into: where MemAvailable is read (default /proc/meminfo)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_verbosity(parser)
    return parser


def read_manifest(path: str) -> bytes:
    """The manifest's bytes, read once: everything verified and staged comes from them."""
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", path):
        raise UsageError(
            f"{path}: phase-verify reads a manifest file (or - for standard input), not a URL: "
            "fetch it with phase-fetch, or name a file that looks like a URL as ./NAME"
        )
    try:
        if path != "-":
            return read_manifest_file(path)
        data = sys.stdin.buffer.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_MANIFEST_BYTES:
        raise manifest_too_large(where=path)
    return data


def verified_json(verified: VerifiedManifest, update: RootUpdate) -> dict[str, Any]:
    """What --json reports of a verified manifest, and of the root it was verified against."""
    m = verified.manifest
    return {
        "verified": True,
        "root": update.to_json(),
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


def handle(args: argparse.Namespace) -> int:
    setup_logging(args.verbose, args.quiet)
    if args.manifest_pos and args.manifest_opt:
        raise UsageError("give the manifest once (positional or --manifest)")
    path = args.manifest_pos or args.manifest_opt
    if not path:
        raise UsageError("no manifest given (phase-verify MANIFEST --key KEY)")
    if args.update_state and not args.state_dir:
        raise UsageError("--update-state needs --state-dir")
    if args.consume and not args.stage_into:
        raise UsageError("--consume needs --stage-into PRIVDIR")
    if args.stage_into and not args.check_dir:
        raise UsageError("--stage-into needs --check-dir DIR (the directory to stage from)")
    start = root_from_args(args)
    state = state_from_args(args)
    try:
        places = places_for([path], state)
        update = update_root(start, places, state, persist=args.update_state)
        policy = release_policy(update.root, args.channel, args.arch)
        data = read_manifest(path)
        verified = verify_bytes(data, policy, state)
        if args.stage_into:
            stage(
                verified.manifest,
                data,
                args.check_dir,
                args.stage_into,
                args.meminfo,
                consume=args.consume,
            )
        elif args.check_dir:
            check_dir(verified.manifest, args.check_dir)
        if args.update_state and state is not None:
            state.record(verified)
    except PhaseError as exc:
        if exc.exit_code != EXIT_FAILED:
            raise
        report(PROG, args, failure_of(exc, NOT_VERIFIED), f"FAILED: {exc.reason}: {exc}")
        return EXIT_FAILED
    if args.json:
        print_json(success(verified_json(verified, update)))
    elif not args.quiet:
        m = verified.manifest
        sys.stdout.write(
            f"VERIFIED {m.channel}/{m.arch} version {m.version} sequence {m.sequence} "
            f"signed by {', '.join(verified.signed_by)}"
            + (f" (root version {update.root.version})" if update.root.document else "")
            + "\n"
        )
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    return run(PROG, build_parser(), handle, argv)
