"""scripts/pack-cpio.sh, the initramfs builders' packer: a failure anywhere in its pipeline is
a failure of the build, with nothing left behind (sh has no pipefail: zstd's success must not
hide cpio's failure)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO

PACK = REPO / "scripts" / "pack-cpio.sh"


def pack(tree: Path, out: Path, path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", f'. "{PACK}" && pack_cpio "$1" 1700000000 "$2"', "sh", str(tree), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PATH": path},
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    if shutil.which("zstd") is None or shutil.which("cpio") is None:
        pytest.fail("zstd and cpio are needed: run scripts/install-deps")
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "init").write_text("#!/bin/sh\n")
    (root / "bin" / "tool").write_bytes(b"\x7fELF" + bytes(1000))
    return root


def test_packs_a_padded_archive_that_unpacks_to_the_tree(tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "initramfs.cpio.zst"
    out.parent.mkdir()
    result = pack(tree, out, os.environ["PATH"])
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size % 4 == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["initramfs.cpio.zst"]
    listing = subprocess.run(
        f"zstd -dc '{out}' | cpio -t --quiet", shell=True, capture_output=True, text=True
    )
    assert sorted(listing.stdout.split()) == ["bin", "bin/tool", "init"], listing.stderr


def test_a_cpio_failure_fails_the_build_and_leaves_nothing(tree: Path, tmp_path: Path) -> None:
    # A cpio that writes part of an archive, then fails (as on a file it cannot read): zstd
    # compresses what came and succeeds.
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "cpio").write_text("#!/bin/sh\ncat >/dev/null\nprintf '070701partial'\nexit 2\n")
    (fake / "cpio").chmod(0o755)
    out = tmp_path / "out" / "initramfs.cpio.zst"
    out.parent.mkdir()
    result = pack(tree, out, f"{fake}:{os.environ['PATH']}")
    assert result.returncode == 1, result
    assert result.stderr.strip().splitlines()[-1] == f"pack_cpio: packing {tree} failed"
    assert list(out.parent.iterdir()) == []
