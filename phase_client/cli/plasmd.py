"""plasmd: the provider. Subcommands: serve, keygen, manifest generate|sign, dht-node.

Subcommands that live in their own module export ``add_arguments(parser)`` and ``run(args)``;
their top-level imports stay light so ``plasmd --help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from ..errors import UsageError
from ..fsutil import atomic_write
from ..keys import SigningKey, load_signing_key
from ..manifest import dump_document, parse_manifest, read_manifest_file, sign_document
from ..names import check_arch, check_channel
from ._common import (
    EXIT_OK,
    Parser,
    add_verbosity,
    argtype,
    count,
    emit,
    number,
    run,
    setup_logging,
)

PROG = "plasmd"

# name -> (module, one-line help); each module has add_arguments(parser) and run(args).
EXTERNAL = {
    "serve": ("phase_client.cli.plasmd_serve", "serve signed boot images over HTTP and advertise"),
    "root": ("phase_client.cli.plasmd_root", "make, rotate and sign the root of trust"),
    "dht-node": ("phase_client.cli.plasmd_dht", "run a bare DHT node (e.g. a bootstrap node)"),
    "image": ("phase_client.cli.plasmd_image", "build a Debian OS image to serve (as root)"),
    "publish": ("phase_client.cli.plasmd_publish", "put a file into the artifacts atomically"),
    "config": ("phase_client.cli.plasmd_config", "check a configuration file"),
    "status": ("phase_client.cli.plasmd_status", "show what a running plasmd serve offers"),
    "key": ("phase_client.cli.plasmd_key", "show a key's public form (keyid, peer id)"),
}


def write_new_file(path: Path, data: bytes, mode: int, force: bool) -> None:
    if path.exists() and not force:
        raise UsageError(f"{path} exists; refusing to overwrite it (use --force)")
    try:
        atomic_write(path, data, mode=mode)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from exc


def cmd_keygen(args: argparse.Namespace) -> int:
    out = Path(args.out)
    key = SigningKey.generate()
    public = key.public
    write_new_file(out, key.file_bytes(), 0o600, args.force)
    write_new_file(Path(f"{out}.pub"), f"{public.keyid}\n".encode(), 0o644, args.force)
    info = {
        "private_key": str(out),
        "public_key": f"{out}.pub",
        "keyid": public.keyid,
        "peer_id": public.peer_id,
    }
    emit(
        args,
        info,
        f"keyid   {public.keyid}\npeer id {public.peer_id}\n"
        f"private {out} (mode 0600)\npublic  {out}.pub\n",
    )
    return EXIT_OK


def cmd_manifest_generate(args: argparse.Namespace) -> int:
    from ..provider.signer import generate, previous_sequence_of

    key = load_signing_key(args.key)
    output = Path(args.output)
    document = generate(
        artifacts_dir=args.artifacts,
        channel=args.channel,
        arch=args.arch,
        key=key,
        version=args.version,
        sequence=args.sequence,
        previous_sequence=previous_sequence_of(output),
        expires_in_days=args.expires_in,
        cmdline=args.cmdline,
    )
    write_new_file(output, dump_document(document), 0o644, force=True)
    manifest = parse_manifest(dump_document(document))
    summary = {
        "output": str(output),
        "channel": manifest.channel,
        "arch": manifest.arch,
        "version": manifest.version,
        "sequence": manifest.sequence,
        "keyid": key.public.keyid,
        "artifacts": sorted(manifest.artifacts),
    }
    emit(
        args,
        summary,
        f"wrote {output}: {manifest.combination} version {manifest.version} "
        f"sequence {manifest.sequence} ({', '.join(sorted(manifest.artifacts))}) "
        f"signed by {key.public.keyid}\n",
    )
    return EXIT_OK


def cmd_manifest_sign(args: argparse.Namespace) -> int:
    key = load_signing_key(args.key)
    source = Path(args.file)
    try:
        data = read_manifest_file(source)  # a regular file, refused past the cap unread
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror or exc}") from exc
    manifest = parse_manifest(data)
    document = sign_document(dict(manifest.document), key)
    output = Path(args.output or args.file)
    write_new_file(output, dump_document(document), 0o644, force=True)
    emit(
        args,
        {
            "output": str(output),
            "keyid": key.public.keyid,
            "signatures": len(document["signatures"]),
        },
        f"signed {output} with {key.public.keyid} ({len(document['signatures'])} signature(s))\n",
    )
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog=PROG, description="Phase boot-image provider.")
    add_verbosity(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    for name, (module_name, help_text) in EXTERNAL.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(
            name,
            help=help_text,
            description=help_text[0].upper() + help_text[1:] + ".",
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog=getattr(module, "EPILOG", None),
        )
        module.add_arguments(p)
        if name != "image":  # its own 'build -q' (progress lines) is the image builder's
            add_verbosity(p, inherit=True)
        p.set_defaults(func=module.run)

    p = sub.add_parser(
        "keygen",
        help="create an Ed25519 key pair",
        description="Create an Ed25519 key: FILE (private, 0600) and FILE.pub.",
    )
    p.add_argument("--out", required=True, metavar="FILE", help="private key file to create")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_verbosity(p, inherit=True)
    p.set_defaults(func=cmd_keygen)

    manifest = sub.add_parser("manifest", help="generate or sign manifests")
    msub = manifest.add_subparsers(dest="manifest_command", metavar="ACTION")
    msub.required = True
    g = msub.add_parser(
        "generate",
        help="hash DIR/CHANNEL/ARCH and write a signed manifest",
        description="Hash the files of DIR/CHANNEL/ARCH/ (vmlinuz -> kernel, "
        "initramfs.img -> initramfs, rootfs.sqfs -> rootfs, dtb, cmdline) and "
        "write a signed manifest.",
    )
    g.add_argument("--artifacts", required=True, metavar="DIR")
    g.add_argument("--channel", required=True, type=argtype(check_channel))
    g.add_argument("--arch", required=True, type=argtype(check_arch))
    g.add_argument("--key", required=True, metavar="FILE", help="signing (private) key")
    g.add_argument("--output", required=True, metavar="FILE")
    g.add_argument("--version", help="image version (default: today, YYYY.MM.DD)")
    g.add_argument(
        "--sequence",
        type=count(0, 2**63 - 1),
        help="sequence number (default: max(unix time, previous in --output + 1))",
    )
    g.add_argument(
        "--expires-in",
        type=number(0, 3650, low_open=True),
        default=30,
        metavar="DAYS",
        help="validity in days (default 30, at most 3650)",
    )
    g.add_argument("--cmdline", help="kernel command line (default: the cmdline file, if any)")
    g.add_argument("--json", action="store_true", help="print the result as JSON")
    add_verbosity(g, inherit=True)
    g.set_defaults(func=cmd_manifest_generate)
    s = msub.add_parser("sign", help="add a signature to a manifest (for thresholds)")
    s.add_argument("file", metavar="FILE")
    s.add_argument("--key", required=True, metavar="FILE", help="signing (private) key")
    s.add_argument("--output", metavar="FILE", help="write here instead of in place")
    s.add_argument("--json", action="store_true", help="print the result as JSON")
    add_verbosity(s, inherit=True)
    s.set_defaults(func=cmd_manifest_sign)
    return parser


def handle(args: argparse.Namespace) -> int:
    setup_logging(args.verbose, args.quiet)
    if getattr(args, "sequence", None) is not None and args.sequence < 0:
        raise UsageError("--sequence must be non-negative")
    return int(args.func(args))


def main(argv: list[str] | None = None) -> int:
    return run(PROG, build_parser(), handle, argv)
