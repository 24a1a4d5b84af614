"""``plasmd serve`` settings: the seed's TOML file, then command-line flags, which win.

Pure apart from reading the TOML file: ``resolve`` takes parsed values and returns a
``ServeConfig``; every problem is a UsageError (one line, exit 2).

File format (every key optional; relative paths are relative to the file's directory)::

    [provider]
    artifacts_dir = "/srv/plasm"          # holds <channel>/<arch>/ (like --artifacts)
    channels = ["stable", "testing"]       # the *expected* set: missing ones are warned about
    architectures = ["arm64", "x86_64"]
    port = 8080
    bind = "0.0.0.0"
    name = "lab-provider"
    advertise_host = "192.0.2.10"
    state_dir = "/var/lib/plasmd"
    key = "/etc/plasmd/release.key"
    default_channel = "stable"
    default_arch = "x86_64"
    mdns = true
    dht = true
    scan_interval = 3.0                    # seconds between re-scans of the artifacts
    idle_timeout = 30.0                    # seconds a connection may stay silent
    manifest_validity_days = 7.0           # re-signed when half of it has passed
    [provider.channels.stable]
    artifacts_dir = "/var/lib/plasm/stable"   # holds <arch>/ for this channel
    [dht]
    port = 4001
    bootstrap = ["198.51.100.7:4001"]
    ttl = 3600
    republish_interval = 1800
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..hostport import parse_host_port
from ..manifest import check_arch, check_channel

DEFAULT_PORT = 8080
DEFAULT_BIND = "0.0.0.0"
DEFAULT_SCAN_INTERVAL = 3.0
DEFAULT_IDLE_TIMEOUT = 30.0
DEFAULT_VALIDITY_DAYS = 7.0

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
    "idle_timeout": (int, float),
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


@dataclass(frozen=True)
class ServeConfig:
    artifacts_root: Path | None
    channel_dirs: Mapping[str, Path]
    expected_channels: tuple[str, ...]
    expected_arches: tuple[str, ...]
    port: int
    bind: str
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
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    manifest_validity_days: float = DEFAULT_VALIDITY_DAYS


def default_state_dir(env: Mapping[str, str] | None = None, uid: int | None = None) -> Path:
    """/var/lib/plasmd for root, else $XDG_STATE_HOME/plasmd (~/.local/state/plasmd)."""
    env = os.environ if env is None else env
    uid = os.geteuid() if uid is None else uid
    if uid == 0:
        return Path("/var/lib/plasmd")
    base = env.get("XDG_STATE_HOME") or str(
        Path(env.get("HOME", "~")).expanduser() / ".local/state"
    )
    return Path(base) / "plasmd"


def _typed(table: Mapping[str, Any], schema: Mapping[str, Any], where: str) -> dict[str, Any]:
    result = {}
    for key, value in table.items():
        if key not in schema:
            raise UsageError(f"config: unknown key {key!r} in [{where}]")
        kind = schema[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise UsageError(f"config: [{where}] {key} has the wrong type")
        result[key] = value
    return result


def _string_list(value: list[Any], what: str) -> list[str]:
    if not all(isinstance(item, str) for item in value):
        raise UsageError(f"config: {what} must be a list of strings")
    return list(value)


_TABLE_RE = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\s-]+?)\s*\]\s*(#.*)?\Z")
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


def parse_config_text(text: str, base_dir: Path) -> dict[str, Any]:
    """Validated settings from the TOML text; keys as in ``PROVIDER_KEYS`` plus ``dht``."""
    try:
        raw = tomllib.loads(seed_compatible(text))
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config: {exc}") from exc
    unknown = set(raw) - {"provider", "dht"}
    if unknown:
        raise UsageError(f"config: unknown table [{sorted(unknown)[0]}]")
    provider = dict(raw.get("provider", {}))
    if not isinstance(raw.get("provider", {}), dict) or not isinstance(raw.get("dht", {}), dict):
        raise UsageError("config: [provider] and [dht] must be tables")
    # [provider.channels.X] tables; the channels = [...] list was renamed by seed_compatible.
    channel_tables = provider.pop("channels", {})
    if not isinstance(channel_tables, dict):
        raise UsageError("config: [provider] channels must be a list of channel names")
    if CHANNEL_LIST_KEY in provider:
        provider["channels"] = provider.pop(CHANNEL_LIST_KEY)
    settings = _typed(provider, PROVIDER_KEYS, "provider")
    for key in ("artifacts_dir", "state_dir", "key"):
        if key in settings:
            settings[key] = str(base_dir / Path(settings[key]).expanduser())
    if "channels" in settings:
        settings["channels"] = [
            check_channel(c) for c in _string_list(settings["channels"], "channels")
        ]
    if "architectures" in settings:
        arches = _string_list(settings["architectures"], "architectures")
        settings["architectures"] = [check_arch(a) for a in arches]
    channel_dirs = {}
    for channel, table in channel_tables.items():
        check_channel(channel)
        entry = _typed(table, {"artifacts_dir": str}, f"provider.channels.{channel}")
        if "artifacts_dir" in entry:
            channel_dirs[channel] = str(base_dir / Path(entry["artifacts_dir"]).expanduser())
    settings["channels_config"] = channel_dirs
    dht = _typed(raw.get("dht", {}), DHT_KEYS, "dht")
    if "bootstrap" in dht:
        dht["bootstrap"] = [
            parse_host_port(item, "[dht] bootstrap address")
            for item in _string_list(dht["bootstrap"], "[dht] bootstrap")
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
    return parse_config_text(text, file.resolve().parent)


def _first(*values: Any) -> Any:
    """The first value that is not None (flag, then file, then default)."""
    return next((v for v in values if v is not None), None)


def _positive(value: float, what: str) -> float:
    if value <= 0:
        raise UsageError(f"{what} must be positive")
    return float(value)


def resolve(flags: Mapping[str, Any], file: Mapping[str, Any] | None = None) -> ServeConfig:
    """Merge command-line ``flags`` (None = not given) over the config ``file`` settings."""
    file = file or {}
    dht_file = file.get("dht", {})
    root_text = _first(flags.get("artifacts"), file.get("artifacts_dir"))
    channel_dirs = {c: Path(d) for c, d in file.get("channels_config", {}).items()}
    if root_text is None and not channel_dirs:
        raise UsageError(
            "no artifacts directory: give --artifacts DIR or artifacts_dir in --config"
        )
    root = Path(root_text) if root_text is not None else None
    for path in [root, *channel_dirs.values()]:
        if path is not None and not path.is_dir():
            raise UsageError(f"artifacts directory {path} does not exist")
    port = _first(flags.get("port"), file.get("port"), DEFAULT_PORT)
    if not 0 <= port < 65536:
        raise UsageError(f"invalid port {port}")
    dht_port = _first(flags.get("dht_port"), dht_file.get("port"))
    if dht_port is not None and not 0 <= dht_port < 65536:
        raise UsageError(f"invalid DHT port {dht_port}")
    flag_bootstrap = flags.get("bootstrap") or None
    bootstrap = (
        [parse_host_port(b, "--bootstrap address") for b in flag_bootstrap]
        if flag_bootstrap
        else dht_file.get("bootstrap", [])
    )
    default_channel = _first(flags.get("default_channel"), file.get("default_channel"))
    default_arch = _first(flags.get("default_arch"), file.get("default_arch"))
    return ServeConfig(
        artifacts_root=root,
        channel_dirs=channel_dirs,
        expected_channels=tuple(file.get("channels", ())),
        expected_arches=tuple(file.get("architectures", ())),
        port=port,
        bind=_first(flags.get("bind"), file.get("bind"), DEFAULT_BIND),
        name=_first(flags.get("name"), file.get("name"), socket.gethostname() or "plasmd"),
        advertise_host=_first(flags.get("advertise_host"), file.get("advertise_host")),
        state_dir=Path(_first(flags.get("state_dir"), file.get("state_dir"), default_state_dir())),
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
        ),
        scan_interval=_positive(
            _first(flags.get("scan_interval"), file.get("scan_interval"), DEFAULT_SCAN_INTERVAL),
            "scan_interval",
        ),
        idle_timeout=_positive(
            _first(flags.get("idle_timeout"), file.get("idle_timeout"), DEFAULT_IDLE_TIMEOUT),
            "idle_timeout",
        ),
        manifest_validity_days=_positive(
            _first(file.get("manifest_validity_days"), DEFAULT_VALIDITY_DAYS),
            "manifest_validity_days",
        ),
    )
