"""``plasmd serve``: serve signed boot images over HTTP and advertise them (mDNS, DHT).

Top-level imports stay light: ``plasmd --help`` imports this module.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ._common import exit_codes_help

if TYPE_CHECKING:
    import threading

EPILOG = """layout:
  DIR/<channel>/<arch>/vmlinuz        required (the kernel)
  DIR/<channel>/<arch>/initramfs.img  optional; also rootfs.sqfs, dtb
  DIR/<channel>/<arch>/cmdline        optional kernel command line (text)
  DIR/<channel>/<arch>/version        optional version string (default: today's date)
  DIR/<channel>/<arch>/manifest.json  optional: a manifest signed elsewhere (mirror mode),
                                      served as is once the files match its hashes

config file (TOML; command-line flags win):
  [provider]
  channels = ["stable", "testing"]      # expected set: missing ones are logged
  architectures = ["arm64", "x86_64"]
  [provider.channels.stable]
  artifacts_dir = "/var/lib/plasm/stable"
  [dht]
  port = 4001
  bootstrap = ["HOST:PORT", "/ip4/A/tcp/P/p2p/12D3KooW..."]  # libp2p: multiaddrs
  (all keys: docs/provider.md)

HTTP: GET|HEAD /<channel>/<arch>/manifest.json and the files it names, /manifest.json (the
default combination), /health (200 or 503), /status (JSON: keys, offers, counters).
The state dir holds the identity key (its peer id names this provider), the hash cache and
the sequence counters. SIGTERM/SIGINT: stop advertising, finish transfers, exit 0.

""" + exit_codes_help(
    {0: "stopped by SIGTERM/SIGINT", 2: "bad config, missing directory, unreadable key, busy port"},
    codes=(0, 2, 70),
)


def under_systemd(env: Mapping[str, str] | None = None) -> bool:
    """systemd (the journal) stamps every line itself: it sets these for the services it runs."""
    env = os.environ if env is None else env
    return bool(env.get("JOURNAL_STREAM") or env.get("INVOCATION_ID"))


def timestamp(created: float) -> str:
    """``2026-01-31T12:00:00.123Z``: UTC, milliseconds, sortable."""
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{whole}.{int(created % 1 * 1000):03d}Z"


class DaemonFormatter(logging.Formatter):
    """The daemon's log lines: ``LEVEL message`` (the lines the docs show), prefixed with a UTC
    timestamp unless systemd's journal adds its own; or one JSON object per line (``time``,
    ``level``, ``logger``, ``message`` and, for the access log, ``client``, ``method``,
    ``path``, ``status``, ``bytes``, ``duration_s``)."""

    def __init__(self, json_lines: bool, timestamps: bool, verbose: int) -> None:
        super().__init__()
        self.json_lines = json_lines
        self.timestamps = timestamps
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if self.json_lines:
            document = {
                "time": timestamp(record.created),
                "level": record.levelname,
                "logger": record.name,
                "message": message,
                **getattr(record, "fields", {}),
            }
            if record.exc_info:
                document["exception"] = self.formatException(record.exc_info)
            return json.dumps(document)
        text = f"{record.levelname} {message}"
        if self.verbose > 0:
            text += f" [{record.name}]"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return f"{timestamp(record.created)} {text}" if self.timestamps else text


def setup_daemon_logging(log_format: str, verbose: int) -> None:
    """Give the handlers set up by the command line the daemon's format."""
    formatter = DaemonFormatter(log_format == "json", not under_systemd(), verbose)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..provider.config import (
        DEFAULT_EVICT_BELOW_RATE,
        DEFAULT_HEADER_TIMEOUT,
        DEFAULT_MIN_SEND_RATE,
        DEFAULT_PORT,
        DEFAULT_SEND_GRACE,
        DEFAULT_SETTLE_TIME,
        NUMBERS,
    )

    def limits(key: str) -> str:
        return NUMBERS[key].limits()

    # Numeric flags stay text here: config.resolve checks them with the same rules as the
    # config file (finite, in range) and says what is wrong in one line (exit 2).
    add = parser.add_argument
    add("--artifacts", metavar="DIR", help="directory holding <channel>/<arch>/ (or in --config)")
    add(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="log lines as 'LEVEL message' (after a UTC timestamp unless run by systemd, "
        "whose journal stamps them) or one JSON object per line (default text)",
    )
    add("--port", help=f"HTTP port, 0 picks a free one (default {DEFAULT_PORT})")
    add(
        "--bind",
        metavar="ADDR",
        help="listen address (default: every address, IPv4 and IPv6; 0.0.0.0: IPv4 only)",
    )
    add(
        "--config",
        metavar="FILE",
        help="TOML configuration ([provider], [dht]; see below; default "
        "/etc/plasmd/plasmd.toml, or $PLASMD_CONFIG, when it exists)",
    )
    add(
        "--state-dir",
        metavar="DIR",
        help="identity key, hash cache, sequences "
        "(default /var/lib/plasmd for root, else $XDG_STATE_HOME/plasmd)",
    )
    add("--key", metavar="FILE", help="manifest signing key (default: the identity key)")
    add("--name", help="provider name in /status and adverts (default: host name)")
    add(
        "--advertise-host",
        metavar="HOST",
        help="host put in advertised URLs (default: the primary IPv4 address, else the first "
        "global or unique-local IPv6 address)",
    )
    add("--default-channel", metavar="CHANNEL", help="channel of /manifest.json (default stable)")
    add("--default-arch", metavar="ARCH", help="arch of /manifest.json (default: this host's)")
    add("--no-mdns", action="store_true", default=None, help="do not advertise on mDNS")
    add(
        "--mdns-interface",
        action="append",
        metavar="NAME|ADDR",
        help="announce on this interface or IPv4 address only (repeatable; default: every "
        "IPv4 interface with a non-loopback address)",
    )
    add("--no-dht", action="store_true", default=None, help="do not advertise on the DHT")
    add("--dht-port", metavar="N", help="UDP port of the DHT node")
    add(
        "--bootstrap",
        action="append",
        metavar="HOST:PORT|MULTIADDR",
        help="DHT bootstrap node (repeatable): HOST:PORT for our DHT, or a libp2p multiaddr "
        "/ip4/A/tcp/P/p2p/12D3KooW... to also publish on libp2p Kademlia (ADD_PROVIDER with "
        "the HTTP address, republished every 22 h)",
    )
    add(
        "--scan-interval",
        metavar="SECONDS",
        help=f"re-scan period, {limits('scan_interval')} (default 3)",
    )
    add(
        "--settle-time",
        metavar="SECONDS",
        help="a file is signed only once unchanged this long (still being written otherwise), "
        f"{limits('settle_time')} (default {DEFAULT_SETTLE_TIME:g}; 0: at once)",
    )
    add(
        "--idle-timeout",
        metavar="SECONDS",
        help=f"cut connections silent this long, {limits('idle_timeout')} (default 30)",
    )
    add(
        "--header-timeout",
        metavar="SECONDS",
        help="time a request line and its headers may take in total, "
        f"{limits('header_timeout')} (default {DEFAULT_HEADER_TIMEOUT:g})",
    )
    add(
        "--min-send-rate",
        metavar="BYTES/S",
        help="cut a client taking responses slower than this on average over --send-grace, "
        f"{limits('min_send_rate')} (default {DEFAULT_MIN_SEND_RATE:g})",
    )
    add(
        "--send-grace",
        metavar="SECONDS",
        help=f"window of that average, {limits('send_grace')} (default {DEFAULT_SEND_GRACE:g})",
    )
    add(
        "--evict-below-rate",
        metavar="BYTES/S",
        help="at the connection cap, the slowest transfer below this makes room for a newcomer, "
        f"{limits('evict_below_rate')} (default {DEFAULT_EVICT_BELOW_RATE:g})",
    )


