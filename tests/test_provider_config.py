"""plasmd serve configuration: the seed's TOML format, flag precedence, one-line errors."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from phase_client.errors import UsageError
from phase_client.provider.config import (
    EVERY_ADDRESS,
    default_state_dir,
    load_config_file,
    parse_config_text,
    parse_host_port,
    resolve,
)
from phase_client.provider.signer import generate
from tests.conftest import REPO, key_from_byte, run_tool
from tests.provider_helpers import make_tree, serve_args

SEED_CONFIG = """
[provider]
# Channels to advertise
channels = ["stable", "testing"]

# Architectures to advertise
architectures = ["arm64", "x86_64"]

# Channel-specific settings
[provider.channels.stable]
artifacts_dir = "{root}/stable"

[provider.channels.testing]
artifacts_dir = "{root}/testing"
"""


def seed_config(tmp_path: Path) -> Path:
    for channel in ("stable", "testing"):
        (tmp_path / "art" / channel).mkdir(parents=True)
    path = tmp_path / "plasmd.toml"
    path.write_text(SEED_CONFIG.format(root=tmp_path / "art"))
    return path


def test_seed_format(tmp_path: Path) -> None:
    settings = load_config_file(seed_config(tmp_path))
    config = resolve({}, settings)
    assert config.expected_channels == ("stable", "testing")
    assert config.expected_arches == ("arm64", "x86_64")
    assert config.channel_dirs == {
        "stable": tmp_path / "art" / "stable",
        "testing": tmp_path / "art" / "testing",
    }
    assert config.artifacts_root is None
    assert config.port == 8080
    assert config.bind == EVERY_ADDRESS  # no bind: every address, IPv4 and IPv6
    assert config.mdns and config.dht


def test_flags_win_over_the_file(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    text = """
[provider]
artifacts_dir = "a"
port = 9000
bind = "127.0.0.2"
name = "from-file"
state_dir = "state"
key = "release.key"
mdns = false
mdns_interfaces = ["eth0"]
default_channel = "testing"
scan_interval = 7
[dht]
port = 4001
bootstrap = ["127.0.0.1:4002", "[::1]:4003"]
ttl = 600
republish_interval = 300
"""
    settings = parse_config_text(text, tmp_path)
    from_file = resolve({}, settings)
    assert from_file.artifacts_root == tmp_path / "a"  # relative to the file's directory
    assert from_file.port == 9000
    assert from_file.bind == "127.0.0.2"
    assert from_file.name == "from-file"
    assert from_file.state_dir == tmp_path / "state"
    assert from_file.key == tmp_path / "release.key"
    assert not from_file.mdns and from_file.dht
    assert from_file.mdns_interfaces == ("eth0",)
    assert from_file.default_channel == "testing"
    assert from_file.scan_interval == 7
    assert from_file.dht_settings.port == 4001
    assert from_file.dht_settings.bootstrap == (("127.0.0.1", 4002), ("::1", 4003))
    assert from_file.dht_settings.ttl == 600
    assert from_file.dht_settings.republish_interval == 300

    flags = {
        "artifacts": str(tmp_path / "b"),
        "port": 0,
        "bind": "127.0.0.1",
        "name": "from-flag",
        "state_dir": str(tmp_path / "s2"),
        "key": str(tmp_path / "k2"),
        "no_dht": True,
        "dht_port": 5001,
        "bootstrap": ["127.0.0.1:5002"],
        "scan_interval": 0.5,
        "mdns_interface": ["10.0.0.1", "eth1"],
    }
    merged = resolve(flags, settings)
    assert merged.artifacts_root == tmp_path / "b"
    assert merged.port == 0
    assert merged.bind == "127.0.0.1"
    assert merged.name == "from-flag"
    assert merged.state_dir == tmp_path / "s2"
    assert merged.key == tmp_path / "k2"
    assert not merged.mdns and not merged.dht
    assert merged.dht_settings.port == 5001
    assert merged.dht_settings.bootstrap == (("127.0.0.1", 5002),)
    assert merged.dht_settings.ttl == 600  # not given as a flag: the file's value stays
    assert merged.scan_interval == 0.5
    assert merged.mdns_interfaces == ("10.0.0.1", "eth1")


def test_defaults_without_a_file(tmp_path: Path) -> None:
    config = resolve({"artifacts": str(tmp_path)})
    assert config.port == 8080
    assert config.name == socket.gethostname()
    assert config.key is None
    assert config.expected_channels == ()
    assert config.dht_settings.bootstrap == ()


def test_default_state_dir() -> None:
    assert default_state_dir({}, uid=0) == Path("/var/lib/plasmd")
    assert default_state_dir({"XDG_STATE_HOME": "/x"}, uid=1000) == Path("/x/plasmd")
    assert default_state_dir({"HOME": "/home/u"}, uid=1000) == Path("/home/u/.local/state/plasmd")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[provider\n", "config:"),
        ("[provider]\nport = 'x'\n", "port has the wrong type"),
        ("[provider]\nport = true\n", "port has the wrong type"),
        ("[provider]\ncolour = 1\n", "unknown key 'colour'"),
        ("[other]\n", "unknown table [other]"),
        ("[provider]\nchannels = [1]\n", "channels must be a list of strings"),
        ("[provider]\nchannels = ['Bad Name']\n", "invalid channel"),
        ("[provider]\narchitectures = ['x y']\n", "invalid arch"),
        ("[provider.channels.stable]\npath = 'x'\n", "unknown key 'path'"),
        ("[dht]\nbootstrap = ['nohost']\n", "invalid [dht] bootstrap address"),
        ("[dht]\nbootstrap = ['h:99999']\n", "invalid [dht] bootstrap address"),
        ("provider = 1\n", "[provider] and [dht] must be tables"),
        ("[[provider]]\n", "[provider] and [dht] must be tables"),
        ("[provider]\nchannels.stable = 1\n", "[provider.channels.stable] must be a table"),
        ("[provider]\nkey = '~nosuchuser-plasmd/k'\n", "[provider] key:"),
        ("[dht]\nport = " + "9" * 5000 + "\n", "config: Exceeds the limit"),
        ("x = " + "[" * 2000 + "]" * 2000 + "\n", "config:"),
    ],
)
def test_bad_config_text(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_config_text(text, tmp_path)


def test_resolve_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no artifacts directory"):
        resolve({})
    with pytest.raises(UsageError, match="does not exist"):
        resolve({"artifacts": str(tmp_path / "nope")})
    with pytest.raises(UsageError, match="--port 70000 is out of range"):
        resolve({"artifacts": str(tmp_path), "port": 70000})
    with pytest.raises(UsageError, match="invalid --bootstrap address"):
        resolve({"artifacts": str(tmp_path), "bootstrap": ["x"]})
    with pytest.raises(UsageError, match="--scan-interval 0 is out of range"):
        resolve({"artifacts": str(tmp_path), "scan_interval": 0})


def test_parse_host_port() -> None:
    assert parse_host_port("10.0.0.1:4001") == ("10.0.0.1", 4001)
    assert parse_host_port("[fe80::1]:4001") == ("fe80::1", 4001)
    assert parse_host_port("boot.example:80") == ("boot.example", 80)
    for bad in ("", ":1", "h:", "h:0", "::1:80", "[::1]", "[::1]80", "h:x"):
        with pytest.raises(UsageError):
            parse_host_port(bad)


# -- the command: one line on stderr and exit 2 ----------------------------------------------


def assert_usage_error(result: object, needle: str) -> None:
    stderr = result.stderr.decode()  # type: ignore[attr-defined]
    assert result.returncode == 2, stderr  # type: ignore[attr-defined]
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("plasmd: ") and needle in lines[0], stderr
    assert "Traceback" not in stderr


def test_cli_bad_config_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[provider]\nport = 'eighty'\n")
    result = run_tool("plasmd", "serve", "--config", str(bad), "--state-dir", str(tmp_path / "s"))
    assert_usage_error(result, "port has the wrong type")
    result = run_tool("plasmd", "serve", "--config", str(tmp_path / "absent.toml"))
    assert_usage_error(result, "cannot read config")


def test_cli_missing_directory_exits_2(tmp_path: Path) -> None:
    result = run_tool("plasmd", "serve", *serve_args(tmp_path / "none", tmp_path / "s"))
    assert_usage_error(result, "does not exist")


def test_cli_busy_port_exits_2(tmp_path: Path) -> None:
    make_tree(tmp_path / "art", {"stable/x86_64": 1000})
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = serve_args(tmp_path / "art", tmp_path / "s")
        args[args.index("--port") + 1] = str(port)
        result = run_tool("plasmd", "serve", *args)
    assert_usage_error(result, "is busy")


def test_cli_unreadable_signing_key_exits_2(tmp_path: Path) -> None:
    make_tree(tmp_path / "art", {"stable/x86_64": 1000})
    (tmp_path / "bad.key").write_text("not a key\n")
    args = serve_args(tmp_path / "art", tmp_path / "s", "--key", str(tmp_path / "bad.key"))
    assert_usage_error(run_tool("plasmd", "serve", *args), "signing key")


def test_cli_help_documents_the_command() -> None:
    result = run_tool("plasmd", "serve", "--help")
    out = result.stdout.decode()
    assert result.returncode == 0
    for needle in (
        "--artifacts",
        "--state-dir",
        "--no-mdns",
        "[provider]",
        "exit codes",
        "/status",
    ):
        assert needle in out


# -- numbers: finite, in range, the right type, from the file and from flags -----------------

# (table, key, a valid value, the flag or None) for every numeric setting.
NUMERIC_KEYS = [
    ("provider", "port", "8080", "--port"),
    ("provider", "scan_interval", "3.0", "--scan-interval"),
    ("provider", "idle_timeout", "30.0", "--idle-timeout"),
    ("provider", "header_timeout", "10.0", "--header-timeout"),
    ("provider", "min_send_rate", "4096", "--min-send-rate"),
    ("provider", "send_grace", "30.0", "--send-grace"),
    ("provider", "evict_below_rate", "16384", "--evict-below-rate"),
    ("provider", "manifest_validity_days", "7.0", None),
    ("dht", "port", "4001", "--dht-port"),
    ("dht", "ttl", "3600", None),
    ("dht", "republish_interval", "1800", None),
]
# TOML spellings that no numeric setting accepts, with what the message says.
BAD_TOML_NUMBERS = [
    ("nan", "out of range"),
    ("inf", "out of range"),
    ("-inf", "out of range"),
    ("-1", "out of range"),
    ("0", "out of range"),
    ("1e300", "out of range"),
    ("100000000000000000000000000000000000000000", "out of range"),
    ("true", "wrong type"),
    ("'5'", "wrong type"),
    ("[1]", "wrong type"),
]


@pytest.mark.parametrize(("table", "key", "good", "flag"), NUMERIC_KEYS)
@pytest.mark.parametrize(("bad", "message"), BAD_TOML_NUMBERS)
def test_every_numeric_key_is_checked_in_the_file(
    tmp_path: Path, table: str, key: str, good: str, flag: str | None, bad: str, message: str
) -> None:
    if key == "port" and bad == "0":
        bad, message = "65536", "out of range"  # 0 is a valid port: the system picks one
    elif key == "port" and bad in ("nan", "inf", "-inf", "1e300"):
        message = "wrong type"  # TOML floats, and a port is an integer
    path = tmp_path / "plasmd.toml"
    path.write_text(f"[{table}]\n{key} = {bad}\n")
    with pytest.raises(UsageError) as error:
        load_config_file(path)
    text = str(error.value)
    assert text.startswith(f"config {path}: [{table}] {key}"), text
    assert message in text and "\n" not in text
    path.write_text(f"[{table}]\n{key} = {good}\n")
    load_config_file(path)  # the valid value passes


BAD_FLAG_NUMBERS = ["nan", "inf", "-inf", "-1", "0", "1e300", "9" * 400, "abc", "", "1e3x"]


@pytest.mark.parametrize(("table", "key", "good", "flag"), [k for k in NUMERIC_KEYS if k[3]])
@pytest.mark.parametrize("bad", BAD_FLAG_NUMBERS)
def test_every_numeric_flag_is_checked(
    tmp_path: Path, table: str, key: str, good: str, flag: str, bad: str
) -> None:
    dest = flag.removeprefix("--").replace("-", "_")
    if key == "port" and bad == "0":
        bad = "65536"
    with pytest.raises(UsageError) as error:
        resolve({"artifacts": str(tmp_path), dest: bad})
    assert str(error.value).startswith(f"{flag} "), error.value
    resolve({"artifacts": str(tmp_path), dest: good})


@pytest.mark.parametrize("value", [True, False, None.__class__, "x", [1]])
def test_numbers_given_as_other_types_are_refused(tmp_path: Path, value: object) -> None:
    with pytest.raises(UsageError, match="--idle-timeout"):
        resolve({"artifacts": str(tmp_path), "idle_timeout": value})


def test_number_ranges_accept_their_limits(tmp_path: Path) -> None:
    text = """
