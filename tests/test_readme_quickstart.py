"""README's quickstart, run as written: the shell blocks marked ``<!-- quickstart: run -->`` and
``<!-- quickstart: serve -->`` are taken from README.md (not copied here) and run in an empty
directory on loopback: keygen, a real ``plasmd serve`` on 127.0.0.1 (a free port instead of
8080), phase-fetch, phase-verify and kexec-boot --dry-run. Every wait is bounded."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
BLOCK = re.compile(
    r"^<!-- quickstart: (run|serve) -->\n```sh\n(.*?)^```$", re.MULTILINE | re.DOTALL
)
README_PORT = re.compile(r"\b8080\b")
TOOLS = ("phase-discover", "phase-fetch", "phase-verify", "plasmd")


def quickstart_blocks() -> list[tuple[str, str]]:
    """(kind, shell text) of each marked block, in README order."""
    return [(kind, text) for kind, text in BLOCK.findall(README.read_text())]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def installed_tools(bin_dir: Path) -> None:
    """What ``pip install .`` puts in PATH, for the Python this test runs under: the four
    console scripts and kexec-boot (the repository's, so the one under test)."""
    bin_dir.mkdir()
    for tool in TOOLS:
        wrapper = bin_dir / tool
        wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m phase_client {tool} "$@"\n')
        wrapper.chmod(0o755)
    (bin_dir / "kexec-boot").symlink_to(REPO / "initramfs" / "kexec-boot")


def wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"plasmd serve exited {proc.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"plasmd serve not listening on {port} after 30 s:\n{log.read_text()}")


def test_readme_has_the_quickstart_blocks() -> None:
    kinds = [kind for kind, _ in quickstart_blocks()]
    assert kinds == ["run", "serve", "run"]
    text = "\n".join(block for _, block in quickstart_blocks())
    for step in ("plasmd keygen --out release.key", "plasmd serve", "--key release.key.pub"):
        assert step in text
    assert "phase-verify" in text and "kexec-boot --dry-run" in text
    assert README_PORT.search(text)


def test_readme_quickstart_runs_as_written(tmp_path: Path) -> None:
    port = free_port()
    work = tmp_path / "work"
    work.mkdir()
    installed_tools(tmp_path / "bin")
    env = {
        "PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "TMPDIR": str(tmp_path),  # kexec-boot's staging directory
        "PLASMD_CONFIG": str(tmp_path / "no-config.toml"),  # not the machine's /etc/plasmd
        "LANG": "C.UTF-8",
    }
    log = tmp_path / "serve.log"
    server: subprocess.Popen[bytes] | None = None
    outputs: list[str] = []
    try:
        for kind, block in quickstart_blocks():
            script = README_PORT.sub(str(port), block)
            if kind == "serve":
                with log.open("wb") as sink:
                    server = subprocess.Popen(
                        ["sh", "-c", "exec " + script],
                        cwd=work,
                        env=env,
                        stdout=sink,
                        stderr=subprocess.STDOUT,
                    )
                wait_listening(port, server, log, time.monotonic() + 30)
                continue
            done = subprocess.run(
                ["sh", "-eu", "-c", script],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, (
                f"README block failed ({done.returncode}):\n{script}\n--- stdout\n{done.stdout}"
                f"--- stderr\n{done.stderr}--- serve\n{log.read_text() if log.exists() else ''}"
            )
            outputs.append(done.stdout)
        assert server is not None
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0, log.read_text()
    finally:
        if server is not None and server.poll() is None:
            server.kill()
            server.wait(timeout=10)

    keyid = (work / "release.key.pub").read_text().strip()
    assert f"keyid   {keyid}" in outputs[0]
    assert "VERIFIED stable/x86_64 version " in outputs[1]
    assert f"signed by {keyid}" in outputs[1]
    assert "kexec -s -l " in outputs[1] and "kexec -e" in outputs[1]
    artifacts = work / "artifacts" / "stable" / "x86_64"
    assert (work / "boot" / "kernel").read_bytes() == (artifacts / "vmlinuz").read_bytes()
    assert (work / "boot" / "initramfs").read_bytes() == (artifacts / "initramfs.img").read_bytes()
    assert f"Signing keyid {keyid}" in log.read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("kexec-boot.")]  # cleaned up
    assert sorted(os.listdir(work / "boot")) == ["cmdline", "initramfs", "kernel", "manifest.json"]
