"""What every command shares: exit codes, one-line errors, -q/-v and logging, the --json envelope.

The ``--json`` envelope, the same for every tool (README, "JSON output"):

    success   {"ok": true, ...what the tool reports...}
    failure   {"ok": false, "error": {"exit_code": N, "reason": "WORD", "message": "..."}, ...}

A failure also carries the tool's empty result where it has one (phase-verify ``"verified":
false``, phase-discover ``"providers": []``). Usage errors found by the argument parser print it
too when ``--json`` was given. The one-line error still goes to stderr, for people.

``-q`` and ``-v`` mean the same in every tool: ``-q`` drops progress, INFO log lines and success
chatter (results asked for, JSON and errors are always printed); ``-v`` adds DEBUG lines, each
ending with the module it came from, and the traceback of an internal error; ``-vv`` also the
libraries' (urllib3, zeroconf, kademlia, rpcudp) own log lines.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

from .. import __version__
from ..errors import EXIT_CODES, PhaseError
from ..errors import EXIT_FAILED as EXIT_FAILED  # the codes, for the tools that import them here
from ..errors import EXIT_INTERNAL as EXIT_INTERNAL
from ..errors import EXIT_INTERRUPTED as EXIT_INTERRUPTED
from ..errors import EXIT_OK as EXIT_OK
from ..errors import EXIT_UNREACHABLE as EXIT_UNREACHABLE
from ..errors import EXIT_USAGE as EXIT_USAGE
from ..hostport import (
    Contact,
    bootstrap_from_proc,
    parse_contact,
    parse_host_port,
    split_contacts,
)

log = logging.getLogger(__name__)

LOGGER_TREE = "phase_client"  # every module logs under its own name, below this
LIBRARIES = ("zeroconf", "kademlia", "rpcudp", "urllib3")


T = TypeVar("T")


def argtype(check: Callable[[str], T]) -> Callable[[str], T]:
    """Wrap a validator raising PhaseError as an argparse ``type`` (usage error, exit 2)."""

    def convert(value: str) -> T:
        try:
            return check(value)
        except PhaseError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    convert.__name__ = check.__name__.removeprefix("check_")
    return convert


def exit_codes_help(
    meanings: dict[int, str] | None = None, codes: tuple[int, ...] | None = None
) -> str:
    """The exit-code table for an epilog: ``codes`` are the ones a tool can return (default
    all), ``meanings`` what a code means for that tool, in the table's words made precise."""
    lines = ["exit codes:"]
    for code, text in EXIT_CODES:
        if codes is None or code in codes:
            lines.append(f"  {code:<2} {(meanings or {}).get(code, text)}")
    return "\n".join(lines) + "\n"


EXIT_CODES_HELP = exit_codes_help()


class Parser(argparse.ArgumentParser):
    """argparse with the exit-code table appended to --help, ``--version`` on every command and
    subcommand, and usage errors that print the ``--json`` failure envelope when ``--json`` was
    given (still exit 2, as argparse does)."""

    def __init__(
        self, *args: Any, json_failure: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        kwargs.setdefault("epilog", EXIT_CODES_HELP)
        super().__init__(*args, **kwargs)
        self.json_failure = dict(json_failure or {})
        self._wants_json = False
        self._version: argparse.Action | None = None
        self._version = self.add_argument(
            "--version",
            action="version",
            version=f"%(prog)s {__version__}",
            help="print the program's name and version, then exit",
        )

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        # A subcommand whose own --version means something else (plasmd manifest generate
        # --version V: the image's version) keeps it; that subcommand's parent prints ours.
        ours: argparse.Action | None = getattr(self, "_version", None)
        if "--version" in args and ours is not None:
            self._version = None
            self._handle_conflict_resolve(ours, [("--version", ours)])
        return super().add_argument(*args, **kwargs)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        words = list(sys.argv[1:] if args is None else args)
        self._wants_json = (
            "--json" in words[: words.index("--")] if "--" in words else ("--json" in words)
        )
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        if self._wants_json:
            print_json(failure(EXIT_USAGE, "usage", message, self.json_failure))
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def add_verbosity(parser: argparse.ArgumentParser, *, inherit: bool = False) -> None:
    """``-q``/``-v``, the same in every tool. ``inherit``: on a subcommand, where the values given
    before the subcommand must survive when these are not repeated after it."""
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS if inherit else False,
        help="quiet: no progress, no INFO lines, no success text (results and errors stay)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS if inherit else 0,
        help="more detail: DEBUG lines naming their module; -vv also the libraries'",
    )


