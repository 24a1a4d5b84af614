#!/usr/bin/python3
"""Install GRUB's i386-pc boot sector into a GPT disk image whose BIOS boot partition already
holds core.img: what grub-bios-setup does for an embedded core, on a file, without root.

    usb-bios-boot.py IMAGE BOOT_IMG CORE_LBA CORE_SIZE

- MBR bytes 0-439 become boot.img's code, with the BIOS parameter block area (0x03-0x59) kept
  from the image, the LBA of core.img's first sector at 0x5c and the drive check enabled
  (0x66 = two NOPs, as grub-bios-setup does for hard disks); the disk signature and the
  partition table (0x1b8 onwards) stay as sfdisk wrote them, with the protective partition
  marked active (some BIOSes boot only a disk with an active partition; UEFI ignores the flag).
- core.img's first sector (diskboot.img) gets its block list: core.img's remaining sectors
  start at CORE_LBA + 1 (grub-mkimage already wrote their count).

Exit codes: 0 done, 1 the image or boot.img is not what is expected, 2 usage.
"""

from __future__ import annotations

import os
import struct
import sys

SECTOR = 512
BPB_START, BPB_END = 0x03, 0x5A
KERNEL_SECTOR = 0x5C
DRIVE_CHECK = 0x66
NT_MAGIC = 0x1B8
PART_START = 0x1BE
BLOCKLIST = SECTOR - 12  # start (u64), len (u16), segment (u16)


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0
    if len(argv) != 5:
        print(
            "usb-bios-boot: usage: IMAGE BOOT_IMG CORE_LBA CORE_SIZE (try --help)", file=sys.stderr
        )
        return 2
    image, boot_img = argv[1], argv[2]
    core_lba, core_size = int(argv[3]), int(argv[4])
    with open(boot_img, "rb") as f:
        boot = bytearray(f.read())
    if len(boot) != SECTOR or boot[510:512] != b"\x55\xaa":
        print(f"usb-bios-boot: {boot_img} is not GRUB's boot.img", file=sys.stderr)
        return 1
    fd = os.open(image, os.O_RDWR)
    try:
        mbr = os.pread(fd, SECTOR, 0)
        if mbr[510:512] != b"\x55\xaa" or mbr[PART_START + 4] != 0xEE:
            print(f"usb-bios-boot: {image} has no protective MBR (sfdisk first)", file=sys.stderr)
            return 1
        first = bytearray(os.pread(fd, SECTOR, core_lba * SECTOR))
        sectors = (core_size + SECTOR - 1) // SECTOR
        _start, length, _segment = struct.unpack_from("<QHH", first, BLOCKLIST)
        if length != sectors - 1:
            print(f"usb-bios-boot: no core.img at sector {core_lba}", file=sys.stderr)
            return 1
        struct.pack_into("<Q", first, BLOCKLIST, core_lba + 1)
        boot[BPB_START:BPB_END] = mbr[BPB_START:BPB_END]
        struct.pack_into("<Q", boot, KERNEL_SECTOR, core_lba)
        boot[DRIVE_CHECK : DRIVE_CHECK + 2] = b"\x90\x90"
        boot[NT_MAGIC:] = mbr[NT_MAGIC:]
        boot[PART_START] = 0x80
        os.pwrite(fd, bytes(first), core_lba * SECTOR)
        os.pwrite(fd, bytes(boot), 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
