"""``plasmd config check [FILE]``: validate a plasmd configuration file as ``plasmd serve``
would read it, and name the file and line of the first error.

Top-level imports stay light: ``plasmd --help`` imports this module.
"""

from __future__ import annotations

import argparse
from typing import Any

from ._common import EXIT_OK, exit_codes_help

EPILOG = """FILE defaults to /etc/plasmd/plasmd.toml ($PLASMD_CONFIG names another default).
Checked: TOML syntax, every table and key, types and ranges, channel and arch names, bootstrap
addresses, that the artifacts directories exist and the signing key is readable. Flags of
plasmd serve would still win over the file. An error is one line naming the file and its line:

  plasmd: config /etc/plasmd/plasmd.toml: [provider] scan_interval = 0 is out of range: ... (line 7)

""" + exit_codes_help({0: "the file is valid", 2: "the file is invalid or unreadable"}, (0, 2, 70))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="config_command", metavar="ACTION")
    sub.required = True
    check = sub.add_parser(
        "check",
        help="validate a configuration file",
        description="Validate a plasmd configuration file; name the file and line of an error.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    check.add_argument("file", metavar="FILE", nargs="?", help="default /etc/plasmd/plasmd.toml")
    check.add_argument("--json", action="store_true", help="print the result as JSON")


def summary(config: Any) -> dict[str, Any]:
    return {
        "artifacts_dir": str(config.artifacts_root) if config.artifacts_root else None,
        "channel_dirs": {c: str(d) for c, d in config.channel_dirs.items()},
        "port": config.port,
        "bind": config.bind or None,  # null: every address, IPv4 and IPv6 (the default)
        "state_dir": str(config.state_dir),
        "key": str(config.key) if config.key else None,
        "mdns": config.mdns,
        "dht": config.dht,
    }


def run(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from ..keys import load_signing_key
    from ..provider.config import (
        ConfigError,
        default_config_path,
        load_config_file,
        locate,
        resolve,
    )
    from ._common import failure, report

    path = args.file or str(default_config_path())
    line: int | None = None
    try:
        settings = load_config_file(path)
        try:
            config = resolve({}, settings)
            if config.key is not None:
                load_signing_key(config.key)
        except UsageError as exc:  # a setting that parses but cannot be used: find its line
            key = "key" if "key" in str(exc) else "artifacts_dir"
            with open(path, encoding="utf-8") as handle:
                line = locate(handle.read(), "provider", key)
            where = f" (line {line})" if line else ""
            raise ConfigError(f"config {path}: {exc}{where}", line=line) from exc
    except UsageError as exc:
        line = exc.line if isinstance(exc, ConfigError) else None
        envelope = failure(exc.exit_code, exc.reason, str(exc), {"file": path, "line": line})
        report("plasmd", args, envelope, f"plasmd: {exc}")
        return exc.exit_code
    from ._common import emit

    facts = summary(config)
    where = facts["artifacts_dir"] or ", ".join(facts["channel_dirs"].values())
    emit(
        args,
        {"file": path, "settings": facts},
        f"{path}: OK (artifacts {where}, port {config.port})\n",
    )
    return EXIT_OK
