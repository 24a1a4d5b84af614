"""``plasmd publish``: copy a file into the artifacts tree atomically (write elsewhere, fsync,
rename into place), so a running ``plasmd serve`` never sees a part of it.

Top-level imports stay light: ``plasmd --help`` imports this module.
"""

from __future__ import annotations

import argparse

from ._common import EXIT_OK, emit, exit_codes_help

EPILOG = """The file is copied to a hidden temporary name in DIR/<channel>/<arch>/, hashed as it is
copied, fsync'd and renamed over the old file in one step: a provider scanning the tree sees
the old file or the whole new one. The channel and arch directories are created if missing and
never followed through a symbolic link.

names: vmlinuz (or kernel), initramfs.img (initramfs), rootfs.sqfs (rootfs), dtb, cmdline,
version, manifest.json (a manifest signed elsewhere: mirror mode)

example:
  plasmd publish build/vmlinuz --artifacts /srv/plasm --channel stable --arch x86_64

""" + exit_codes_help({2: "bad arguments, unreadable file, unwritable directory"}, codes=(0, 2, 70))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..names import check_arch, check_channel, host_arch
    from ._common import argtype

    parser.add_argument("file", metavar="FILE", help="the file to publish")
    parser.add_argument(
        "--artifacts",
        metavar="DIR",
        help="the artifacts directory (default: artifacts_dir of the configuration file)",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="plasmd configuration to take the directory from (default "
        "/etc/plasmd/plasmd.toml, or $PLASMD_CONFIG, when it exists)",
    )
    parser.add_argument(
        "--channel", type=argtype(check_channel), default="stable", help="default stable"
    )
    parser.add_argument(
        "--arch", type=argtype(check_arch), default=host_arch(), help="default: this host's"
    )
    parser.add_argument(
        "--as",
        dest="name",
        metavar="NAME",
        help="the name in DIR/<channel>/<arch>/ (default: FILE's own name)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from ..provider.config import config_to_read, default_config_path, load_config_file
    from ..provider.publish import publish

    root, channel_dir = args.artifacts, None
    if root is None:
        path = config_to_read(args.config)
        settings = load_config_file(path) if path else {}
        channel_dir = settings.get("channels_config", {}).get(args.channel)
        root = settings.get("artifacts_dir")
        if root is None and channel_dir is None:
            raise UsageError(
                "no artifacts directory: give --artifacts DIR, or artifacts_dir in --config "
                f"FILE or in {default_config_path()}"
            )
    result = publish(
        args.file, root or "", args.channel, args.arch, args.name, channel_dir=channel_dir
    )
    emit(
        args,
        result.to_json(),
        f"published {result.path} ({result.size} bytes, sha256 {result.sha256})\n",
    )
    return EXIT_OK
