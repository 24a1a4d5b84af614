"""Where the tools are installed: --version on every command and subcommand (and kexec-boot),
kexec-boot installed by pip beside phase-verify and finding it there when PATH does not have
it (directly, or through a symbolic link)."""

from __future__ import annotations

import argparse
import importlib
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from phase_client import __version__
from phase_client.cli import TOOLS

from .conftest import REPO
from .test_kexec_boot import KEY, fetch_dir

KEXEC_BOOT = REPO / "initramfs" / "kexec-boot"
PROGRAMS = {"verify": "phase-verify", "fetch": "phase-fetch", "discover": "phase-discover"}
# Subcommands whose own --version is the image's version (an option older than ours).
IMAGE_VERSION = {"plasmd manifest generate", "plasmd image build"}
SHELLS = [pytest.param(["busybox", "sh"], id="busybox-ash"), pytest.param(["dash"], id="dash")]


def commands() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    def walk(path: str, parser: argparse.ArgumentParser) -> Iterator[tuple[str, Any]]:
        yield path, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(f"{path} {name}", sub)

    for name, module in TOOLS.items():
        parser = importlib.import_module(module).build_parser()
        parser.prog = PROGRAMS.get(name, name)
        yield from walk(parser.prog, parser)


def test_every_command_and_subcommand_prints_its_version(
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen = []
    for path, parser in commands():
        if path in IMAGE_VERSION:
            continue
        with pytest.raises(SystemExit) as exc:
            parser.parse_args(["--version"])
        assert exc.value.code == 0, path
        assert capsys.readouterr().out == f"{parser.prog} {__version__}\n", path
        seen.append(path)
    assert {"phase-verify", "phase-fetch", "phase-discover", "plasmd", "plasmd serve"} <= set(seen)
    assert {"plasmd manifest", "plasmd image", "plasmd key show", "plasmd root init"} <= set(seen)


def test_image_version_options_keep_their_meaning() -> None:
    found = dict(commands())
    for path in IMAGE_VERSION:
        action = found[path]._option_string_actions["--version"]
        assert not isinstance(action, argparse._VersionAction), path


def test_version_through_the_console_entry() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "phase_client", "fetch", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (0, f"phase-fetch {__version__}\n")
    done = subprocess.run(
        [sys.executable, "-m", "phase_client", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (0, f"phase {__version__}\n")


@pytest.mark.parametrize("shell", SHELLS)
def test_kexec_boot_version_is_phase_clients(shell: list[str]) -> None:
    done = subprocess.run(
        [*shell, str(KEXEC_BOOT), "--version"], capture_output=True, text=True, timeout=30
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, f"kexec-boot {__version__}\n", "")


def test_pip_installs_kexec_boot_beside_the_console_scripts() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["tool"]["setuptools"]["script-files"] == ["initramfs/kexec-boot"]
    assert project["project"]["version"] == __version__  # what every --version prints
    assert {"phase-verify", "phase-fetch", "phase-discover", "phase-boot", "plasmd"} <= set(
        project["project"]["scripts"]
    )


def installed(bin_dir: Path) -> Path:
    """A bin directory as pip fills it: phase-verify (a console script for this Python) and
    kexec-boot, the repository's script copied as is."""
    bin_dir.mkdir(parents=True)
    verify = bin_dir / "phase-verify"
    verify.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m phase_client verify "$@"\n')
    verify.chmod(0o755)
    shutil.copy2(KEXEC_BOOT, bin_dir / "kexec-boot")
    return bin_dir / "kexec-boot"


def dry_run(
    shell: list[str], script: Path, tmp_path: Path, path: str
) -> subprocess.CompletedProcess[str]:
    keys = tmp_path / "keys"
    keys.mkdir(exist_ok=True)
    (keys / "k.pub").write_text(KEY.public.keyid + "\n")
    boot = fetch_dir(tmp_path / "boot")
    return subprocess.run(
        [*shell, str(script), "--dry-run", "--keys-dir", str(keys), str(boot)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": path, "TMPDIR": str(tmp_path), "KEXEC_BOOT_PROC_CMDLINE": "/dev/null"},
    )


def bare_path() -> str:
    path = "/usr/bin:/bin"
    if shutil.which("phase-verify", path=path):
        pytest.skip("phase-verify is installed system-wide: PATH would find it")
    return path


@pytest.mark.parametrize("shell", SHELLS)
def test_kexec_boot_finds_phase_verify_beside_itself(tmp_path: Path, shell: list[str]) -> None:
    script = installed(tmp_path / "venv" / "bin")
    done = dry_run(shell, script, tmp_path, bare_path())
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("kexec-boot: VERIFIED stable/x86_64 version ")
    assert "kexec -e\n" in done.stdout


@pytest.mark.parametrize("shell", SHELLS)
def test_kexec_boot_through_a_link_finds_phase_verify_beside_its_target(
    tmp_path: Path, shell: list[str]
) -> None:
    script = installed(tmp_path / "venv" / "bin")
    links = tmp_path / "usr-local-bin"
    links.mkdir()
    (links / "kexec-boot").symlink_to(script)
    done = dry_run(shell, links / "kexec-boot", tmp_path, bare_path())
    assert done.returncode == 0, done.stderr
    assert "kexec -e\n" in done.stdout


def test_kexec_boot_without_phase_verify_anywhere(tmp_path: Path) -> None:
    script = tmp_path / "bin" / "kexec-boot"
    script.parent.mkdir()
    shutil.copy2(KEXEC_BOOT, script)
    done = dry_run(["dash"], script, tmp_path, bare_path())
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"kexec-boot: phase-verify not found in PATH nor beside {script}\n"
