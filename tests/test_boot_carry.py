"""boot/carry.py: the newc bytes that carry the rootfs inside the initrd (pure)."""

from __future__ import annotations

import subprocess

import pytest

from phase_client.boot.carry import (
    MAX_CARRIED_SIZE,
    ROOTFS_PATH,
    carried_size,
    file_header,
    padding,
    trailer,
)


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 4093])
def test_archive_is_what_gnu_cpio_reads(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    archive = file_header(ROOTFS_PATH, size) + data + trailer(size)
    assert len(archive) == carried_size(size) and len(archive) % 4 == 0
    listed = subprocess.run(
        ["cpio", "-tv", "--quiet"], input=archive, capture_output=True, timeout=30
    )
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.decode().splitlines()
    assert [line.split()[-1] for line in lines] == ["phase", "phase/rootfs.sqfs"]
    assert lines[0].startswith("drwxr-xr-x") and lines[1].startswith("-r--r--r--")
    assert lines[1].split()[4] == str(size)


def test_every_header_starts_on_a_four_byte_boundary() -> None:
    header = file_header(ROOTFS_PATH, 7)
    second = header.index(b"070701", 1)
    assert header.startswith(b"070701") and second % 4 == 0 and len(header) % 4 == 0
    assert trailer(7).startswith(b"\0") and trailer(7)[1:7] == b"070701"


def test_padding() -> None:
    assert [len(padding(n)) for n in range(6)] == [0, 3, 2, 1, 0, 3]


@pytest.mark.parametrize(
    ("path", "size"),
    [("rootfs.sqfs", 1), ("phase/a/b", 1), ("/x", 1), (ROOTFS_PATH, MAX_CARRIED_SIZE + 1)],
)
def test_refuses_what_newc_cannot_hold(path: str, size: int) -> None:
    with pytest.raises(ValueError):
        file_header(path, size)
