"""scripts/write-usb.py (docs/usb.md, "Writing a stick"): on image files and a made-up sysfs,
never on a real disk."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from .conftest import REPO

SCRIPT = REPO / "scripts" / "write-usb.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("write_usb", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "phase-usb.img"
    path.write_bytes(os.urandom(3 * 1024 * 1024 + 512))
    return path


@pytest.fixture
def target(tmp_path: Path) -> Path:
    path = tmp_path / "stick.raw"
    path.write_bytes(b"\0" * (8 * 1024 * 1024))
    return path


def test_writes_a_file_and_verifies(image: Path, target: Path) -> None:
    result = run(str(image), str(target), "--yes")
    assert result.returncode == 0, result.stderr
    assert "written and verified" in result.stdout and "3 of 3 MiB" in result.stderr
    written = target.read_bytes()
    assert written[: image.stat().st_size] == image.read_bytes()
    assert written[image.stat().st_size :] == b"\0" * (len(written) - image.stat().st_size)


def test_asks_first_and_writes_nothing_without_yes(image: Path, target: Path) -> None:
    before = target.read_bytes()
    result = run(str(image), str(target), stdin="y\n")
    assert result.returncode == 1 and 'Type "yes"' in result.stdout
    assert result.stderr == 'write-usb: not written (no "yes")\n'
    assert target.read_bytes() == before
    assert run(str(image), str(target), stdin="yes\n").returncode == 0


def test_refuses_what_is_no_disk_or_file_and_usage(image: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    result = run(str(image), str(fifo), "--yes")
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "neither a disk nor a regular file" in result.stderr
    missing = run(str(tmp_path / "nope.img"), str(fifo), "--yes")
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1, missing.stderr
    assert run(str(image)).returncode == 2
    helped = run("--help")
    assert helped.returncode == 0 and "Exit codes" in helped.stdout


def test_a_read_back_that_differs_exits_3(
    image: Path, target: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = load()
    real_copy = module.copy

    def flipping_copy(src: Path, dst: str, size: int) -> None:
        real_copy(src, dst, size)
        with open(dst, "r+b") as f:  # the medium returns one other byte
            f.seek(size // 2)
            f.write(b"\xff" if image.read_bytes()[size // 2] != 0xFF else b"\0")

    monkeypatch.setattr(module, "copy", flipping_copy)
    assert module.main([str(image), str(target), "--yes"]) == 3
    assert "read back sha256" in capsys.readouterr().err


def fake_disk(sysfs: Path, removable: str = "0") -> None:
    """sda (8:0, 16 MiB) with sda1 (8:1) and sda2 (8:2), as /sys/class/block shows them."""
    disk = sysfs / "sda"
    disk.mkdir(parents=True)
    (disk / "dev").write_text("8:0\n")
    (disk / "size").write_text(str(16 * 2048) + "\n")
    (disk / "removable").write_text(removable + "\n")
    for n in (1, 2):
        part = disk / f"sda{n}"
        part.mkdir()
        (part / "partition").write_text(f"{n}\n")
        (part / "dev").write_text(f"8:{n}\n")
        (sysfs / f"sda{n}").symlink_to(part)


SWAPS = "Filename\tType\tSize\tUsed\tPriority\n"


def test_disk_checks(tmp_path: Path) -> None:
    module = load()
    sysfs = tmp_path / "class-block"
    fake_disk(sysfs)
    size = 8 * 1024 * 1024
    assert module.disk_problems("sda", sysfs, "", SWAPS, size) == []
    assert module.disk_problems("sda1", sysfs, "", SWAPS, size) == [
        "/dev/sda1 is a partition: give the whole disk"
    ]
    mounted = "36 25 8:2 / /boot rw,relatime shared:9 - vfat /dev/sda2 rw\n"
    assert module.disk_problems("sda", sysfs, mounted, SWAPS, size) == [
        "/dev/sda2 is mounted on /boot"
    ]
    swap = SWAPS + "/dev/sda1\tpartition\t1024\t0\t-2\n"
    assert module.disk_problems("sda", sysfs, "", swap, size) == ["/dev/sda1 is in use as swap"]
    (sysfs / "sda" / "sda2" / "holders").mkdir()
    (sysfs / "sda" / "sda2" / "holders" / "dm-0").mkdir()
    assert module.disk_problems("sda", sysfs, "", SWAPS, size) == ["/dev/sda2 is in use by dm-0"]
    (sysfs / "sda" / "sda2" / "holders" / "dm-0").rmdir()
    too_big = module.disk_problems("sda", sysfs, "", SWAPS, 32 * 1024 * 1024)
    assert too_big == [f"/dev/sda holds {16 * 1024 * 1024} bytes, the image {32 * 1024 * 1024}"]
    assert not module.looks_removable("sda", sysfs)
    stick = tmp_path / "stick-block"
    fake_disk(stick, removable="1")
    assert module.looks_removable("sda", stick)
