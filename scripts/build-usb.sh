#!/bin/sh
# Build the Phase Boot USB stick image: one file that boots on UEFI (Secure Boot on or off) and,
# on x86_64, on legacy BIOS, without root and without loop devices (docs/usb.md).
#
#   scripts/build-usb.sh --kernel VMLINUZ --initramfs FILE --output IMG [options]
#
#   --kernel FILE      Debian's signed kernel (linux-image-<abi>-amd64 or -arm64: its vmlinuz is
#                      a PE with an Authenticode signature; a kernel without one is refused)
#   --initramfs FILE   the stage-1 initramfs (make initramfs / scripts/build-initramfs.sh)
#   --output IMG       the image to write (written to a temp file, then renamed into place)
#   --debs DIR         cache of Debian's shim-signed and grub-efi-<amd64|arm64>-signed packages
#                      (default: beside IMG; fetched with apt-get download when missing)
#   --cmdline WORDS    extra kernel command line words baked in grub.cfg (phase.cfg holds the
#                      ones a user edits)
#   --esp-mib N        EFI system partition size (default 128)
#   --state-mib N      state partition size (default 16)
#   --arch ARCH        x86_64 (default) or arm64 (aarch64)
#
# Layout (GPT, protective MBR): p1 BIOS boot (x86_64 only: GRUB core.img, boot.img in the MBR;
# on arm64 entry 1 stays empty), p2 EFI system partition FAT32 "PHASEBOOT" (shim, GRUB, kernel,
# initramfs, grub.cfg, phase.cfg), p3 ext4 "PHASE-STATE" (rollback state:
# phase.statedev=PARTUUID=<p3>); the same offsets on both arches. Reproducible: every UUID and
# serial is derived from the inputs' hashes, timestamps are SOURCE_DATE_EPOCH.
# Exit codes: 0 built, 1 a build step failed, 2 usage.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
KERNEL="" INITRAMFS="" OUTPUT="" DEBS="" CMDLINE="" ESP_MIB=128 STATE_MIB=16 ARCH=x86_64

die() { echo "build-usb: $*" >&2; exit 1; }
usage() { echo "build-usb: $* (try --help)" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --kernel | --initramfs | --output | --debs | --cmdline | --esp-mib | --state-mib | --arch)
            [ $# -ge 2 ] || usage "$1 needs a value" ;;
    esac
    case "$1" in
        --kernel) KERNEL=$2; shift ;;
        --initramfs) INITRAMFS=$2; shift ;;
        --output) OUTPUT=$2; shift ;;
        --debs) DEBS=$2; shift ;;
        --cmdline) CMDLINE=$2; shift ;;
        --esp-mib) ESP_MIB=$2; shift ;;
        --state-mib) STATE_MIB=$2; shift ;;
        --arch) ARCH=$2; shift ;;
        -h | --help) sed -n '2,/^# Exit codes/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) usage "unknown argument $1" ;;
    esac
    shift
done
[ -n "$OUTPUT" ] || usage "--output is required"
[ -f "$KERNEL" ] || usage "--kernel FILE is required (Debian's signed vmlinuz)"
[ -f "$INITRAMFS" ] || usage "--initramfs FILE is required (make initramfs)"
# What differs between arches: Debian's package arch, the removable-media boot file name UEFI
# looks for (\\EFI\\BOOT\\BOOT<arch>.EFI), the signed binaries' names, and BIOS (x86_64 only).
case "$ARCH" in
    x86_64 | amd64) ARCH=x86_64 DEB_ARCH=amd64 EFI_ARCH=x64 GRUB_DIR=x86_64-efi-signed BIOS=1 ;;
    arm64 | aarch64) ARCH=arm64 DEB_ARCH=arm64 EFI_ARCH=aa64 GRUB_DIR=arm64-efi-signed BIOS=0 ;;
    *) usage "--arch $ARCH: x86_64 or arm64" ;;
esac
case "$ESP_MIB$STATE_MIB" in *[!0-9]*) usage "--esp-mib/--state-mib take a number of MiB" ;; esac
tools="sfdisk mformat mcopy mkfs.ext4 dpkg-deb"
[ "$BIOS" = 0 ] || tools="$tools grub-mkimage"
for tool in $tools; do
    command -v "$tool" >/dev/null || die "$tool is missing (scripts/install-deps installs fdisk mtools e2fsprogs grub-pc-bin)"
done
GRUB_PC=/usr/lib/grub/i386-pc
[ "$BIOS" = 0 ] || [ -f "$GRUB_PC/boot.img" ] || die "$GRUB_PC is missing (apt-get install grub-pc-bin)"
DEBS=${DEBS:-$(dirname "$OUTPUT")/debs}
EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0)}
export SOURCE_DATE_EPOCH="$EPOCH" E2FSPROGS_FAKE_TIME="$EPOCH" MTOOLS_SKIP_CHECK=1 LC_ALL=C

