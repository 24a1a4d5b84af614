"""phase-discover: find providers of a channel/arch manifest (mDNS on the LAN, then the DHT:
the private one through HOST:PORT bootstraps, libp2p Kademlia through multiaddr ones)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..discovery.model import Candidate, Query
from ..errors import NoSourceError, UsageError
from ..hostport import split_contacts
from ..names import check_arch, check_channel, host_arch
from ._common import (
    EXIT_OK,
    Parser,
    add_source_arguments,
    add_verbosity,
    argtype,
    bootstrap_contacts,
    exit_codes_help,
    print_json,
    run,
    seconds,
    setup_logging,
    success,
)

PROG = "phase-discover"
NOTHING_FOUND: dict[str, Any] = {"providers": []}  # the --json failure envelope's empty result


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=PROG,
        description="Find a boot-image provider for a channel/arch: "
        "mDNS (_phase-image._tcp) on the LAN first, then the Kademlia DHT (ours through "
        "HOST:PORT bootstraps, libp2p's through /ip4/A/tcp/P/p2p/ID multiaddrs). Prints "
        "the best manifest URL (or every provider with --all).",
        epilog=exit_codes_help(
            {0: "found", 3: "nothing found within the timeout"}, codes=(0, 2, 3, 70, 130)
        ),
        json_failure=NOTHING_FOUND,
    )
    parser.add_argument(
        "--channel", default="stable", type=argtype(check_channel), help="channel (default stable)"
    )
    parser.add_argument(
        "--arch",
        default=host_arch(),
        type=argtype(check_arch),
        help=f"architecture (default this machine's: {host_arch()})",
    )
    parser.add_argument(
        "--all",
        dest="want_all",
        action="store_true",
        help="collect for the whole timeout and list every provider",
    )
    parser.add_argument(
        "--list",
        action="store_true",
        help="print every provider found, one line each as --all does, but return as soon as "
        "an answer is in (the boot's choice: quick, with fallbacks)",
    )
    parser.add_argument(
        "--timeout",
        type=seconds(3600),
        default=5.0,
        metavar="S",
        help="seconds to search (default 5)",
    )
    add_source_arguments(
        parser,
        "auto (default): mDNS, then the DHTs of the --bootstrap contacts if the LAN has no "
        "provider; dht: our DHT alone; libp2p: libp2p Kademlia alone",
        "DHT bootstrap node: HOST:PORT (our DHT) or a libp2p multiaddr "
        "/ip4/A/tcp/P/p2p/12D3KooW... (libp2p Kademlia); repeatable",
    )
    parser.add_argument(
        "--interface",
        action="append",
        default=[],
        metavar="NAME|ADDR",
        help="browse mDNS on this interface or IPv4 address only (repeatable)",
    )
    parser.add_argument(
        "--no-probe",
        action="store_true",
        help="do not probe candidates (no liveness check, no RTT ranking)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='print {"ok": true, "providers": [...]} (ranked); nothing found: {"ok": false, '
        '"providers": [], "error": {...}} and exit 3',
    )
    add_verbosity(parser)
    return parser


def discover(args: argparse.Namespace) -> list[Candidate]:
    from ..discovery.orchestrate import find_providers

    query = Query(
        channel=args.channel, arch=args.arch, timeout=args.timeout, want_all=args.want_all
    )
    return find_providers(
        query,
        source=args.source,
        bootstrap=bootstrap_contacts(args),
        probe=not args.no_probe,
        interfaces=args.interface or None,
    )


def handle(args: argparse.Namespace) -> int:
    setup_logging(args.verbose, args.quiet)
    contacts, multiaddrs = split_contacts(bootstrap_contacts(args))
    if args.source == "dht" and not contacts:
        raise UsageError(
            "--source dht needs --bootstrap HOST:PORT (or phase.bootstrap= on the "
            "kernel command line)"
        )
    if args.source == "libp2p" and not multiaddrs:
        raise UsageError(
            "--source libp2p needs --bootstrap /ip4/A/tcp/P/p2p/ID (or phase.bootstrap= on the "
            "kernel command line)"
        )
    if args.bootstrap and multiaddrs:  # given on the command line: say at once what is wrong
        from ..libp2p.errors import MultiaddrError
        from ..libp2p.multiaddr import Multiaddr

        for text in multiaddrs:
            try:
                tcp = Multiaddr.from_text(text).tcp_target()
            except MultiaddrError as exc:
                raise UsageError(f"--bootstrap {text[:80]}: {exc}") from None
            if tcp is None:
                raise UsageError(f"--bootstrap {text[:80]}: not a TCP multiaddr")
    found = discover(args)
    if not found:
        raise NoSourceError(
            f"no provider of {args.channel}/{args.arch} found within {args.timeout:g} s"
        )
    if args.json:
        print_json(success({"providers": [c.to_json() for c in found]}))
    elif args.want_all or args.list:
        for c in found:
            rtt = f"{c.rtt_ms:.1f}ms" if c.rtt_ms is not None else "-"
            sys.stdout.write(f"{c.url}\t{c.source}\t{c.version or '-'}\t{rtt}\t{c.name or '-'}\n")
    else:
        sys.stdout.write(found[0].url + "\n")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    return run(PROG, build_parser(), handle, argv)