def success(fields: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``--json`` envelope of a success."""
    return {**(fields or {}), "ok": True}


def failure(
    exit_code: int, reason: str, message: str, fields: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``--json`` envelope of a failure; ``fields`` is the tool's empty result."""
    return {
        **(fields or {}),
        "ok": False,
        "error": {"exit_code": exit_code, "reason": reason, "message": message},
    }


def failure_of(exc: PhaseError, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    return failure(exc.exit_code, exc.reason, str(exc), fields)


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


def add_source_arguments(
    parser: argparse.ArgumentParser | Any, source_help: str, bootstrap_help: str
) -> None:
    """Where discovery looks: ``--source auto|mdns|dht|libp2p`` and ``--bootstrap HOST:PORT``
    (the private DHT) or ``--bootstrap MULTIADDR`` (libp2p Kademlia)."""
    parser.add_argument(
        "--source", choices=("auto", "mdns", "dht", "libp2p"), default="auto", help=source_help
    )
    parser.add_argument(
        "--bootstrap",
        action="append",
        default=[],
        type=argtype(parse_contact),
        metavar="HOST:PORT|MULTIADDR",
        help=bootstrap_help,
    )


def bootstrap_contacts(args: argparse.Namespace) -> list[Contact]:
    """``--bootstrap`` values (``HOST:PORT`` and libp2p multiaddrs), else ``phase.bootstrap=``
    of the kernel command line."""
    return list(args.bootstrap) or bootstrap_from_proc()


def bootstrap_nodes(args: argparse.Namespace) -> list[tuple[str, int]]:
    """The ``HOST:PORT`` contacts of ``bootstrap_contacts`` (the private DHT's)."""
    return split_contacts(bootstrap_contacts(args))[0]


class _Where(logging.Formatter):
    """``LEVEL message``; with -v, `` [module]`` after it says where the line came from."""

    def __init__(self, verbose: int) -> None:
        super().__init__("%(levelname)s %(message)s")
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return f"{text} [{record.name}]" if self.verbose > 0 else text


def remove_log_handlers() -> None:
    """Take off the root logger the stderr handlers ``setup_logging`` put there: for a caller
    that ran a command in-process (a test) and outlives that stderr."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler.formatter, _Where):
            root.removeHandler(handler)


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    """``LEVEL message`` lines on stderr (``INFO Found 2 ...``) for the ``phase_client`` logger
    tree (and any other logger of ours); -q: WARN and up; -v: DEBUG, with the module's name."""
    logging.addLevelName(logging.WARNING, "WARN")
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 0 else logging.INFO)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Where(verbose))
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger(LOGGER_TREE).setLevel(level)
    # Libraries are chatty at INFO; their detail is only wanted with -vv.
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()


def emit(args: argparse.Namespace, fields: dict[str, Any], text: str) -> None:
    """A success: the --json envelope with ``fields``, else ``text`` unless -q."""
    if getattr(args, "json", False):
        print_json(success(fields))
    elif not getattr(args, "quiet", False):
        sys.stdout.write(text)


def report(prog: str, args: argparse.Namespace | None, envelope: dict[str, Any], line: str) -> None:
    """A failure, once for people (one line on stderr) and, with --json, once for programs."""
    if args is not None and getattr(args, "json", False):
        print_json(envelope)
    sys.stderr.write(line if line.endswith("\n") else line + "\n")


def run(
    prog: str,
    parser: argparse.ArgumentParser,
    handler: Callable[[argparse.Namespace], int],
    argv: list[str] | None,
) -> int:
    """Parse, run, and turn every failure into one line on stderr (plus the --json envelope)
    and an exit code."""
    args = parser.parse_args(argv)
    fields = getattr(parser, "json_failure", None)
    try:
        return handler(args)
    except PhaseError as exc:
        report(prog, args, failure_of(exc, fields), f"{prog}: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        envelope = failure(EXIT_INTERRUPTED, "interrupted", "interrupted", fields)
        report(prog, args, envelope, f"{prog}: interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # never a traceback for the user; -v shows it
        log.debug("internal error", exc_info=True)
        message = f"internal error: {type(exc).__name__}: {exc}"
        report(
            prog, args, failure(EXIT_INTERNAL, "internal", message, fields), f"{prog}: {message}"
        )
        return EXIT_INTERNAL
