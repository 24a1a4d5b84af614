"""plasmd's configuration as a sysadmin meets it: the default path read by plain ``plasmd
serve``, and ``plasmd config check`` naming the file and line of an error."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import run_tool
from tests.provider_helpers import ServerProcess, make_tree

GOOD = """[provider]
artifacts_dir = "art"
state_dir = "state"
bind = "127.0.0.1"
port = 0
mdns = false
dht = false
settle_time = 0
"""


def env_with(config: Path) -> dict[str, str]:
    return dict(os.environ, PLASMD_CONFIG=str(config))


def test_plain_serve_reads_the_default_config(tmp_path: Path) -> None:
    make_tree(tmp_path / "art", {"stable/x86_64": 1000})
    config = tmp_path / "plasmd.toml"
    config.write_text(GOOD)
    server = ServerProcess([], env=env_with(config))
    try:
        server.started()
        server.wait_for(r"^INFO Advertising stable/x86_64$")
        assert (tmp_path / "state" / "identity.key").exists()
    finally:
        assert server.stop() == 0


def test_a_missing_default_config_is_not_an_error_by_itself(tmp_path: Path) -> None:
    absent = tmp_path / "absent.toml"
    result = run_tool("plasmd", "serve", env=env_with(absent))
    assert result.returncode == 2
    lines = result.stderr.decode().splitlines()
    assert lines == [
        "plasmd: no artifacts directory: give --artifacts DIR, or artifacts_dir in --config "
        f"FILE or in {absent}"
    ]


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        (GOOD + "scan_interval = 0\n", 9, "[provider] scan_interval = 0 is out of range"),
        (GOOD + "\n[dht]\nport = 'x'\n", 11, "[dht] port has the wrong type"),
        (GOOD + "colour = 1\n", 9, "unknown key 'colour' in [provider]"),
        ("[provider]\nartifacts_dir = 'nowhere'\n", 2, "artifacts directory"),
        ("[provider]\nchannels = ['Bad Name']\n", 2, "invalid channel"),
        ("[provider]\nport = 1\n[provider\n", 3, "at line 3, column"),
        ("\n\n[other]\n", 3, "unknown table [other]"),
    ],
)
def test_config_check_names_file_and_line(
    tmp_path: Path, text: str, line: int, needle: str
) -> None:
    (tmp_path / "art").mkdir()
    config = tmp_path / "plasmd.toml"
    config.write_text(text)
    result = run_tool("plasmd", "config", "check", str(config))
    assert result.returncode == 2
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"plasmd: config {config}: ") and needle in lines[0], lines
    assert f"line {line}" in lines[0], lines
    result = run_tool("plasmd", "config", "check", "--json", str(config))
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["line"] == line and report["file"] == str(config)
    assert report["error"]["exit_code"] == 2


def test_config_check_of_a_good_file(tmp_path: Path) -> None:
    (tmp_path / "art").mkdir()
    config = tmp_path / "plasmd.toml"
    config.write_text(GOOD)
    result = run_tool("plasmd", "config", "check", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == f"{config}: OK (artifacts {tmp_path / 'art'}, port 0)\n"
    result = run_tool("plasmd", "config", "check", "--json", env=env_with(config))
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["file"] == str(config)
    assert report["settings"]["artifacts_dir"] == str(tmp_path / "art")
    assert report["settings"]["bind"] == "127.0.0.1"
    config.write_text(GOOD.replace('bind = "127.0.0.1"\n', ""))
    result = run_tool("plasmd", "config", "check", "--json", str(config))
    assert json.loads(result.stdout)["settings"]["bind"] is None  # every address, both families


def test_config_check_of_an_unreadable_key(tmp_path: Path) -> None:
    (tmp_path / "art").mkdir()
    config = tmp_path / "plasmd.toml"
    config.write_text(GOOD + 'key = "missing.key"\n')
    result = run_tool("plasmd", "config", "check", str(config))
    assert result.returncode == 2
    line = result.stderr.decode().strip()
    assert "missing.key" in line and line.endswith("(line 9)"), line
