"""phase-fetch: download a signed manifest and its artifacts, verified, into a directory."""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import urllib.parse
from pathlib import Path
from types import FrameType

from ..errors import NoSourceError, UsageError
from ._common import (
    Parser,
    add_source_arguments,
    add_verbosity,
    bootstrap_contacts,
    count,
    exit_codes_help,
    number,
    print_json,
    run,
    seconds,
    setup_logging,
    success,
)
from ._trust import add_trust_arguments, root_from_args, state_from_args

PROG = "phase-fetch"

EPILOG = """output (DIR):
  kernel, initramfs, rootfs, dtb   the artifacts, each present only if its sha256 matched
  manifest.json                    the verified manifest (written last)
  cmdline                          the kernel command line from the manifest
  .<name>.part                     in progress; removed on failure

sources for each artifact, in order: the manifest's provider (manifest URL + path), the
manifest's 'urls' mirrors, --mirror bases, the other --manifest providers serving the same
signed manifest. With 2+ sources, large artifacts are split into ranges fetched in parallel.

rollback state: with --state-dir the manifest is checked against the state and, after every
artifact verified, recorded as accepted (--update-state is implied).

root of trust (--root, or root.json in --keys-dir; docs/trust.md): before any manifest is
read, the chain of newer roots is walked from root.<N>.json in the state directory and beside
file manifests, then /root/<N>.json on each manifest URL's host, each root verified before the
next is asked for (32 steps at most); new roots are kept in the state directory and in DIR
(root.<N>.json, for kexec-boot's re-check); the manifest must be signed by the newest root's
release keys.

checked before any network work (exit 2 when wrong): every --manifest and --mirror (an
http:// or https:// URL with a host and a port from 1 to 65535, or a file), --output (a
directory, or one that can be made), the trusted keys or root file.

example:
  phase-fetch --manifest http://provider1:8080/stable/x86_64/manifest.json \\
      --key ed25519:<hex> --output /run/boot --json

""" + exit_codes_help(
    {
        0: "success: every artifact verified and in DIR",
        1: "verification or integrity failure (bad signature, expired, rollback, wrong bytes)",
        2: "usage error, unreadable key or configuration, or DIR cannot be written",
        3: "no source reachable (manifest or artifact)",
        130: "interrupted (Ctrl-C, SIGTERM): the part files of the run are removed",
    }
)

log = logging.getLogger(__name__)

# "word:/" starts a URL, never a file path (a file named so is given as ./word:/...).
URL_LIKE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")
SCHEMES = ("http", "https")


def check_location(text: str, what: str) -> str:
    """A --manifest or --mirror value checked before any network work: an http(s) URL with a
    host and a port from 1 to 65535 (returned with its scheme in lower case), or a file path.
    Anything else that looks like a URL is a usage error in plain words, never read as a file."""
    if not URL_LIKE.match(text):
        if not text or not text.isprintable():
            raise UsageError(f"{what} {text!r}: not a URL or a file path")
        return text
    scheme, _, rest = text.partition(":")
    if scheme.lower() not in SCHEMES:
        raise UsageError(
            f"{what} {text!r}: unsupported scheme {scheme!r} (http://, https:// or a file path)"
        )
    url = scheme.lower() + ":" + rest
    if not url.isprintable() or any(c.isspace() for c in url):
        raise UsageError(f"{what} {text!r}: a URL has no spaces or control characters")
    if not rest.startswith("//"):
        raise UsageError(f"{what} {text!r}: not a URL (want {scheme.lower()}://HOST[:PORT]/PATH)")
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # only an unbalanced [ or ] around an IPv6 host gets here
        raise UsageError(f"{what} {text!r}: bad host (an IPv6 address goes in [ ])") from None
    if not parts.hostname:
        raise UsageError(f"{what} {text!r}: no host (want {parts.scheme}://HOST[:PORT]/PATH)")
    port = parts.netloc.rpartition("]")[2].rpartition("@")[2].rpartition(":")
    if port[1] and not (port[2].isascii() and port[2].isdigit() and 0 < int(port[2]) < 65536):
        raise UsageError(f"{what} {text!r}: the port must be a number from 1 to 65535")
    return url


