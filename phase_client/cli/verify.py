"""phase-verify: check a manifest's signatures, freshness, channel/arch and rollback state."""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import IntegrityError, ManifestError, PhaseError, UsageError
from ..fsutil import sha256_file
from ..manifest import MAX_MANIFEST_BYTES, Manifest
from ..verification import (
    add_trust_arguments,
    describe,
    policy_from_args,
    state_from_args,
    verify_bytes,
)
from ._common import EXIT_FAILED, EXIT_OK, Parser, print_json, run

PROG = "phase-verify"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Verify a signed boot manifest: Ed25519 signatures by trusted keys "
        "(threshold), expiry, channel/arch, and rollback state. '-' reads standard input.",
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
        help="also check that DIR/<artifact name> (kernel, initramfs, ...) has the size and "
        "sha256 of the verified manifest, and DIR/cmdline (if present) its cmdline, as written "
        "by phase-fetch; exit 1 on any difference (kexec-boot's last check before loading)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing; exit code only")
    return parser


def read_manifest_file(path: str) -> bytes:
    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_MANIFEST_BYTES + 1)
        else:
            with open(path, "rb") as handle:
                data = handle.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{path} is larger than the 1 MiB manifest limit")
    return data


def check_dir(manifest: Manifest, directory: str) -> None:
    """Raise IntegrityError unless DIR holds exactly the artifacts the manifest describes."""
    for name, artifact in sorted(manifest.artifacts.items()):
        path = os.path.join(directory, name)
        try:
            # Size first: a file of the wrong size is refused without hashing it.
            size = os.stat(path).st_size
            if size != artifact.size:
                raise IntegrityError(f"{path}: size {size}, the manifest says {artifact.size}")
            digest, _ = sha256_file(path)
        except OSError as exc:
            raise IntegrityError(f"{path}: {exc.strerror or exc}") from exc
        if digest != artifact.sha256:
            raise IntegrityError(f"{path}: sha256 differs from the manifest")
    cmdline_path = os.path.join(directory, "cmdline")
    if os.path.exists(cmdline_path):
        try:
            with open(cmdline_path, encoding="utf-8") as handle:
                written = handle.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise IntegrityError(f"{cmdline_path}: {exc}") from exc
        if written != (manifest.cmdline or "").strip():
            raise IntegrityError(f"{cmdline_path} differs from the manifest's cmdline")


def handle(args: argparse.Namespace) -> int:
    if args.manifest_pos and args.manifest_opt:
        raise UsageError("give the manifest once (positional or --manifest)")
    path = args.manifest_pos or args.manifest_opt
    if not path:
        raise UsageError("no manifest given (phase-verify MANIFEST --key KEY)")
    if args.update_state and not args.state_dir:
        raise UsageError("--update-state needs --state-dir")
    policy = policy_from_args(args)
    state = state_from_args(args)
    try:
        verified = verify_bytes(read_manifest_file(path), policy, state)
        if args.check_dir:
            check_dir(verified.manifest, args.check_dir)
        if args.update_state and state is not None:
            state.record(verified)
    except PhaseError as exc:
        if exc.exit_code != EXIT_FAILED:
            raise
        reason = getattr(exc, "reason", "failed")
        if args.json:
            print_json({"verified": False, "reason": reason, "error": str(exc)})
        elif not args.quiet:
            sys.stderr.write(f"FAILED: {reason}: {exc}\n")
        return EXIT_FAILED
    if args.json:
        print_json(describe(verified))
    elif not args.quiet:
        m = verified.manifest
        sys.stdout.write(
            f"VERIFIED {m.channel}/{m.arch} version {m.version} sequence {m.sequence} "
            f"signed by {', '.join(verified.signed_by)}\n"
        )
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    return run(PROG, build_parser(), handle, argv)