[provider]
port = 0
scan_interval = 0.1
idle_timeout = 86400
header_timeout = 3600
min_send_rate = 1
send_grace = 3600
evict_below_rate = 1000000000
manifest_validity_days = 3650
[dht]
port = 65535
ttl = 604800
republish_interval = 1
"""
    config = resolve({"artifacts": str(tmp_path)}, parse_config_text(text, tmp_path))
    assert (config.port, config.scan_interval, config.idle_timeout) == (0, 0.1, 86400)
    assert config.header_timeout == 3600 and config.manifest_validity_days == 3650
    assert (config.min_send_rate, config.send_grace, config.evict_below_rate) == (1, 3600, 1e9)
    assert config.dht_settings.port == 65535 and config.dht_settings.republish_interval == 1
    defaults = resolve({"artifacts": str(tmp_path)})
    assert defaults.header_timeout == 10
    assert (defaults.min_send_rate, defaults.send_grace, defaults.evict_below_rate) == (
        4096,
        30,
        16384,
    )


def test_republish_interval_must_be_below_ttl(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"\[dht\] republish_interval must be below ttl"):
        parse_config_text("[dht]\nttl = 600\nrepublish_interval = 600\n", tmp_path)


def test_expires_in_is_checked_like_the_validity(tmp_path: Path) -> None:
    make_tree(tmp_path, {"stable/x86_64": 1000})
    for bad in (float("nan"), float("inf"), 0.0, -1.0, 1e300):
        with pytest.raises(UsageError, match="--expires-in"):
            generate(
                artifacts_dir=tmp_path,
                channel="stable",
                arch="x86_64",
                key=key_from_byte(1),
                expires_in_days=bad,
            )


@pytest.mark.parametrize(
    ("setting", "flag", "needle"),
    [
        ("scan_interval = nan", None, "[provider] scan_interval = nan is out of range"),
        ("idle_timeout = inf", None, "[provider] idle_timeout = inf is out of range"),
        ("manifest_validity_days = 1e300", None, "[provider] manifest_validity_days = 1e+300"),
        (None, ("--scan-interval", "nan"), "--scan-interval nan is out of range"),
        (None, ("--idle-timeout", "inf"), "--idle-timeout inf is out of range"),
        (None, ("--header-timeout", "-1"), "--header-timeout -1 is out of range"),
        (
            None,
            ("--min-send-rate", "inf"),
            "--min-send-rate inf is out of range: expected a number of bytes per second "
            "from 1 to 1000000000",
        ),
        ("send_grace = 0.5", None, "[provider] send_grace = 0.5 is out of range"),
        (None, ("--port", "http"), "--port 'http' is not an integer"),
        (None, ("--dht-port", "1e9"), "--dht-port '1e9' is not an integer"),
    ],
)
def test_cli_bad_numbers_exit_2_in_one_line(
    tmp_path: Path, setting: str | None, flag: tuple[str, str] | None, needle: str
) -> None:
    make_tree(tmp_path / "art", {"stable/x86_64": 1000})
    args = serve_args(tmp_path / "art", tmp_path / "s")
    if setting is not None:
        config = tmp_path / "plasmd.toml"
        config.write_text(f"[provider]\n{setting}\n")
        args += ["--config", str(config)]
        needle = f"config {config}: {needle}"
    if flag is not None:
        args += list(flag)
    assert_usage_error(run_tool("plasmd", "serve", *args), needle)


def test_state_directory_of_systemd_comes_first() -> None:
    env = {"STATE_DIRECTORY": "/var/lib/plasmd-x:/other", "HOME": "/h"}
    assert default_state_dir(env, uid=61234) == Path("/var/lib/plasmd-x")


def test_serve_as_a_user_with_no_home_given_a_state_dir(tmp_path: Path) -> None:
    """What systemd's DynamicUser= gives plasmd.service: a uid in no user database and no
    $HOME. With --state-dir it serves (the default, which needs a home, is not even looked at);
    without, one usage line."""
    base = Path(tempfile.mkdtemp(prefix="phase-nohome-"))
    try:
        os.chmod(base, 0o755)
        (base / "art" / "stable" / "x86_64").mkdir(parents=True)
        (base / "art" / "stable" / "x86_64" / "vmlinuz").write_bytes(b"K" * 1024)
        for path in (base / "art", base / "art" / "stable", base / "art" / "stable" / "x86_64"):
            path.chmod(0o755)
        (base / "art" / "stable" / "x86_64" / "vmlinuz").chmod(0o644)
        (base / "state").mkdir()
        os.chown(base / "state", 61234, 61234)
        env = {k: v for k, v in os.environ.items() if k not in ("HOME", "XDG_STATE_HOME")}
        env["PYTHONPATH"] = str(REPO)
        as_nobody = ["setpriv", "--reuid=61234", "--regid=61234", "--clear-groups", "--"]
        serve = [sys.executable, "-m", "phase_client", "plasmd", "serve", "--artifacts",
                 str(base / "art"), "--bind", "127.0.0.1", "--port", "0", "--no-mdns",
                 "--no-dht", "--settle-time", "0"]  # fmt: skip
        with subprocess.Popen(
            [*as_nobody, *serve, "--state-dir", str(base / "state")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd="/", env=env,
        ) as proc:  # fmt: skip
            assert proc.stderr is not None
            lines = []
            for line in proc.stderr:  # bounded: it serves (or dies) within seconds
                lines.append(line)
                if "Advertising stable/x86_64" in line or "error" in line:
                    break
            proc.terminate()
            proc.wait(timeout=30)
        assert any("Advertising stable/x86_64" in line for line in lines), lines
        result = subprocess.run(
            [*as_nobody, *serve], capture_output=True, text=True, timeout=60, cwd="/", env=env
        )
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().endswith(
            "no state directory: give --state-dir (there is no home directory)"
        ), result.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)
