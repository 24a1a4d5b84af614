#!/bin/sh
# Build the Phase Boot stage-1 initramfs (or the e2e stage-2 one) from Debian packages.
#
#   scripts/build-initramfs.sh --modules DIR --zipapp PYZ --keys DIR --output FILE
#   scripts/build-initramfs.sh --modules DIR --zipapp PYZ --root root.json --output FILE
#   scripts/build-initramfs.sh --stage2 --output FILE
#
# --modules DIR: lib/modules/<version> of the target kernel (scripts/fetch-kernel.sh unpacks it).
# --root FILE: the root of trust (docs/trust.md) baked as /etc/phase/keys/root.json, which the
# tools use instead of the *.pub keys (--keys is then optional; its keys are ignored at boot).
# Contents: busybox-static, kexec-tools and its libraries, Debian's python3.11 with its standard
# library as sourceless bytecode in /usr/lib/python311.zip (trimmed) and the lib-dynload modules
# the tools use (+ libssl/libcrypto for fast hashlib), the NIC drivers of the kernel, the zipapp
# with phase-verify/phase-fetch/phase-discover links, kexec-boot, the trusted keys, and
# initramfs/init. Reproducible: fixed mtimes (SOURCE_DATE_EPOCH), sorted newc cpio, gzip -n.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
# shellcheck source=scripts/pack-cpio.sh
. "$here/pack-cpio.sh"
PY=/usr/bin/python3.11
MODULES="" ZIPAPP="" KEYS="" ROOT="" OUTPUT="" STAGE2=0

die() { echo "build-initramfs: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --modules) MODULES=$2; shift ;;
        --zipapp) ZIPAPP=$2; shift ;;
        --keys) KEYS=$2; shift ;;
        --root) ROOT=$2; shift ;;
        --output) OUTPUT=$2; shift ;;
        --stage2) STAGE2=1 ;;
        -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (try --help)" ;;
    esac
    shift
done
[ -n "$OUTPUT" ] || die "--output is required"
if ! /bin/busybox --list >/dev/null 2>&1; then
    die "busybox-static is not installed"
fi
EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0)}

root=$(mktemp -d "${OUTPUT}.root.XXXXXX")
trap 'rm -rf "$root"' EXIT INT TERM

# Copy a file to the same path under $root (following symlinks of the source).
put() {
    mkdir -p "$root$(dirname "$1")"
    cp -L "$1" "$root$1"
}

# Copy a binary or shared object and every library the dynamic loader would map for it.
put_elf() {
    put "$1"
    ldd "$1" 2>/dev/null | awk '/=> \//{print $3} /^\t\/[^ ]+ \(/{print $1}' | while read -r lib; do
        [ -e "$root$lib" ] || put "$lib"
    done
}

install_busybox() {
    mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin"
    cp /bin/busybox "$root/bin/busybox"
    for applet in $(/bin/busybox --list-full); do
        [ -e "$root/$applet" ] || [ -L "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
    done
}

base_layout() {
    mkdir -p "$root/dev" "$root/proc" "$root/sys" "$root/run" "$root/tmp" "$root/etc" \
        "$root/root" "$root/mnt" "$root/var/log"
    chmod 1777 "$root/tmp"
    mknod -m 600 "$root/dev/console" c 5 1
    mknod -m 666 "$root/dev/null" c 1 3
    echo "root:x:0:0:root:/root:/bin/sh" >"$root/etc/passwd"
    echo "root:x:0:" >"$root/etc/group"
}

if [ "$STAGE2" = 1 ]; then
    install_busybox
    base_layout
    install -m 0755 "$repo/initramfs/stage2-init" "$root/init"
else
    [ -d "$MODULES" ] || die "--modules DIR (lib/modules/<version>) is required"
    [ -f "$ZIPAPP" ] || die "--zipapp FILE is required (make zipapp)"
    if [ -n "$ROOT" ]; then
        [ -f "$ROOT" ] || die "--root $ROOT is not a file"
        [ -z "$KEYS" ] || [ -d "$KEYS" ] || die "--keys $KEYS is not a directory"
    else
        [ -d "$KEYS" ] || die "--keys DIR with the trusted *.pub keys (or --root FILE) is required"
        ls "$KEYS"/*.pub >/dev/null 2>&1 || die "no *.pub key in $KEYS"
    fi
    [ -x "$PY" ] || die "$PY is missing (apt-get install python3.11-minimal libpython3.11-stdlib)"
    command -v kexec >/dev/null || die "kexec is missing (apt-get install kexec-tools)"
    command -v depmod >/dev/null || die "depmod is missing (apt-get install kmod)"

    # The zipapp's bytecode must be that of the initramfs' Python (its __main__ names it).
    if ! "$PY" -I -c 'import sys, zipfile, importlib.util
main = zipfile.ZipFile(sys.argv[1]).read("__main__.py").decode()
magic = importlib.util.MAGIC_NUMBER.hex()
sys.exit(0 if magic in main or "if \"\" and" in main else 1)' "$ZIPAPP"; then
        die "$ZIPAPP holds bytecode of another Python than $PY: build it with Python 3.11"
    fi

    install_busybox
    base_layout

    # kexec-tools (Debian's links the Xen libraries: put_elf copies whatever ldd lists).
    put_elf "$(command -v kexec)"

    # Python: interpreter, stdlib as one zip of sourceless bytecode, the extension modules.
    put_elf "$PY"
    ln -s python3.11 "$root/usr/bin/python3"
    "$PY" -I "$here/pack-stdlib.py" /usr/lib/python3.11 "$root/usr/lib/python311.zip"
    # getpath's landmark for sys.prefix (the modules themselves come from the zip).
    mkdir -p "$root/usr/lib/python3.11/lib-dynload"
    "$PY" -I -c 'import py_compile, sys; py_compile.compile(sys.argv[1], cfile=sys.argv[2], dfile="os.py", invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)' \
        /usr/lib/python3.11/os.py "$root/usr/lib/python3.11/os.pyc"
    for mod in _asyncio _bz2 _contextvars _ctypes _hashlib _json _lzma _multibytecodec \
        _posixshmem _queue _ssl _uuid mmap resource termios; do
        put_elf /usr/lib/python3.11/lib-dynload/$mod.cpython-311-x86_64-linux-gnu.so
    done

    # Phase tools.
    mkdir -p "$root/usr/lib/phase" "$root/usr/share/phase" "$root/etc/phase/keys"
    install -m 0755 "$ZIPAPP" "$root/usr/lib/phase/phase.pyz"
    for tool in phase-verify phase-fetch phase-discover phase-boot; do
        ln -s /usr/lib/phase/phase.pyz "$root/usr/bin/$tool"
    done
    # The libraries PyNaCl's and cffi's native modules link (libpthread for _cffi_backend).
    natives=$(mktemp -d)
    "$PY" -I -c 'import sys, zipfile
zf = zipfile.ZipFile(sys.argv[1])
for name in zf.namelist():
    if name.startswith("_native/" + sys.argv[3] + "/") and ".so" in name:
        zf.extract(name, sys.argv[2])' "$ZIPAPP" "$natives" x86_64
    for so in $(find "$natives" -name '*.so*' | sort); do
        ldd "$so" | awk '/=> \//{print $3}' | while read -r lib; do
            [ -e "$root$lib" ] || put "$lib"
        done
    done
    rm -rf "$natives"
    install -m 0755 "$repo/initramfs/kexec-boot" "$root/usr/bin/kexec-boot"
    install -m 0755 "$repo/initramfs/udhcpc.script" "$root/usr/share/phase/udhcpc.script"
    for key in ${KEYS:+"$KEYS"/*.pub}; do
        [ -e "$key" ] && install -m 0644 "$key" "$root/etc/phase/keys/"
    done
    # The root of trust: phase-fetch and kexec-boot's phase-verify take --keys-dir
    # /etc/phase/keys, and a root.json there is the trust (docs/trust.md).
    if [ -n "$ROOT" ]; then
        install -m 0644 "$ROOT" "$root/etc/phase/keys/root.json"
    fi
    install -m 0755 "$repo/initramfs/init" "$root/init"

    # NIC drivers (every ethernet, USB ethernet and virtio module of the kernel) and what a
    # phase.statedev disk may need (virtio/nvme/USB storage, xhci/ehci, ext4/vfat, crc32c), with
    # whatever they depend on; the paths a kernel builds in or lacks are skipped.
    version=$(basename "$MODULES")
    kmods="$root/lib/modules/$version"
    mkdir -p "$kmods"
    (cd "$MODULES" && find kernel/drivers/net/ethernet kernel/drivers/virtio \
        kernel/drivers/net/virtio_net.ko kernel/drivers/net/net_failover.ko \
        kernel/net/core/failover.ko kernel/drivers/block/virtio_blk.ko \
        kernel/drivers/nvme/host/nvme.ko kernel/drivers/nvme/host/nvme-core.ko \
        kernel/drivers/usb/storage kernel/drivers/scsi/sd_mod.ko \
        kernel/drivers/usb/host/xhci-pci.ko kernel/drivers/usb/host/xhci-hcd.ko \
        kernel/drivers/usb/host/ehci-pci.ko kernel/drivers/usb/host/ehci-hcd.ko \
        kernel/drivers/net/usb kernel/fs/ext4 kernel/fs/fat/vfat.ko \
        kernel/fs/nls/nls_cp437.ko kernel/fs/nls/nls_ascii.ko \
        kernel/crypto/crc32c_generic.ko kernel/arch/x86/crypto/crc32c-intel.ko \
        -name '*.ko*' 2>/dev/null) | sort >"$root/.mods"
    while read -r mod; do
        mkdir -p "$kmods/$(dirname "$mod")"
        cp "$MODULES/$mod" "$kmods/$mod"
    done <"$root/.mods"
    rm -f "$root/.mods"
    for f in modules.builtin modules.builtin.modinfo modules.order; do
        [ -f "$MODULES/$f" ] && cp "$MODULES/$f" "$kmods/"
    done
    # Pull in dependencies outside those trees until nothing is missing.
    for _round in 1 2 3 4; do
        need=$(find "$kmods" -name '*.ko*' -exec modinfo -F depends {} + |
            tr ',' '\n' | sort -u | while read -r dep; do
                [ -n "$dep" ] || continue
                find "$kmods" -name "$dep.ko*" | grep -q . || echo "$dep"
            done)
        [ -z "$need" ] && break
        for dep in $need; do
            src=$(cd "$MODULES" && find kernel -name "$dep.ko*" | head -n 1)
            [ -n "$src" ] || die "module $dep not found in $MODULES"
            mkdir -p "$kmods/$(dirname "$src")"
            cp "$MODULES/$src" "$kmods/$src"
        done
    done
    depmod -b "$root" "$version"
fi

pack_cpio "$root" "$EPOCH" "$OUTPUT"
