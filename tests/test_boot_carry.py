"""boot/carry.py: what travels across kexec inside the initrd, and its newc bytes (pure)."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from phase_client.boot.carry import (
    MAX_CARRIED_SIZE,
    Carried,
    archive_size,
    carry_plan,
    header,
    padding,
    trailer,
)
from phase_client.manifest import Manifest, build_document, dump_document, parse_manifest

FILES = {"kernel": b"K" * 5, "initramfs": b"I" * 6, "rootfs": b"R" * 4093}


def manifest(paths: dict[str, str], sizes: dict[str, int] | None = None) -> tuple[Manifest, bytes]:
    artifacts = {
        name: {
            "hash": "sha256:" + hashlib.sha256(FILES[name]).hexdigest(),
            "size": (sizes or {}).get(name, len(FILES[name])),
            "path": path,
        }
        for name, path in paths.items()
    }
    document = build_document(
        version="1", sequence=1, channel="stable", arch="x86_64", created_at=1,
        expires_at=2, cmdline="", artifacts=artifacts,
    )  # fmt: skip
    data = dump_document(document)
    return parse_manifest(data), data


def archive(entries: tuple[Carried, ...]) -> bytes:
    out = b""
    for ino, entry in enumerate(entries, start=1):
        body = entry.body if entry.artifact is None else FILES[entry.artifact]
        out += header(entry, ino) + body + padding(entry.size)
    return out + trailer()


def test_the_archive_gnu_cpio_unpacks_is_the_mirror_layout(tmp_path: Path) -> None:
    m, data = manifest(
        {"kernel": "vmlinuz", "initramfs": "boot/initramfs.img", "rootfs": "rootfs.sqfs"}
    )
    entries = carry_plan(m, data)
    raw = archive(entries)
    assert len(raw) == archive_size(entries) and len(raw) % 4 == 0
    unpacked = subprocess.run(
        ["cpio", "-id", "--quiet", "--no-absolute-filenames"],
        input=raw, cwd=tmp_path, capture_output=True, timeout=30,
    )  # fmt: skip
    assert unpacked.returncode == 0, unpacked.stderr
    combo = tmp_path / "phase" / "mirror" / "stable" / "x86_64"
    assert (combo / "manifest.json").read_bytes() == data
    assert (combo / "vmlinuz").read_bytes() == FILES["kernel"]
    assert (combo / "boot" / "initramfs.img").read_bytes() == FILES["initramfs"]
    link = tmp_path / "phase" / "rootfs.sqfs"
    assert link.is_symlink() and str(link.readlink()) == "mirror/stable/x86_64/rootfs.sqfs"
    assert link.read_bytes() == FILES["rootfs"]
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert files == [
        "phase/mirror/stable/x86_64/boot/initramfs.img",
        "phase/mirror/stable/x86_64/manifest.json",
        "phase/mirror/stable/x86_64/rootfs.sqfs",
        "phase/mirror/stable/x86_64/vmlinuz",
        "phase/rootfs.sqfs",  # the link
    ]
    # Directories come before what they hold (the kernel creates no parents).
    paths = [e.path for e in entries]
    for index, path in enumerate(paths):
        parent = path.rpartition("/")[0]
        assert not parent or paths.index(parent) < index, path


def test_nothing_is_carried_without_a_rootfs() -> None:
    m, data = manifest({"kernel": "vmlinuz", "initramfs": "initramfs.img"})
    assert carry_plan(m, data) == () and archive_size(()) == 0


def test_every_header_starts_on_a_four_byte_boundary() -> None:
    m, data = manifest({"kernel": "vmlinuz", "rootfs": "r.sqfs"})
    raw = archive(carry_plan(m, data))
    offset = 0
    while offset < len(raw):
        assert raw[offset : offset + 6] == b"070701", offset
        namesize = int(raw[offset + 94 : offset + 102], 16)
        filesize = int(raw[offset + 54 : offset + 62], 16)
        offset += 110 + namesize
        offset += len(padding(offset)) + filesize
        offset += len(padding(offset))
    assert offset == len(raw)


def test_padding() -> None:
    assert [len(padding(n)) for n in range(6)] == [0, 3, 2, 1, 0, 3]


def test_refuses_what_newc_cannot_hold() -> None:
    m, data = manifest({"kernel": "vmlinuz", "rootfs": "r.sqfs"}, {"rootfs": MAX_CARRIED_SIZE + 1})
    with pytest.raises(ValueError, match="too large to carry"):
        carry_plan(m, data)
    with pytest.raises(ValueError):
        header(Carried("phase/x", 0o100444, MAX_CARRIED_SIZE + 1), 1)


def test_the_memory_to_fetch_in_place_counts_what_is_held_at_the_peak() -> None:
    """phase-boot without --output checks, before the fetch: every fetched file, the initrd
    built beside them (only with a rootfs), kexec's two copies of what it loads; with
    --consume the initramfs and rootfs go once folded into that initrd."""
    from phase_client.boot.stage import (
        MEMORY_HEADROOM,
        boot_plan,
        memory_needed,
        memory_needed_in_place,
    )

    k, i, r = 10 << 20, 3 << 20, 100 << 20
    sizes = {"kernel": k, "initramfs": i, "rootfs": r}
    m, data = manifest({"kernel": "vmlinuz", "initramfs": "initramfs.img"}, sizes)
    plan = boot_plan(m, data)
    # Nothing carried: the fetched files are what kexec loads, held once, then copied twice.
    assert memory_needed_in_place(plan, m) == 3 * (k + i) + MEMORY_HEADROOM
    assert memory_needed_in_place(plan, m, consume=True) == 3 * (k + i) + MEMORY_HEADROOM
    m, data = manifest({"kernel": "vmlinuz", "initramfs": "i.img", "rootfs": "r.sqfs"}, sizes)
    plan = boot_plan(m, data)
    built = plan.initrd_size(m)
    assert built > k + i + r  # the initramfs, then an archive carrying every artifact
    loaded = k + built
    assert memory_needed_in_place(plan, m) == k + i + r + built + 2 * loaded + MEMORY_HEADROOM
    assert memory_needed_in_place(plan, m, consume=True) == 3 * loaded + MEMORY_HEADROOM
    # The same peak as --output --consume's copy, which counts from after its own fetch.
    assert memory_needed_in_place(plan, m, consume=True) == memory_needed(plan, m, consume=True) + (
        k + i + r
    )
