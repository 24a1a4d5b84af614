"""plasmd serve configuration: the seed's TOML format, flag precedence, one-line errors."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from phase_client.errors import UsageError
from phase_client.provider.config import (
    default_state_dir,
    load_config_file,
    parse_config_text,
    parse_host_port,
    resolve,
)
from tests.conftest import run_tool
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
    assert config.bind == "0.0.0.0"
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
    with pytest.raises(UsageError, match="invalid port"):
        resolve({"artifacts": str(tmp_path), "port": 70000})
    with pytest.raises(UsageError, match="invalid --bootstrap address"):
        resolve({"artifacts": str(tmp_path), "bootstrap": ["x"]})
    with pytest.raises(UsageError, match="scan_interval must be positive"):
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
