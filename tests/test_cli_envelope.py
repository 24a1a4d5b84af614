"""One face for every command: the --json envelope, the exit-code table, -v's module names."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from phase_client.cli import run_tool
from phase_client.cli._common import exit_codes_help, remove_log_handlers, setup_logging
from phase_client.errors import EXIT_CODES

REPO = Path(__file__).resolve().parent.parent
KEY = "ed25519:" + "ab" * 32


def envelope(capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, Any], str]:
    out, err = capsys.readouterr()
    return json.loads(out), err


def test_readme_exit_codes_are_the_table() -> None:
    text = (REPO / "README.md").read_text()
    section = text.split("## Exit codes (every command)", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+) \| (.+) \|$", section, re.MULTILINE)
    assert [(int(code), meaning.strip()) for code, meaning in rows] == list(EXIT_CODES)


def test_help_epilogs_come_from_the_table() -> None:
    text = exit_codes_help({0: "found"}, codes=(0, 3))
    assert text == "exit codes:\n  0  found\n  3  no source reachable / nothing found\n"
    assert all(str(code) in exit_codes_help() for code, _ in EXIT_CODES)


def test_verify_usage_error_prints_the_envelope(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_tool("verify", ["--json", "--key", KEY]) == 2
    data, err = envelope(capsys)
    assert data["ok"] is False and data["verified"] is False
    assert data["error"]["exit_code"] == 2 and data["error"]["reason"] == "usage"
    assert "no manifest given" in data["error"]["message"] and "no manifest given" in err


def test_parser_errors_print_the_envelope_with_json(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        run_tool("fetch", ["--json", "--retries", "-1"])
    assert exc.value.code == 2
    data, err = envelope(capsys)
    assert data == {
        "ok": False,
        "error": {"exit_code": 2, "reason": "usage", "message": data["error"]["message"]},
    }
    assert "--retries" in data["error"]["message"] and "error: argument --retries" in err
    with pytest.raises(SystemExit):
        run_tool("fetch", ["--retries", "-1"])
    out, _ = capsys.readouterr()
    assert out == ""  # without --json, stdout stays empty


def test_discover_nothing_found_is_an_empty_result(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--source", "dht", "--bootstrap", "127.0.0.1:9", "--timeout", "0.5", "--json", "-q"]
    assert run_tool("discover", argv) == 3
    data, err = envelope(capsys)
    assert data["ok"] is False and data["providers"] == []
    assert data["error"]["exit_code"] == 3 and data["error"]["reason"] == "unreachable"
    assert err.strip().endswith(data["error"]["message"])


def test_discover_usage_error_with_json(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run_tool("discover", ["--json", "--arch", "no such arch!"])
    data, _ = envelope(capsys)
    assert data["providers"] == [] and data["error"]["reason"] == "usage"


def test_plasmd_keygen_success_and_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "k"
    assert run_tool("plasmd", ["keygen", "--out", str(key), "--json"]) == 0
    data, _ = envelope(capsys)
    assert data["ok"] is True and data["keyid"].startswith("ed25519:")
    assert run_tool("plasmd", ["keygen", "--out", str(key), "--json"]) == 2
    data, err = envelope(capsys)
    assert data["ok"] is False and data["error"]["exit_code"] == 2 and "--force" in err
    assert run_tool("plasmd", ["-q", "keygen", "--out", str(key), "--force"]) == 0
    assert capsys.readouterr().out == ""  # -q: no success text


def test_verbose_log_lines_name_their_module() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        for verbose, suffix in ((0, ""), (1, " [phase_client.fetch.download]")):
            setup_logging(verbose)
            root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
            logging.getLogger("phase_client.fetch.download").info("kernel: 5 bytes verified")
            assert stream.getvalue().splitlines()[-1] == f"INFO kernel: 5 bytes verified{suffix}"
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_remove_log_handlers_takes_off_only_the_commands_own() -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        setup_logging()
        other = logging.NullHandler()
        root.addHandler(other)
        remove_log_handlers()
        assert root.handlers == [other]
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