# A Debian-signed kernel is a PE image with a certificate table (Authenticode signature).
if ! python3 -I -c 'import struct, sys
d = open(sys.argv[1], "rb").read(4096)
pe = struct.unpack_from("<I", d, 0x3C)[0]
magic = struct.unpack_from("<H", d, pe + 24)[0]
dirs = pe + 24 + (96 if magic == 0x10B else 112)
size = struct.unpack_from("<I", d, dirs + 4 * 8 + 4)[0]
sys.exit(0 if d[pe:pe + 4] == b"PE\0\0" and size > 0 else 1)' "$KERNEL" 2>/dev/null; then
    die "$KERNEL carries no signature: Secure Boot needs Debian's signed kernel (linux-image-<abi>-$DEB_ARCH, not -unsigned)"
fi

work=$(mktemp -d "${OUTPUT}.work.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

# Debian's signed shim and GRUB of $DEB_ARCH (apt-get download PACKAGE:ARCH, cached in DEBS by
# package version; a foreign arch needs 'dpkg --add-architecture arm64; apt-get update' once).
mkdir -p "$DEBS"
signed() { # signed PACKAGE PATH-IN-PACKAGE DEST
    deb=$(ls "$DEBS/$1"_*_"$DEB_ARCH".deb 2>/dev/null | sort | tail -n 1)
    if [ -z "$deb" ]; then
        (cd "$DEBS" && apt-get download "$1:$DEB_ARCH" 2>&1 | grep -v -e '^W: Download is performed unsandboxed' -e '^Get:' -e '^Fetched' >&2) || true
        deb=$(ls "$DEBS/$1"_*_"$DEB_ARCH".deb 2>/dev/null | sort | tail -n 1)
        [ -n "$deb" ] || die "apt-get download $1:$DEB_ARCH failed (apt-get update? is Debian's main archive configured? a foreign arch: dpkg --add-architecture $DEB_ARCH)"
    fi
    dpkg-deb --fsys-tarfile "$deb" | tar -xO ".$2" >"$3" || die "$deb holds no $2"
    basename "$deb" >>"$work/inputs"
}
: >"$work/inputs"
SHIM=$work/shim$EFI_ARCH.efi GRUB=$work/grub$EFI_ARCH.efi
signed shim-signed "/usr/lib/shim/shim$EFI_ARCH.efi.signed" "$SHIM"
signed "grub-efi-$DEB_ARCH-signed" "/usr/lib/grub/$GRUB_DIR/grub$EFI_ARCH.efi.signed" "$GRUB"

# Every identifier comes from the inputs: same inputs, same bytes; another kernel, initramfs or
# setting, other identifiers (two different sticks in one machine do not share a PARTUUID).
sha256sum "$KERNEL" "$INITRAMFS" "$SHIM" "$GRUB" | cut -d' ' -f1 >>"$work/inputs"
printf '%s\n' "$CMDLINE" "$ESP_MIB" "$STATE_MIB" "$EPOCH" >>"$work/inputs"
# (x86_64's inputs were these before arm64 came: its identifiers stay what they were.)
[ "$ARCH" = x86_64 ] || printf '%s\n' "$ARCH" >>"$work/inputs"
seed=$(sha256sum <"$work/inputs" | cut -c1-64)
uuid() { # a version-4-shaped UUID derived from the seed and a name
    printf '%s %s' "$seed" "$1" | sha256sum |
        sed 's/^\(.\{8\}\)\(.\{4\}\).\(.\{3\}\).\(.\{3\}\)\(.\{12\}\).*/\1-\2-4\3-8\4-\5/'
}
DISK_UUID=$(uuid disk) BIOS_UUID=$(uuid bios) ESP_UUID=$(uuid esp) STATE_UUID=$(uuid state)
FS_UUID=$(uuid state-fs) HASH_SEED=$(uuid state-hash)
FAT_SERIAL=$(printf '%s fat' "$seed" | sha256sum | cut -c1-8)

# Layout in 512-byte sectors, partitions aligned to 1 MiB. The same offsets and numbers on every
# arch: on arm64 (no legacy BIOS) the BIOS boot partition's MiB stays unused and GPT entry 1
# empty, so the ESP is p2 and the state p3 on every stick.
MIB=2048
BIOS_START=$MIB BIOS_SIZE=$MIB
ESP_START=$((BIOS_START + BIOS_SIZE)) ESP_SIZE=$((ESP_MIB * MIB))
STATE_START=$((ESP_START + ESP_SIZE)) STATE_SIZE=$((STATE_MIB * MIB))
TOTAL=$((STATE_START + STATE_SIZE + MIB)) # the last MiB holds the backup GPT

# grub.cfg: one for every firmware. UEFI: Debian's signed GRUB (x64 and aa64) has /EFI/debian
# as its prefix and sources $prefix/grub.cfg. BIOS: our core.img has the prefix
# (,gpt2)/EFI/debian. shim (BOOT<ARCH>.EFI) starts grub<arch>.efi from its own directory.
esp="$work/esp"
mkdir -p "$esp/EFI/BOOT" "$esp/EFI/debian" "$esp/boot"
EFI_BOOT=$(printf 'BOOT%s.EFI' "$EFI_ARCH" | tr '[:lower:]' '[:upper:]')
cp "$SHIM" "$esp/EFI/BOOT/$EFI_BOOT"
cp "$GRUB" "$esp/EFI/BOOT/grub$EFI_ARCH.efi"
cp "$KERNEL" "$esp/boot/vmlinuz"
cp "$INITRAMFS" "$esp/boot/initramfs.cpio.zst"
sed -e "s|@STATE_UUID@|$STATE_UUID|g" -e "s|@CMDLINE@|$CMDLINE|g" \
    "$repo/packaging/usb/grub.cfg" >"$esp/EFI/debian/grub.cfg"
cp "$repo/packaging/usb/phase.cfg" "$esp/phase.cfg"
find "$esp" -exec touch -h -d "@$EPOCH" {} +

need=$(du -s -B 1M "$esp" | cut -f1)
[ "$need" -lt $((ESP_MIB - 8)) ] || die "the ESP needs ${need} MiB: give --esp-mib more than $((need + 8))"

# The EFI system partition: FAT32 made and filled by mtools in a file.
truncate -s $((ESP_SIZE * 512)) "$work/esp.img"
mformat -i "$work/esp.img" -F -N "$FAT_SERIAL" -v PHASEBOOT -T "$ESP_SIZE" -h 64 -s 32 -H "$ESP_START" ::
mcopy -s -m -i "$work/esp.img" "$esp/EFI" "$esp/boot" "$esp/phase.cfg" ::/

# The state partition: an empty ext4 in a file (stage 1 makes phase/ on it at the first boot).
# Not mkfs.ext4 -d: it stamps the copied directories with the current time, whatever
# E2FSPROGS_FAKE_TIME says (e2fsprogs 1.47.0); an empty file system is reproducible.
mkfs.ext4 -q -F -L PHASE-STATE -U "$FS_UUID" -E "hash_seed=$HASH_SEED,root_owner=0:0" \
    -b 4096 "$work/state.img" "$((STATE_MIB * 256))" >/dev/null ||
    die "mkfs.ext4 failed"

# GRUB for BIOS (x86_64): boot.img in the MBR, core.img in the BIOS boot partition.
if [ "$BIOS" = 1 ]; then
    grub-mkimage -O i386-pc -o "$work/core.img" -p "(,gpt2)/EFI/debian" \
        biosdisk part_gpt part_msdos fat ext2 normal configfile linux echo test search \
        search_label search_fs_uuid serial terminal gzio all_video sleep
    core_size=$(wc -c <"$work/core.img")
    [ "$core_size" -le $((BIOS_SIZE * 512)) ] || die "core.img ($core_size bytes) does not fit"
fi

# Assemble: the partition table first (sfdisk on a file), then each partition in place.
# sfdisk takes a partition's number from the device name's trailing digits (disk.img2: p2).
img="$work/disk.img"
truncate -s $((TOTAL * 512)) "$img"
{
    printf '%s\n' "label: gpt" "label-id: $DISK_UUID" "unit: sectors" "first-lba: 2048"
    [ "$BIOS" = 0 ] ||
        echo "${img}1 : start=$BIOS_START, size=$BIOS_SIZE, type=21686148-6449-6E6F-744E-656564454649, uuid=$BIOS_UUID, name=\"BIOS boot\""
    echo "${img}2 : start=$ESP_START, size=$ESP_SIZE, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=$ESP_UUID, name=\"EFI system\""
    echo "${img}3 : start=$STATE_START, size=$STATE_SIZE, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=$STATE_UUID, name=\"phase-state\""
} | sfdisk -q --no-reread --no-tell-kernel "$img" >/dev/null || die "sfdisk failed"
dd if="$work/esp.img" of="$img" bs=512 seek="$ESP_START" conv=notrunc status=none
dd if="$work/state.img" of="$img" bs=512 seek="$STATE_START" conv=notrunc status=none
if [ "$BIOS" = 1 ]; then
    dd if="$work/core.img" of="$img" bs=512 seek="$BIOS_START" conv=notrunc status=none
    python3 -I "$here/usb-bios-boot.py" "$img" "$GRUB_PC/boot.img" "$BIOS_START" "$core_size" ||
        die "installing GRUB's boot sector failed"
fi

sync "$img" 2>/dev/null || true
chmod 0644 "$img"
mv -f "$img" "$OUTPUT"
echo "built $OUTPUT: $((TOTAL / MIB)) MiB (ESP $ESP_MIB MiB, ${need} MiB used; state $STATE_MIB MiB PARTUUID=$STATE_UUID)"
