"""``plasmd serve`` settings: the seed's TOML file, then command-line flags, which win.

Pure apart from reading the TOML file: ``resolve`` takes parsed values and returns a
``ServeConfig``; every problem is a UsageError (one line, exit 2).

File format (every key optional; relative paths are relative to the file's directory)::

    [provider]
    artifacts_dir = "/srv/plasm"          # holds <channel>/<arch>/ (like --artifacts)
    channels = ["stable", "testing"]       # the *expected* set: missing ones are warned about
    architectures = ["arm64", "x86_64"]
    port = 8080
    bind = "0.0.0.0"                       # IPv4 only; default "": every address, both families
    name = "lab-provider"
    advertise_host = "192.0.2.10"
    state_dir = "/var/lib/plasmd"
    key = "/etc/plasmd/release.key"
    default_channel = "stable"
    default_arch = "x86_64"
    mdns = true
    dht = true
    scan_interval = 3.0                    # seconds between re-scans of the artifacts
    settle_time = 3.0                      # a file must stay unchanged this long to be signed
    idle_timeout = 30.0                    # seconds a connection may stay silent
    header_timeout = 10.0                  # seconds for a request line + headers, in total
    min_send_rate = 4096                   # bytes/s a client must take responses at, on average
    send_grace = 30.0                      # seconds that average is taken over
    evict_below_rate = 16384               # bytes/s: at the cap, slower transfers make room
    manifest_validity_days = 7.0           # re-signed when half of it has passed
    [provider.channels.stable]
    artifacts_dir = "/var/lib/plasm/stable"   # holds <arch>/ for this channel
    [dht]
    port = 4001
    bootstrap = ["198.51.100.7:4001"]
    ttl = 3600
    republish_interval = 1800

Every number is checked against ``NUMBERS`` / ``DHT_NUMBERS`` (finite, in range, the right
type), whether it comes from the file or from a flag.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..dht.records import MAX_TTL
from ..errors import UsageError
from ..hostport import parse_host_port
from ..names import check_arch, check_channel

DEFAULT_CONFIG = Path("/etc/plasmd/plasmd.toml")
CONFIG_ENV = "PLASMD_CONFIG"  # another default path (tests, a second instance)
DEFAULT_PORT = 8080
# No --bind (or an empty one): every address of both families, one dual-stack socket on ``::``
# (IPv4 only where the system has no IPv6; see server.listen). Kept apart from an explicit ``::``
# because the default leaves the DHT node and the advertised host as they were (IPv4).
EVERY_ADDRESS = ""
DEFAULT_SCAN_INTERVAL = 3.0
DEFAULT_SETTLE_TIME = 3.0
DEFAULT_IDLE_TIMEOUT = 30.0
DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_MIN_SEND_RATE = 4096.0
DEFAULT_SEND_GRACE = 30.0
DEFAULT_EVICT_BELOW_RATE = 16384.0
DEFAULT_VALIDITY_DAYS = 7.0


class ConfigError(UsageError):
    """A configuration file that cannot be used; ``table``/``key`` say where (to find the
    line), ``line`` once known."""

    def __init__(
        self,
        message: str,
        table: str | None = None,
        key: str | None = None,
        line: int | None = None,
    ) -> None:
        super().__init__(message)
        self.table = table
        self.key = key
        self.line = line


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    """Where ``plasmd serve`` looks for its configuration when no --config is given:
    $PLASMD_CONFIG, else /etc/plasmd/plasmd.toml."""
    env = os.environ if env is None else env
    return Path(env.get(CONFIG_ENV) or DEFAULT_CONFIG)


def config_to_read(given: str | None, env: Mapping[str, str] | None = None) -> Path | None:
    """``--config FILE`` (which must exist), else the default path when something is there."""
    if given:
        return Path(given)
    path = default_config_path(env)
    return path if os.path.lexists(path) else None


@dataclass(frozen=True)
class NumberRule:
    """The accepted values of a numeric setting: finite, ``low``..``high`` inclusive (or
    above ``low`` when ``low_open``), and an integer when ``integer``."""

    low: float
    high: float
    integer: bool = False
    unit: str = "seconds"
    low_open: bool = False

    def describe(self) -> str:
        kind = "an integer" if self.integer else f"a number of {self.unit}"
        if self.low_open:
            return f"{kind} above {show(self.low)} and at most {show(self.high)}"
        return f"{kind} from {show(self.low)} to {show(self.high)}"

    def limits(self) -> str:
        """``low..high``, for help texts."""
        return f"{show(self.low)}..{show(self.high)}"

    def allows(self, number: float) -> bool:
        # Comparisons, not math.isfinite, for ints: a huge int would overflow a float.
        if isinstance(number, float) and not math.isfinite(number):
            return False
        above = self.low < number if self.low_open else self.low <= number
        return above and number <= self.high


def show(number: float) -> str:
    """A limit as people write it: 1000000000, not 1e+09; 0.1 stays 0.1."""
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


RATE_RULE = NumberRule(1, 1e9, unit="bytes per second")
PORT_RULE = NumberRule(0, 65535, integer=True)  # 0: the system picks a free port
VALIDITY_RULE = NumberRule(0, 3650, unit="days", low_open=True)
NUMBERS = {  # [provider] keys
    "port": PORT_RULE,
    "scan_interval": NumberRule(0.1, 86400),  # below it, re-scanning would eat the CPU
    "settle_time": NumberRule(0, 3600),  # 0: files are taken as soon as they are seen
    "idle_timeout": NumberRule(0.1, 86400),
    "header_timeout": NumberRule(0.1, 3600),
    "min_send_rate": RATE_RULE,
    # Below a second the average would measure TCP's jitter, not the client.
    "send_grace": NumberRule(1, 3600),
    "evict_below_rate": RATE_RULE,
    "manifest_validity_days": VALIDITY_RULE,
}
DHT_NUMBERS = {  # [dht] keys
    "port": PORT_RULE,
    "ttl": NumberRule(2, MAX_TTL),  # a record's validity, at most what DHT nodes accept
    "republish_interval": NumberRule(1, MAX_TTL),  # and below ttl
}
FLAGS = {  # numeric flag (argparse dest) -> (the flag, its rule)
    "port": ("--port", NUMBERS["port"]),
    "scan_interval": ("--scan-interval", NUMBERS["scan_interval"]),
    "settle_time": ("--settle-time", NUMBERS["settle_time"]),
    "idle_timeout": ("--idle-timeout", NUMBERS["idle_timeout"]),
    "header_timeout": ("--header-timeout", NUMBERS["header_timeout"]),
    "min_send_rate": ("--min-send-rate", NUMBERS["min_send_rate"]),
    "send_grace": ("--send-grace", NUMBERS["send_grace"]),
    "evict_below_rate": ("--evict-below-rate", NUMBERS["evict_below_rate"]),
    "dht_port": ("--dht-port", DHT_NUMBERS["port"]),
}


_HOST_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?\Z")


def check_host(text: str, what: str) -> str:
    """A host for ``--bind``/``--advertise-host``: an IPv4 or IPv6 literal (brackets allowed
    and dropped: ``[fd00::5]`` -> ``fd00::5``) or a DNS name; UsageError otherwise.

    ``--advertise-host`` refuses a link-local IPv6 address with a zone (``fe80::1%eth0``): the
    zone names an interface of the provider, which means nothing on a client (clients add
    their own zone to a link-local address they hear about by mDNS, see docs/ipv6.md).
    """
    host = text.strip()
    if not host and what == "--bind":
        return EVERY_ADDRESS  # as if not given: the default
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host or host.replace(".", "").isdigit():
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise UsageError(f"{what} {text!r} is not an IP address or host name") from None
        if what == "--advertise-host" and "%" in host:
            raise UsageError(
                f"{what} {text!r}: a zone (%...) names one of this machine's interfaces, "
                "which means nothing to a client; give a global or unique-local address"
            )
        return str(address) if "%" not in host else host
    if not host or not _HOST_NAME.match(host):
        raise UsageError(f"{what} {text!r} is not an IP address or host name")
    return host


def check_number(value: object, rule: NumberRule, name: str) -> Any:
    """``value`` (a number, or a flag's text) if ``rule`` allows it, else a UsageError
    naming the setting: ``name`` is the flag or ``config FILE: [table] key``."""
    number: Any = value
    if isinstance(value, str):
        try:
            number = int(value, 10) if rule.integer else float(value)
        except ValueError:
            raise UsageError(f"{name} {value!r} is not {rule.describe()}") from None
    elif isinstance(value, bool) or not isinstance(value, int if rule.integer else int | float):
        raise UsageError(f"{name} has the wrong type: expected {rule.describe()}")
    if not rule.allows(number):
        shown = f"{name} {value}" if name.startswith("-") else f"{name} = {value}"
        raise UsageError(f"{shown} is out of range: expected {rule.describe()}")
    return number if rule.integer else float(number)


PROVIDER_KEYS = {
    "artifacts_dir": str,
    "channels": list,
    "architectures": list,
    "port": int,
    "bind": str,
    "name": str,
    "advertise_host": str,
    "state_dir": str,
    "key": str,
    "default_channel": str,
    "default_arch": str,
    "mdns": bool,
    "mdns_interfaces": list,
    "dht": bool,
    "scan_interval": (int, float),
    "settle_time": (int, float),
    "idle_timeout": (int, float),
    "header_timeout": (int, float),
    "min_send_rate": (int, float),
    "send_grace": (int, float),
    "evict_below_rate": (int, float),
    "manifest_validity_days": (int, float),
}
DHT_KEYS = {
    "port": int,
    "bootstrap": list,
    "ttl": (int, float),
    "republish_interval": (int, float),
}


@dataclass(frozen=True)
class DhtSettings:
    port: int | None = None
    bootstrap: tuple[tuple[str, int], ...] = ()
    ttl: float | None = None
    republish_interval: float | None = None
    # libp2p Kademlia: the multiaddrs among the bootstrap words (publish there too)
    libp2p_bootstrap: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServeConfig:
    artifacts_root: Path | None
    channel_dirs: Mapping[str, Path]
    expected_channels: tuple[str, ...]
    expected_arches: tuple[str, ...]
    port: int
    bind: str  # EVERY_ADDRESS when none was given
    name: str
    advertise_host: str | None
    state_dir: Path
    key: Path | None
    default_channel: str | None
    default_arch: str | None
    mdns: bool
    dht: bool
    mdns_interfaces: tuple[str, ...] = ()
    dht_settings: DhtSettings = field(default_factory=DhtSettings)
    scan_interval: float = DEFAULT_SCAN_INTERVAL
    settle_time: float = DEFAULT_SETTLE_TIME
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    min_send_rate: float = DEFAULT_MIN_SEND_RATE
    send_grace: float = DEFAULT_SEND_GRACE
    evict_below_rate: float = DEFAULT_EVICT_BELOW_RATE
    manifest_validity_days: float = DEFAULT_VALIDITY_DAYS


def default_state_dir(env: Mapping[str, str] | None = None, uid: int | None = None) -> Path:
    """$STATE_DIRECTORY (systemd's StateDirectory=), else /var/lib/plasmd for root, else
    $XDG_STATE_HOME/plasmd (~/.local/state/plasmd). UsageError when none can be known."""
    env = os.environ if env is None else env
    uid = os.geteuid() if uid is None else uid
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    if uid == 0:
        return Path("/var/lib/plasmd")
    try:
        base = env.get("XDG_STATE_HOME") or str(
            Path(env.get("HOME", "~")).expanduser() / ".local/state"
        )
    except RuntimeError:  # no $HOME and no home in the user database
        raise UsageError(
            "no state directory: give --state-dir (there is no home directory)"
        ) from None
    return Path(base) / "plasmd"


def _typed(
    table: Mapping[str, Any],
    schema: Mapping[str, Any],
    where: str,
    origin: str,
    numbers: Mapping[str, NumberRule] | None = None,
) -> dict[str, Any]:
    result = {}
    for key, value in table.items():
        if key not in schema:
            raise ConfigError(f"{origin}: unknown key {key!r} in [{where}]", where, key)
        kind = schema[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise ConfigError(f"{origin}: [{where}] {key} has the wrong type", where, key)
        if numbers and key in numbers:
            try:
                value = check_number(value, numbers[key], f"{origin}: [{where}] {key}")
            except UsageError as exc:
                raise ConfigError(str(exc), where, key) from exc
        result[key] = value
    return result


def _string_list(value: list[Any], what: str, origin: str, table: str = "provider") -> list[str]:
    if not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{origin}: {what} must be a list of strings", table, what.split()[-1])
    return list(value)


def _checked(origin: str, table: str, key: str | None, check: Any, value: Any) -> Any:
    """``check(value)``, its UsageError told as being about ``[table] key`` of ``origin``."""
    try:
        return check(value)
    except UsageError as exc:
        raise ConfigError(f"{origin}: {exc}", table, key) from exc


def parse_bootstrap(text: str) -> tuple[str, int]:
    return parse_host_port(text, "[dht] bootstrap address")


def parse_libp2p_bootstrap(text: str) -> str:
    """A libp2p multiaddr with a TCP address (``/ip4/A/tcp/P/p2p/12D3KooW...``), as text."""
    from ..libp2p.multiaddr import Multiaddr

    ma = Multiaddr.from_text(text.strip())
    if ma.tcp_target() is None:
        raise UsageError(f"libp2p bootstrap {text[:80]}: not a TCP multiaddr")
    return str(ma)


def _is_multiaddr(text: str) -> bool:
    return text.strip().startswith("/")


def locate(text: str, table: str | None, key: str | None) -> int | None:
    """The line (from 1) where ``[table] key`` is set, or where ``[table]`` starts."""
    current = ""
    header_line = None
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER_RE.match(line)
        if header:
            current = header.group(1).replace(" ", "").replace('"', "")
            if current == table and header_line is None:
                header_line = number
                if key is None:
                    return number
            continue
        if key is not None and current == table and re.match(rf"\s*{re.escape(key)}\s*[=.]", line):
            return number
    return header_line


def line_of_toml_error(message: str) -> int | None:
    match = re.search(r"at line (\d+)", message)
    return int(match.group(1)) if match else None


_TABLE_RE = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\s-]+?)\s*\]\s*(#.*)?\Z")
_HEADER_RE = re.compile(r'^\s*\[\[?\s*([A-Za-z0-9_."\s-]+?)\s*\]\]?\s*(#.*)?$')
_CHANNELS_KEY_RE = re.compile(r"^(\s*)channels(\s*=)")
CHANNEL_LIST_KEY = "channel_list"


def seed_compatible(text: str) -> str:
    """The seed's file as strict TOML.

    The seed writes ``channels = [...]`` and ``[provider.channels.stable]`` in one file, which
    TOML forbids (a key cannot be an array and a table). The list is read under another name.
    """
    lines = text.splitlines(keepends=True)
    table = ""
    for index, line in enumerate(lines):
        header = _TABLE_RE.match(line)
        if header:
            table = header.group(1).replace(" ", "")
        elif table == "provider":
            lines[index] = _CHANNELS_KEY_RE.sub(rf"\1{CHANNEL_LIST_KEY}\2", line, count=1)
    return "".join(lines)


def _path(base_dir: Path, text: str, where: tuple[str, str], origin: str) -> str:
    """A path setting (``where`` = table, key), ``~`` expanded, relative to the file's
    directory."""
    try:
        return str(base_dir / Path(text).expanduser())
    except RuntimeError as exc:  # ~user of an unknown user
        raise ConfigError(f"{origin}: [{where[0]}] {where[1]}: {exc}", *where) from exc


def parse_config_text(text: str, base_dir: Path, origin: str = "config") -> dict[str, Any]:
    """Validated settings from the TOML text; keys as in ``PROVIDER_KEYS`` plus ``dht``.

    ``origin`` starts every error message (``config FILE``)."""
    try:
        raw = tomllib.loads(seed_compatible(text))
    except (ValueError, RecursionError) as exc:  # also an int past 4300 digits, deep nesting
        raise ConfigError(f"{origin}: {exc}", line=line_of_toml_error(str(exc))) from exc
    unknown = set(raw) - {"provider", "dht"}
    if unknown:
        name = sorted(unknown)[0]
        raise ConfigError(f"{origin}: unknown table [{name}]", name)
    for name in ("provider", "dht"):
        if not isinstance(raw.get(name, {}), dict):
            raise ConfigError(f"{origin}: [provider] and [dht] must be tables", name)
    provider = dict(raw.get("provider", {}))
    # [provider.channels.X] tables; the channels = [...] list was renamed by seed_compatible.
    channel_tables = provider.pop("channels", {})
    if not isinstance(channel_tables, dict):
        raise ConfigError(
            f"{origin}: [provider] channels must be a list of channel names", "provider", "channels"
        )
    if CHANNEL_LIST_KEY in provider:
        provider["channels"] = provider.pop(CHANNEL_LIST_KEY)
    settings = _typed(provider, PROVIDER_KEYS, "provider", origin, NUMBERS)
    for key in ("artifacts_dir", "state_dir", "key"):
        if key in settings:
            settings[key] = _path(base_dir, settings[key], ("provider", key), origin)
    if "channels" in settings:
        settings["channels"] = [
            _checked(origin, "provider", "channels", check_channel, c)
            for c in _string_list(settings["channels"], "channels", origin)
        ]
    if "architectures" in settings:
        arches = _string_list(settings["architectures"], "architectures", origin)
        settings["architectures"] = [
            _checked(origin, "provider", "architectures", check_arch, a) for a in arches
        ]
    channel_dirs = {}
    for channel, table in channel_tables.items():
        where = f"provider.channels.{channel}"
        if not isinstance(table, dict):
            raise ConfigError(f"{origin}: [{where}] must be a table", "provider", "channels")
        _checked(origin, where, None, check_channel, channel)
        entry = _typed(table, {"artifacts_dir": str}, where, origin)
        if "artifacts_dir" in entry:
            place = (where, "artifacts_dir")
            channel_dirs[channel] = _path(base_dir, entry["artifacts_dir"], place, origin)
    settings["channels_config"] = channel_dirs
    dht = _typed(raw.get("dht", {}), DHT_KEYS, "dht", origin, DHT_NUMBERS)
    republish = dht.get("republish_interval")
    if republish is not None and republish >= dht.get("ttl", math.inf):
        raise ConfigError(
            f"{origin}: [dht] republish_interval must be below ttl", "dht", "republish_interval"
        )
    if "bootstrap" in dht:
        words = _string_list(dht["bootstrap"], "[dht] bootstrap", origin, "dht")
        dht["bootstrap"] = [
            _checked(origin, "dht", "bootstrap", parse_bootstrap, i)
            for i in words
            if not _is_multiaddr(i)
        ]
        dht["libp2p_bootstrap"] = [
            _checked(origin, "dht", "bootstrap", parse_libp2p_bootstrap, i)
            for i in words
            if _is_multiaddr(i)
        ]
    settings["dht"] = dht | {"enabled": settings.pop("dht", None)}
    return settings


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise UsageError(f"cannot read config {file}: {reason}") from exc
    try:
        return parse_config_text(text, file.resolve().parent, f"config {file}")
    except ConfigError as exc:
        line = exc.line or locate(text, exc.table, exc.key)
        if line is None or exc.line is not None:  # tomllib's message already says where
            raise ConfigError(str(exc), exc.table, exc.key, line) from exc
        raise ConfigError(f"{exc} (line {line})", exc.table, exc.key, line) from exc


def _first(*values: Any) -> Any:
    """The first value that is not None (flag, then file, then default)."""
    return next((v for v in values if v is not None), None)


def _number(flags: Mapping[str, Any], file: Mapping[str, Any], key: str, default: Any) -> Any:
    """A numeric setting: the flag (checked here, named by its flag), else the file's value
    (checked when the file was read), else ``default``."""
    flag = flags.get(key)
    if flag is not None:
        name, rule = FLAGS[key]
        return check_number(flag, rule, name)
    return _first(file.get(key), default)


def resolve(flags: Mapping[str, Any], file: Mapping[str, Any] | None = None) -> ServeConfig:
    """Merge command-line ``flags`` (None = not given) over the config ``file`` settings."""
    file = file or {}
    dht_file = file.get("dht", {})
    root_text = _first(flags.get("artifacts"), file.get("artifacts_dir"))
    channel_dirs = {c: Path(d) for c, d in file.get("channels_config", {}).items()}
    if root_text is None and not channel_dirs:
        raise UsageError(
            "no artifacts directory: give --artifacts DIR, or artifacts_dir in --config FILE "
            f"or in {default_config_path()}"
        )
    root = Path(root_text) if root_text is not None else None
    for path in [root, *channel_dirs.values()]:
        if path is not None and not path.is_dir():
            raise UsageError(f"artifacts directory {path} does not exist")
    port = _number(flags, file, "port", DEFAULT_PORT)
    dht_port = _number(flags, {"dht_port": dht_file.get("port")}, "dht_port", None)
    # Each kind of bootstrap word (HOST:PORT, libp2p multiaddr): the flags' if they give any,
    # else the file's.
    flag_words = flags.get("bootstrap") or []
    flag_bootstrap = [b for b in flag_words if not _is_multiaddr(b)]
    flag_libp2p = [b for b in flag_words if _is_multiaddr(b)]
    bootstrap = (
        [parse_host_port(b, "--bootstrap address") for b in flag_bootstrap]
        if flag_bootstrap
        else dht_file.get("bootstrap", [])
    )
    libp2p_bootstrap = (
        [parse_libp2p_bootstrap(b) for b in flag_libp2p]
        if flag_libp2p
        else dht_file.get("libp2p_bootstrap", [])
    )
    default_channel = _first(flags.get("default_channel"), file.get("default_channel"))
    default_arch = _first(flags.get("default_arch"), file.get("default_arch"))
    return ServeConfig(
        artifacts_root=root,
        channel_dirs=channel_dirs,
        expected_channels=tuple(file.get("channels", ())),
        expected_arches=tuple(file.get("architectures", ())),
        port=port,
        bind=check_host(_first(flags.get("bind"), file.get("bind"), EVERY_ADDRESS), "--bind"),
        name=_first(flags.get("name"), file.get("name"), socket.gethostname() or "plasmd"),
        advertise_host=(
            check_host(advertise, "--advertise-host")
            if (advertise := _first(flags.get("advertise_host"), file.get("advertise_host")))
            else None
        ),
        # The default only when neither says: it needs a home (a DynamicUser= has none).
        state_dir=Path(
            _first(flags.get("state_dir"), file.get("state_dir")) or default_state_dir()
        ),
        key=Path(k) if (k := _first(flags.get("key"), file.get("key"))) is not None else None,
        default_channel=check_channel(default_channel) if default_channel else None,
        default_arch=check_arch(default_arch) if default_arch else None,
        mdns=not flags.get("no_mdns") and file.get("mdns", True),
        mdns_interfaces=tuple(flags.get("mdns_interface") or file.get("mdns_interfaces", ())),
        dht=not flags.get("no_dht") and dht_file.get("enabled") is not False,
        dht_settings=DhtSettings(
            port=dht_port,
            bootstrap=tuple(bootstrap),
            ttl=dht_file.get("ttl"),
            republish_interval=dht_file.get("republish_interval"),
            libp2p_bootstrap=tuple(libp2p_bootstrap),
        ),
        scan_interval=_number(flags, file, "scan_interval", DEFAULT_SCAN_INTERVAL),
        settle_time=_number(flags, file, "settle_time", DEFAULT_SETTLE_TIME),
        idle_timeout=_number(flags, file, "idle_timeout", DEFAULT_IDLE_TIMEOUT),
        header_timeout=_number(flags, file, "header_timeout", DEFAULT_HEADER_TIMEOUT),
        min_send_rate=_number(flags, file, "min_send_rate", DEFAULT_MIN_SEND_RATE),
        send_grace=_number(flags, file, "send_grace", DEFAULT_SEND_GRACE),
        evict_below_rate=_number(flags, file, "evict_below_rate", DEFAULT_EVICT_BELOW_RATE),
        manifest_validity_days=_first(file.get("manifest_validity_days"), DEFAULT_VALIDITY_DAYS),
    )
