"""phase-fetch's output directory is a shared place: what it leaves there, and what it refuses.

- After a fetch, DIR holds exactly the new manifest's set: an earlier fetch's initramfs (the new
  manifest names none), planted artifacts and leftovers of killed runs are removed.
- Nothing is written through a planted symlink or opened as a FIFO: part files, the blob cache.
- A full disk while committing leaves the old complete set (real ENOSPC on a small tmpfs, root).

Runs the command in-process against the real HTTP servers of tests/fetch_servers.py, except
where a hang is the failure being tested: there the real command runs with a timeout.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from phase_client.cli.fetch import main as fetch_main

from .conftest import REPO, key_from_byte
from .fetch_servers import FileServer, publish, signed_manifest

KEY = key_from_byte(21)
OLD = {"kernel": b"old kernel " * 3000, "initramfs": b"old initramfs " * 2000}
NEW = {"kernel": b"new kernel " * 4000}


@pytest.fixture
def server() -> Iterator[FileServer]:
    with FileServer() as s:
        yield s


def run_fetch(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = fetch_main(["--key", KEY.public.keyid, *argv])
    _, err = capsys.readouterr()
    return code, err


def serve(server: FileServer, artifacts: dict[str, bytes], prefix: str, **kw: Any) -> str:
    return publish(server, signed_manifest(KEY, artifacts, **kw), artifacts, prefix=prefix)


def test_a_later_fetch_leaves_exactly_its_own_set(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code, err = run_fetch(capsys, "--manifest", serve(server, OLD, "/a/"), "--output", str(out))
    assert code == 0, err
    assert sorted(os.listdir(out)) == ["cmdline", "initramfs", "kernel", "manifest.json"]
    # Planted or left by killed runs: a dtb no manifest named, part and temp files.
    for name in ("dtb", ".initramfs.part", ".rootfs.part", ".manifest.json.x1y2.tmp"):
        (out / name).write_bytes(b"planted")
    code, err = run_fetch(capsys, "--manifest", serve(server, NEW, "/b/"), "--output", str(out))
    assert code == 0, err
    assert sorted(os.listdir(out)) == ["cmdline", "kernel", "manifest.json"]
    assert (out / "kernel").read_bytes() == NEW["kernel"]
    assert set(json.loads((out / "manifest.json").read_bytes())["artifacts"]) == {"kernel"}


def test_artifact_subset_removes_the_older_copies_of_the_others(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--artifact kernel: the initramfs the manifest names was not fetched by this run, so an
    older one must not stay beside the new manifest as if it were verified."""
    out = tmp_path / "out"
    assert run_fetch(capsys, "--manifest", serve(server, OLD, "/a/"), "--output", str(out))[0] == 0
    both = {"kernel": NEW["kernel"], "initramfs": b"new initramfs"}
    url = serve(server, both, "/b/")
    code, err = run_fetch(capsys, "--manifest", url, "--artifact", "kernel", "--output", str(out))
    assert code == 0, err
    assert sorted(os.listdir(out)) == ["cmdline", "kernel", "manifest.json"]


def test_a_planted_part_symlink_is_not_written_through(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (out / ".kernel.part").symlink_to(victim)
    code, err = run_fetch(capsys, "--manifest", serve(server, NEW, "/b/"), "--output", str(out))
    assert code == 0, err
    assert victim.read_bytes() == b"precious"
    assert not (out / "kernel").is_symlink()
    assert (out / "kernel").read_bytes() == NEW["kernel"]


def test_planted_cache_entries_are_not_followed_or_waited_on(
    server: FileServer, tmp_path: Path
) -> None:
    """A FIFO under a blob's name (opening it for reading would wait for a writer forever) and a
    symlink to a file with the right bytes: both are ignored, replaced by the verified blob,
    and the link's target is left alone. The real command, with a timeout: the bug is a hang."""
    cache = tmp_path / "cache" / "sha256"
    cache.mkdir(parents=True)
    artifacts = {"kernel": NEW["kernel"], "initramfs": b"initramfs bytes" * 100}
    kernel_hex = hashlib.sha256(artifacts["kernel"]).hexdigest()
    initramfs_hex = hashlib.sha256(artifacts["initramfs"]).hexdigest()
    os.mkfifo(cache / kernel_hex)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(artifacts["initramfs"])
    (cache / initramfs_hex).symlink_to(elsewhere)
    url = serve(server, artifacts, "/c/")
    argv = ["--key", KEY.public.keyid, "--manifest", url, "--cache", str(cache.parent)]
    result = subprocess.run(
        [sys.executable, "-m", "phase_client", "fetch", *argv, "--output", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "o" / "kernel").read_bytes() == artifacts["kernel"]
    for name, hexdigest in (("kernel", kernel_hex), ("initramfs", initramfs_hex)):
        blob = cache / hexdigest
        assert blob.is_file() and not blob.is_symlink()
        assert blob.read_bytes() == artifacts[name]
    assert elsewhere.read_bytes() == artifacts["initramfs"]
    assert "not a regular file" in result.stderr and "symbolic link" in result.stderr


def test_disk_full_while_committing_leaves_the_old_set(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real ENOSPC (a small tmpfs, root as on CI) right after the new parts filled the disk.

    The old set's kernel is also in the blob cache (a hard link), so replacing it frees nothing:
    the cmdline and manifest of the new set no longer fit. Writing every new file before the
    first rename means this fails before anything of the old set is touched."""
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        out, cache = small / "out", small / "cache"
        old_url = serve(server, OLD, "/a/")
        code, err = run_fetch(
            capsys, "--manifest", old_url, "--cache", str(cache), "--output", str(out)
        )
        assert code == 0, err
        before = {name: (out / name).read_bytes() for name in os.listdir(out)}
        # The new kernel takes exactly the free space: its part file fits, nothing more does.
        vfs = os.statvfs(small)
        free = vfs.f_bavail * vfs.f_frsize
        new = {"kernel": (b"new kernel " * (free // 11 + 1))[:free]}
        # Signed mirror URLs (never contacted) make the new manifest need two pages, one more
        # than removing the old one frees: a commit that renames first runs out mid-way.
        mirrors = [f"http://127.0.0.1:1/mirror-{i:03d}/" + "k" * 100 for i in range(40)]
        new_url = serve(server, new, "/b/", urls={"kernel": mirrors})
        code, err = run_fetch(
            capsys, "--manifest", new_url, "--cache", str(cache), "--output", str(out)
        )
        assert code == 2, err
        assert "No space left on device" in err.strip().splitlines()[-1]
        assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before
        assert set(json.loads(before["manifest.json"])["artifacts"]) == {"kernel", "initramfs"}
    finally:
        subprocess.run(["umount", str(small)], check=True)
