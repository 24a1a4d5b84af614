"""`make demo-local` as a user runs it: the whole pipeline on loopback must end in OK."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import REPO


@pytest.mark.slow
def test_demo_local_runs_the_whole_pipeline() -> None:
    env = dict(os.environ, PY=sys.executable)
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "demo-local.sh")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=REPO,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "INFO Advertising stable/x86_64" in out  # the provider's seed log line
    assert "\tdht\t" in out  # found through the DHT
    assert "VERIFIED stable/x86_64" in out
    assert "kexec -e" in out  # the dry run printed the hand-off
    assert "FAILED: signature" in out  # and the tampered manifest was refused
    assert "demo-local: OK" in result.stdout.rstrip().splitlines()[-1]