def check_output(path: str) -> None:
    """--output before anything is fetched: a writable directory, or one that can be made in
    the nearest existing directory above it."""
    target = Path(path)

    def exists(where: Path) -> bool:
        try:
            return where.exists()
        except PermissionError:  # a directory above cannot be searched
            raise UsageError(
                f"--output {path}: {where.parent} cannot be searched (permission denied)"
            ) from None

    if exists(target) and not target.is_dir():
        raise UsageError(f"--output {path}: exists and is not a directory")
    above = target
    while not exists(above):
        if above.is_symlink():
            raise UsageError(f"--output {path}: {above} is a dangling symbolic link")
        if above.parent == above:
            break
        above = above.parent
    if not above.is_dir():
        raise UsageError(f"--output {path}: {above} is not a directory")
    if not os.access(above, os.W_OK | os.X_OK):
        writable = "cannot be written" if above == target else "cannot be made there"
        raise UsageError(f"--output {path}: {above} is not writable ({path} {writable})")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Fetch a signed boot manifest, verify it (same trust flags as phase-verify) "
        "BEFORE any artifact byte is requested, then stream each artifact with on-the-fly "
        "sha256, Range resume, multi-source ranges and abuse guards into DIR.",
        epilog=EPILOG,
    )
    parser.add_argument(
        "--manifest",
        action="append",
        default=[],
        metavar="URL|PATH",
        help="manifest URL (http, https) or file (./NAME for a file whose name looks like a "
        "URL); repeat for alternative providers (the first that verifies is used, the others "
        "serving the same manifest become extra sources)",
    )
    parser.add_argument("-o", "--output", metavar="DIR", help="output directory (required)")
    add_trust_arguments(parser)
    parser.add_argument(
        "--artifact",
        action="append",
        default=[],
        metavar="NAME,...",
        help="fetch only these artifacts (default: all in the manifest)",
    )
    parser.add_argument(
        "--mirror",
        action="append",
        default=[],
        metavar="BASE",
        help="extra source: base URL (http, https) or directory; the artifact's path is "
        "appended; repeatable",
    )
    parser.add_argument(
        "--cache", metavar="DIR", help="content-addressed cache of verified blobs (by sha256)"
    )
    parser.add_argument(
        "--timeout",
        type=seconds(),
        default=20.0,
        metavar="S",
        help="seconds without a byte before a connection counts as cut (default 20; "
        "connect timeout is a quarter of it, at most 5)",
    )
    parser.add_argument(
        "--retries",
        type=count(0, 100),
        default=3,
        metavar="N",
        help="resume attempts per source after a cut connection (default 3)",
    )
    parser.add_argument(
        "--connections",
        type=count(1, 64),
        default=4,
        metavar="N",
        help="parallel range requests when 2+ sources serve an artifact of 16 MiB or more "
        "(default 4; 1 turns the split off)",
    )
    parser.add_argument(
        "--min-rate",
        type=number(0, 10_000_000, low_open=True),
        default=16.0,
        metavar="KB/S",
        help="drop a source slower than this for --grace seconds (default 16 KiB/s)",
    )
    parser.add_argument(
        "--grace",
        type=seconds(),
        default=20.0,
        metavar="S",
        help="how long a source may stay under --min-rate (default 20)",
    )
    found = parser.add_argument_group("discovery")
    found.add_argument(
        "--discover",
        action="store_true",
        help="find providers first, as phase-discover does (mDNS, then the DHT), for "
        "--channel/--arch (default stable/this machine's arch, then required of the manifest); "
        "their manifests are tried best first, after any --manifest",
    )
    add_source_arguments(
        found,
        "with --discover: where to look (default auto)",
        "with --discover: DHT bootstrap node; repeatable",
    )
    found.add_argument(
        "--discover-timeout",
        type=seconds(3600),
        default=5.0,
        metavar="S",
        help="with --discover: seconds to search (default 5)",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    add_verbosity(parser)
    return parser


def discovered_manifests(args: argparse.Namespace) -> list[str]:
    """Manifest URLs of the reachable providers, best first; pins --channel/--arch."""
    from ..discovery.model import Query
    from ..discovery.orchestrate import find_providers
    from ..names import host_arch

    bootstrap = bootstrap_contacts(args)  # HOST:PORT (our DHT) and libp2p multiaddrs
    if args.source == "dht" and not bootstrap:
        raise UsageError(
            "--source dht needs --bootstrap HOST:PORT (or phase.bootstrap= on the "
            "kernel command line)"
        )
    # What was looked for is what must be booted: the trust policy requires the same pair.
    args.channel = args.channel or "stable"
    args.arch = args.arch or host_arch()
    query = Query(channel=args.channel, arch=args.arch, timeout=args.discover_timeout)
    found = find_providers(query, source=args.source, bootstrap=bootstrap)
    if not found:
        raise NoSourceError(
            f"no provider of {args.channel}/{args.arch} found within {args.discover_timeout:g} s"
        )
    for candidate in found:
        log.info(
            "discovered %s (%s, version %s)",
            candidate.url,
            candidate.source,
            candidate.version or "?",
        )
    return [candidate.url for candidate in found]


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C, so the part files of the run are removed on the way out.
    raise KeyboardInterrupt


def handle(args: argparse.Namespace) -> int:
    from ..fetch.download import Settings
    from ..fetch.fetcher import FetchRequest, fetch
    from ..fetch.progress import Progress
    from ..fetch.rootchain import places_for, update_root
    from ..root import release_policy

    setup_logging(args.verbose, args.quiet)
    # Everything the command line says is checked before any network work (discovery included).
    manifests = [check_location(m, "--manifest") for m in args.manifest]
    mirrors = [check_location(m, "--mirror") for m in args.mirror]
    if not args.discover and (args.bootstrap or args.source != "auto"):
        raise UsageError("--source and --bootstrap go with --discover")
    if not manifests and not args.discover:
        raise UsageError("no manifest given (--manifest URL|PATH, or --discover)")
    if not args.output:
        raise UsageError("no output directory given (--output DIR)")
    check_output(args.output)
    only = [n.strip() for value in args.artifact for n in value.split(",") if n.strip()]
    settings = Settings(
        connect_timeout=min(5.0, args.timeout / 4),
        read_timeout=args.timeout,
        retries=args.retries,
        connections=args.connections,
        min_rate=args.min_rate * 1024,
        grace=args.grace,
    )
    start = root_from_args(args)
    state = state_from_args(args)
    if args.discover:
        manifests += discovered_manifests(args)
    update = update_root(start, places_for(manifests, state, settings), state, persist=True)
    request = FetchRequest(
        manifests=manifests,
        output=Path(args.output),
        policy=release_policy(update.root, args.channel, args.arch),
        state=state,
        only=only or None,
        mirrors=mirrors,
        cache=Path(args.cache) if args.cache else None,
        settings=settings,
        before_commit=update.keep_in if start.document is not None else None,
    )
    signal.signal(signal.SIGTERM, _terminate)
    progress = Progress(sys.stderr, enabled=not args.quiet)
    result = fetch(request, progress)
    if args.json:
        print_json(success({**result.to_json(), "root": update.to_json()}))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(PROG, build_parser(), handle, argv)
