"""What every command shares: one-line errors, exit codes, logging, JSON output."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Callable
from typing import Any

from ..errors import PhaseError
from ..hostport import bootstrap_from_proc, parse_host_port
from ..verification import argtype

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERNAL = 70

EXIT_CODES_HELP = """exit codes:
  0  success
  1  verification or integrity failure
  2  usage error, unreadable key or configuration
  3  no source reachable / nothing found
"""


class Parser(argparse.ArgumentParser):
    """argparse with the exit-code table appended to --help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        kwargs.setdefault("epilog", EXIT_CODES_HELP)
        super().__init__(*args, **kwargs)


def number(
    low: float, high: float, *, integer: bool = False, low_open: bool = False
) -> Callable[[str], Any]:
    """An argparse ``type`` for a finite number in [low, high] (or (low, high] with
    ``low_open``): nan, inf, and values a socket timeout or a timer would choke on are usage
    errors (exit 2) in one line, never a busy loop or a crash later."""

    def convert(text: str) -> float | int:
        try:
            value: float | int = int(text) if integer else float(text)
        except ValueError:
            kind = "an integer" if integer else "a number"
            raise argparse.ArgumentTypeError(f"not {kind}: {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number: {text!r}")
        if value < low or (low_open and value == low) or value > high:
            bounds = f"{'>' if low_open else '>='} {low:g} and <= {high:g}"
            raise argparse.ArgumentTypeError(f"must be {bounds}: {text!r}")
        return value

    convert.__name__ = "integer" if integer else "number"
    return convert


def seconds(high: float = 86400.0) -> Callable[[str], Any]:
    """A duration in seconds: more than 0, at most ``high`` (a day by default)."""
    return number(0, high, low_open=True)


def count(low: int, high: int = 1_000_000) -> Callable[[str], Any]:
    return number(low, high, integer=True)


def add_bootstrap_argument(parser: argparse.ArgumentParser | Any, help_text: str) -> None:
    parser.add_argument(
        "--bootstrap",
        action="append",
        default=[],
        type=argtype(parse_host_port),
        metavar="HOST:PORT",
        help=help_text,
    )


def bootstrap_nodes(args: argparse.Namespace) -> list[tuple[str, int]]:
    """``--bootstrap`` values, else ``phase.bootstrap=`` of the kernel command line."""
    return list(args.bootstrap) or bootstrap_from_proc()


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    """``LEVEL message`` lines on stderr (the seed's log format: ``INFO Found 2 ...``)."""
    logging.addLevelName(logging.WARNING, "WARN")
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 0 else logging.INFO)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    # Libraries are chatty at INFO; their detail is only wanted with -v.
    for name in ("zeroconf", "kademlia", "rpcudp", "urllib3"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()


def run(
    prog: str,
    parser: argparse.ArgumentParser,
    handler: Callable[[argparse.Namespace], int],
    argv: list[str] | None,
) -> int:
    """Parse, run, and turn every failure into one line on stderr and an exit code."""
    args = parser.parse_args(argv)
    try:
        return handler(args)
    except PhaseError as exc:
        sys.stderr.write(f"{prog}: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # never a traceback for the user; -v style detail goes to the log
        logging.getLogger(prog).debug("internal error", exc_info=True)
        sys.stderr.write(f"{prog}: internal error: {type(exc).__name__}: {exc}\n")
        return EXIT_INTERNAL
