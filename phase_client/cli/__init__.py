"""Command entry points. Each tool is a module with ``main(argv) -> int``; logic lives elsewhere.

The same dispatcher serves the console scripts, ``python -m phase_client TOOL`` and the zipapp,
which is multi-call: run through a symlink named ``phase-verify`` it acts as phase-verify.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys

TOOLS = {
    "verify": "phase_client.cli.verify",
    "fetch": "phase_client.cli.fetch",
    "discover": "phase_client.cli.discover",
    "boot": "phase_client.cli.boot",
    "plasmd": "phase_client.cli.plasmd",
}
ALIASES = {f"phase-{name}": name for name in ("verify", "fetch", "discover", "boot")} | {
    "plasmd": "plasmd"
}

USAGE = """usage: phase TOOL [ARGS...]

tools:
  discover   find a boot-image provider (mDNS on the LAN, then the DHT)
  fetch      download a signed manifest and its artifacts, verified
  verify     check a manifest's signatures, freshness and rollback state
  boot       discover, fetch, verify, stage and kexec, in one process (the initramfs's)
  plasmd     the provider: serve, keygen, manifest generate|sign, dht-node

Run 'phase TOOL --help' for the options of a tool; 'phase --version' for the version.
"""


def run_tool(name: str, argv: list[str]) -> int:
    # Importing a tool makes tens of thousands of objects and next to no garbage: the cyclic
    # collector's passes meanwhile are pure cost (5-10 % of the imports' time; under emulation,
    # where phase-boot's start-up is on the boot's critical path, 0.07 s of 1.23 s, more on a
    # cold start: docs/bench-boot.md). So it is off while the tool is imported (phase-boot
    # keeps it off until its last import).
    collecting = gc.isenabled()
    gc.disable()
    try:
        module = importlib.import_module(TOOLS[name])
    finally:
        if collecting:
            gc.enable()
    return int(module.main(argv))


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv if argv is None else argv)
    invoked = os.path.basename(args[0]) if args else "phase"
    for suffix in (".pyz", ".py"):
        invoked = invoked.removesuffix(suffix)
    if invoked in ALIASES:
        return run_tool(ALIASES[invoked], args[1:])
    rest = args[1:]
    if rest[:1] == ["--version"]:
        from .. import __version__

        sys.stdout.write(f"phase {__version__}\n")
        return 0
    if not rest or rest[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0 if rest else 2
    tool = ALIASES.get(rest[0], rest[0])
    if tool not in TOOLS:
        sys.stderr.write(f"phase: unknown tool {rest[0]!r} (try: {', '.join(TOOLS)})\n")
        return 2
    return run_tool(tool, rest[1:])


def verify_main() -> None:
    sys.exit(run_tool("verify", sys.argv[1:]))


def fetch_main() -> None:
    sys.exit(run_tool("fetch", sys.argv[1:]))


def discover_main() -> None:
    sys.exit(run_tool("discover", sys.argv[1:]))


def boot_main() -> None:
    sys.exit(run_tool("boot", sys.argv[1:]))


def plasmd_main() -> None:
    sys.exit(run_tool("plasmd", sys.argv[1:]))
