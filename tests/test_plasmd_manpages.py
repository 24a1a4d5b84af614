"""Man pages and bash completion come from the argparse parsers (scripts/gen-manpages.py) and
the checked-in ones are current."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gen-manpages.py"
COMPLETION = REPO / "packaging" / "bash-completion" / "phase"


def test_checked_in_pages_and_completion_are_current(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"{result.stderr} (run: make man)"
    fresh = tmp_path / "out"
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(fresh)], check=True, timeout=120)
    pages = sorted(p.name for p in (fresh / "man").iterdir())
    assert {"plasmd.8", "plasmd-serve.8", "plasmd-publish.8", "plasmd-config-check.8"} <= set(pages)
    assert {"phase-fetch.1", "phase-verify.1", "phase-discover.1"} <= set(pages)
    assert pages == sorted(p.name for p in (REPO / "packaging" / "man").iterdir())


def test_a_page_says_what_help_says() -> None:
    page = (REPO / "packaging/man/plasmd-serve.8").read_text()
    assert page.startswith('.TH "PLASMD-SERVE" "8" ')
    assert "\\fB\\-\\-settle\\-time\\fR \\fISECONDS\\fR" in page
    assert "exit codes:" in page  # the epilog, exit-code table included


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_pages_render_without_warnings() -> None:
    for page in sorted((REPO / "packaging/man").iterdir()):
        result = subprocess.run(
            ["groff", "-man", "-Tutf8", "-ww", "-z", str(page)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0 and result.stderr == "", (page.name, result.stderr)


def complete(*words: str) -> list[str]:
    """What bash offers for the last of ``words``, through the generated completion."""
    script = (
        f"source {COMPLETION}\n"
        f"COMP_WORDS=({' '.join(repr(w) for w in words)})\n"
        f"COMP_CWORD={len(words) - 1}\n"
        "_phase_complete\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    result = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line]


def test_bash_completion_offers_commands_options_and_values() -> None:
    assert complete("plasmd", "se") == ["serve"]
    assert complete("plasmd", "config", "") == ["check"]
    assert "--settle-time" in complete("plasmd", "serve", "--se")
    assert complete("plasmd", "serve", "--log-format", "j") == ["json"]
    assert complete("plasmd", "serve", "--port", "") == []
    assert "--manifest" in complete("phase-fetch", "--ma")


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_completion_passes_shellcheck() -> None:
    result = subprocess.run(
        ["shellcheck", "-s", "bash", str(COMPLETION)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout
