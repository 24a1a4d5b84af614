#!/bin/sh
# Build the OS image's own early userspace (initramfs.img) from its root filesystem tree.
#
#   scripts/build-os-initramfs.sh --root DIR --kernel-version VER --output FILE [--init FILE]
#
# --root DIR: the image's root tree (mmdebstrap's output, with busybox-static and the kernel's
# /usr/lib/modules/VER installed), so busybox and the modules are those of the image's arch.
# Contents: busybox (all applets as links), the squashfs, overlay and loop modules of kernel VER
# with everything modules.dep says they need (`depmod -b` rebuilds modules.dep), /dev/console,
# and initramfs/os-init as /init. Reproducible: mtimes SOURCE_DATE_EPOCH (required), sorted
# newc cpio, zstd (scripts/pack-cpio.sh); the file is padded with zeros to a multiple of 4 bytes so a newc cpio
# appended to it (the rootfs) starts where the kernel's cpio parser expects a header.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
# shellcheck source=scripts/pack-cpio.sh
. "$here/pack-cpio.sh"
ROOT="" KVER="" OUTPUT="" INIT="$repo/initramfs/os-init"
# Filesystems and devices the init needs to mount the root (modules, when not built in).
MODULES="squashfs overlay loop"

die() { echo "build-os-initramfs: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT=$2; shift ;;
        --kernel-version) KVER=$2; shift ;;
        --output) OUTPUT=$2; shift ;;
        --init) INIT=$2; shift ;;
        -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (try --help)" ;;
    esac
    shift
done
{ [ -n "$ROOT" ] && [ -n "$KVER" ] && [ -n "$OUTPUT" ]; } || die "--root, --kernel-version and --output are required"
[ -n "${SOURCE_DATE_EPOCH:-}" ] || die "SOURCE_DATE_EPOCH is not set"
[ -f "$INIT" ] || die "no init script at $INIT"
BUSYBOX="$ROOT/usr/bin/busybox"
[ -f "$BUSYBOX" ] || BUSYBOX="$ROOT/bin/busybox"
[ -f "$BUSYBOX" ] || die "no busybox in $ROOT (install busybox-static in the image)"
MODDIR="$ROOT/usr/lib/modules/$KVER"
[ -d "$MODDIR" ] || MODDIR="$ROOT/lib/modules/$KVER"
[ -f "$MODDIR/modules.dep" ] || die "no modules.dep for kernel $KVER in $ROOT"
command -v depmod >/dev/null || die "depmod is missing (apt-get install kmod)"
command -v cpio >/dev/null || die "cpio is missing (apt-get install cpio)"

work=$(mktemp -d "${OUTPUT}.root.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

# busybox: the binary and one link per applet (it is static: no libraries to copy).
mkdir -p "$work/bin" "$work/sbin" "$work/usr/bin" "$work/usr/sbin"
cp "$BUSYBOX" "$work/bin/busybox"
chmod 0755 "$work/bin/busybox"
# The applets the init and a rescue shell use. Checked against the binary's own list when it
# runs here (same arch); a foreign-arch busybox-static has them all too (Debian's full build).
applets="sh ash mount umount switch_root chroot modprobe insmod lsmod mkdir cat cut grep \
    sha256sum setsid cttyhack ls ps dmesg echo printf sleep poweroff reboot mdev tr ln cp mv rm \
    vi less losetup uname df free find head tail wc sync awk"
list=$("$BUSYBOX" --list 2>/dev/null || true)
for applet in $applets; do
    if [ -n "$list" ] && ! printf '%s\n' "$list" | grep -qx "$applet"; then
        die "busybox in $ROOT has no $applet applet"
    fi
    ln -s busybox "$work/bin/$applet"
done

mkdir -p "$work/dev" "$work/proc" "$work/sys" "$work/run" "$work/phase" "$work/root" "$work/etc"
mknod -m 600 "$work/dev/console" c 5 1
mknod -m 666 "$work/dev/null" c 1 3
echo "root:x:0:0:root:/root:/bin/sh" >"$work/etc/passwd"
echo "root:x:0:" >"$work/etc/group"
install -m 0755 "$INIT" "$work/init"

# Modules (a module built into the kernel has no file: modules.builtin lists it), and their
# dependencies, transitively (modules.dep lists the full closure on each line).
kmods="$work/lib/modules/$KVER"
mkdir -p "$kmods"
for f in modules.builtin modules.builtin.modinfo modules.order; do
    [ -f "$MODDIR/$f" ] && cp "$MODDIR/$f" "$kmods/"
done
for mod in $MODULES; do
    line=$(grep -E "(^|/)$mod\.ko(\.[a-z]+)?:" "$MODDIR/modules.dep" || true)
    if [ -z "$line" ]; then
        grep -Eq "(^|/)$mod\.ko(\.[a-z]+)?\$" "$MODDIR/modules.builtin" 2>/dev/null ||
            echo "build-os-initramfs: warning: kernel $KVER has no $mod (neither module nor built in)" >&2
        continue
    fi
    for file in $(printf '%s\n' "$line" | tr -d ':'); do
        mkdir -p "$kmods/$(dirname "$file")"
        cp "$MODDIR/$file" "$kmods/$file"
    done
done
depmod -b "$work" "$KVER"

pack_cpio "$work" "$SOURCE_DATE_EPOCH" "$OUTPUT"
