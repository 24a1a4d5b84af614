"""boot/stage.py ``stage_in_place``: what the fetch wrote into the private directory is loaded
as it is, so it must still be each artifact's only name (real files, a temporary directory)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from phase_client.boot.stage import make_private_dir, stage_in_place, staged_cmdline
from phase_client.errors import IntegrityError

from .test_boot_carry import FILES, manifest


def fetched_into(tmp_path: Path) -> Path:
    private = tmp_path / "run" / "stage"
    (tmp_path / "run").mkdir(mode=0o700)
    make_private_dir(private)
    for name in ("kernel", "initramfs"):
        (private / name).write_bytes(FILES[name])
    return private


def test_the_fetched_files_are_staged_as_they_are(tmp_path: Path) -> None:
    m, data = manifest({"kernel": "vmlinuz", "initramfs": "initrd.img"})
    private = fetched_into(tmp_path)
    assert stage_in_place(m, data, private) == private / "initramfs"
    assert (private / "cmdline").read_bytes() == staged_cmdline(m).encode()


@pytest.mark.parametrize("name", ["kernel", "initramfs"])
def test_a_loaded_file_with_a_second_name_is_refused(tmp_path: Path, name: str) -> None:
    """A hard link (a blob cache's, say) outside the private directory could change the bytes
    kexec loads after the fetch hashed them."""
    m, data = manifest({"kernel": "vmlinuz", "initramfs": "initrd.img"})
    private = fetched_into(tmp_path)
    os.link(private / name, tmp_path / "elsewhere")
    with pytest.raises(IntegrityError, match=rf"{name}: has 2 names \(hard links\)"):
        stage_in_place(m, data, private)
    os.unlink(tmp_path / "elsewhere")
    assert stage_in_place(m, data, private) == private / "initramfs"
