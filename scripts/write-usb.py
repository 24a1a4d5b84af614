#!/usr/bin/python3
"""Write the USB stick image onto a stick, with the checks dd does not make (docs/usb.md).

    write-usb.py IMAGE TARGET [--yes] [--force]

TARGET is a whole disk (/dev/sdX, not a partition) or a regular file (a VM's or a BMC's
virtual media). A disk is refused when it or any of its partitions is mounted, used as swap or
held by device-mapper/RAID (LVM, LUKS: so never the system disk), when it is smaller than
IMAGE, and, without --force, when it is neither removable nor on USB. Then it asks (type
"yes"; --yes does not ask), writes in 4 MiB blocks with a progress line, syncs, drops the
target's page cache, reads the written bytes back and compares their sha256 with IMAGE's.

Exit codes: 0 written and verified, 1 refused or failed (one line), 2 usage, 3 the bytes read
back differ from IMAGE.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import stat
import sys
import time
from pathlib import Path

BLOCK = 4 * 1024 * 1024


class Refused(Exception):
    pass


def disk_problems(name: str, sysfs: Path, mountinfo: str, swaps: str, size: int) -> list[str]:
    """Why the disk ``name`` (sysfs: /sys/class/block) must not be written with ``size`` bytes;
    pure but for reading ``sysfs``. Empty when it may be written."""
    dev = sysfs / name
    if (dev / "partition").exists():
        return [f"/dev/{name} is a partition: give the whole disk"]
    problems = []
    parts = [p.name for p in dev.iterdir() if (p / "partition").exists()] if dev.is_dir() else []
    numbers = {}
    for node in [name, *parts]:
        try:
            numbers[(sysfs / node / "dev").read_text().strip()] = node
        except OSError:
            continue
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[2] in numbers:
            problems.append(f"/dev/{numbers[fields[2]]} is mounted on {fields[4]}")
    for node in numbers.values():  # LVM, LUKS, RAID: the mount shows dm-N or mdN, not sdX
        holders = sysfs / node / "holders"
        users = sorted(h.name for h in holders.iterdir()) if holders.is_dir() else []
        if users:
            problems.append(f"/dev/{node} is in use by {', '.join(users)}")
    for line in swaps.splitlines()[1:]:
        used = line.split()[0].removeprefix("/dev/") if line.split() else ""
        if used in numbers.values():
            problems.append(f"/dev/{used} is in use as swap")
    try:
        sectors = int((dev / "size").read_text())
    except (OSError, ValueError):
        sectors = 0
    if sectors * 512 < size:
        problems.append(f"/dev/{name} holds {sectors * 512} bytes, the image {size}")
    return problems


def looks_removable(name: str, sysfs: Path) -> bool:
    """A removable medium, or a disk whose device path runs through USB."""
    try:
        if (sysfs / name / "removable").read_text().strip() == "1":
            return True
    except OSError:
        pass
    return "/usb" in os.path.realpath(sysfs / name)


def describe(name: str, sysfs: Path) -> str:
    model = ""
    for part in ("vendor", "model"):
        with contextlib.suppress(OSError):
            model += (sysfs / name / "device" / part).read_text().strip() + " "
    try:
        size = int((sysfs / name / "size").read_text()) * 512
    except (OSError, ValueError):
        size = 0
    return f"/dev/{name} ({model.strip() or 'unknown model'}, {size / 1e9:.1f} GB)"


def copy(image: Path, target: str, size: int) -> None:
    """Write, with a progress line on stderr at most once a second, then fsync."""
    done = 0
    last = 0.0
    with image.open("rb") as src:
        fd = os.open(target, os.O_WRONLY | os.O_CLOEXEC)
        try:
            while chunk := src.read(BLOCK):
                os.write(fd, chunk)
                done += len(chunk)
                if time.monotonic() - last >= 1 or done == size:
                    last = time.monotonic()
                    print(f"\rwrite-usb: {done >> 20} of {size >> 20} MiB", end="", file=sys.stderr)
            os.fsync(fd)
        finally:
            os.close(fd)
    print(file=sys.stderr)


def sha256_of(path: str, size: int) -> str:
    """The sha256 of the first ``size`` bytes; the page cache of ``path`` dropped first, so that
    a disk's bytes are read from the disk, not from what was just written to memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        left = size
        while left and (chunk := f.read(min(BLOCK, left))):
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="write-usb.py",
        description="Write the USB stick image onto a stick: refuses a mounted or too small "
        "disk, asks, shows progress, syncs, verifies by reading back (docs/usb.md).",
        epilog="Exit codes: 0 written and verified, 1 refused or failed, 2 usage, "
        "3 the bytes read back differ.",
    )
    parser.add_argument("image", type=Path, help="build/phase-usb-<arch>.img")
    parser.add_argument("target", help="a whole disk (/dev/sdX) or a regular file")
    parser.add_argument("--yes", action="store_true", help="do not ask before writing")
    parser.add_argument(
        "--force", action="store_true", help="write a disk that is neither removable nor on USB"
    )
    args = parser.parse_args(argv)
    try:
        size = args.image.stat().st_size
        mode = os.stat(args.target).st_mode
    except OSError as exc:
        print(f"write-usb: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    if stat.S_ISBLK(mode):
        sysfs = Path("/sys/class/block")
        name = os.path.basename(os.path.realpath(args.target))
        problems = disk_problems(
            name,
            sysfs,
            Path("/proc/self/mountinfo").read_text(),
            Path("/proc/swaps").read_text(),
            size,
        )
        if not problems and not args.force and not looks_removable(name, sysfs):
            problems.append(f"/dev/{name} is not removable and not on USB (--force if you mean it)")
        if problems:
            print(f"write-usb: refusing: {'; '.join(problems)}", file=sys.stderr)
            return 1
        what = describe(name, sysfs)
    elif stat.S_ISREG(mode):
        what = f"the file {args.target}"
    else:
        print(f"write-usb: {args.target} is neither a disk nor a regular file", file=sys.stderr)
        return 1
    if not args.yes:
        print(f"Write {args.image} ({size >> 20} MiB) over {what}? Everything on it is lost.")
        print('Type "yes" to go on: ', end="", flush=True)
        if sys.stdin.readline().strip() != "yes":
            print('write-usb: not written (no "yes")', file=sys.stderr)
            return 1
    try:
        copy(args.image, args.target, size)
        os.sync()
        want, got = sha256_of(str(args.image), size), sha256_of(args.target, size)
    except OSError as exc:
        print(f"write-usb: {args.target}: {exc.strerror}", file=sys.stderr)
        return 1
    if got != want:
        print(f"write-usb: read back sha256 {got}, the image's is {want}", file=sys.stderr)
        return 3
    print(f"written and verified: {size} bytes, sha256 {want}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