def run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from ..errors import KeyFormatError, UsageError
    from ..keys import load_signing_key
    from ..provider.config import config_to_read, load_config_file, resolve
    from ..provider.server import Provider, build_advertisers
    from ..provider.statedir import StateDir

    setup_daemon_logging(args.log_format, getattr(args, "verbose", 0))
    config_file = config_to_read(args.config)
    file_settings = load_config_file(config_file) if config_file else None
    config = resolve(vars(args), file_settings)
    state = StateDir(config.state_dir)
    state.lock()
    identity = state.identity()
    try:
        signing_key = load_signing_key(config.key) if config.key else identity
    except KeyFormatError as exc:
        raise UsageError(str(exc)) from exc
    provider = Provider(config, state=state, identity=identity, signing_key=signing_key)
    provider.bind()
    stop = threading.Event()
    stop_on_signals(stop, (signal.SIGTERM, signal.SIGINT))
    provider.advertisers = build_advertisers(config, identity)
    if config.dht_settings.libp2p_bootstrap:  # multiaddrs among the bootstrap words
        from ..provider.advertise_libp2p import Libp2pAdvertiser, parse_bootstrap

        contacts = parse_bootstrap(config.dht_settings.libp2p_bootstrap)
        provider.advertisers.append(Libp2pAdvertiser(identity, contacts))
    return provider.run(stop)


def stop_on_signals(stop: threading.Event, signums: tuple[int, ...]) -> None:
    """Set ``stop`` when one of ``signums`` arrives, from a thread of its own.

    A handler that set it itself could hang the daemon for good: Python runs handlers in the main
    thread between two bytecodes, and if that thread was inside ``stop.wait()`` holding the
    event's lock, ``stop.set()`` waits for that same lock (a fresh-clone CI run saw ``plasmd
    serve`` ignore a SIGTERM that way). Here the handlers do nothing; the interpreter's C handler
    writes each signal's number to a pipe (``signal.set_wakeup_fd``), and a thread reading it
    sets the event."""
    import signal
    import threading

    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    for signum in signums:
        signal.signal(signum, _wake_only)

    def watch() -> None:
        while True:
            data = os.read(read_fd, 64)
            if not data:
                return
            if any(byte in signums for byte in data):
                stop.set()

    threading.Thread(target=watch, name="signals", daemon=True).start()


def _wake_only(signum: int, frame: object) -> None:
    """Nothing to do in the main thread: stop_on_signals's thread hears the signal."""
