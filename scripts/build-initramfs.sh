#!/bin/sh
# Build the Phase Boot stage-1 initramfs (or the e2e stage-2 one) from Debian packages.
#
#   scripts/build-initramfs.sh --modules DIR --zipapp PYZ --keys DIR --output FILE
#   scripts/build-initramfs.sh --modules DIR --zipapp PYZ --root root.json --output FILE
#   scripts/build-initramfs.sh --stage2 --output FILE
#   ... --arch arm64 ...            the same for arm64, built on any host (no emulation)
#
# --modules DIR: lib/modules/<version> of the target kernel (scripts/fetch-kernel.sh unpacks it).
# --arch ARCH: x86_64 (default: this machine's) or arm64. For an arch other than this machine's,
# every binary comes from Debian's packages of that arch (apt-get download PKG:arm64, cached in
# --debs DIR, default build/boot/debs-<arch>; unpacked with dpkg-deb -x into a scratch sysroot;
# needs 'dpkg --add-architecture arm64; apt-get update' once, done here when run as root), the
# libraries each ELF file needs are read from its NEEDED entries (readelf), and the zipapp's
# native part for that machine is used. /etc/phase/boot.conf in the image records the arch
# and its serial console and boot modules (shell variables, for the init to read).
# --root FILE: the root of trust (docs/trust.md) baked as /etc/phase/keys/root.json, which the
# tools use instead of the *.pub keys (--keys is then optional; its keys are ignored at boot).
# Contents: busybox-static, kexec-tools and its libraries, Debian's python3.11 with its standard
# library as sourceless bytecode in /usr/lib/python3.11 (trimmed) and the lib-dynload modules
# the tools use (+ libssl/libcrypto for fast hashlib), the NIC drivers of the kernel, the zipapp
# unpacked in /usr/lib/phase/app with phase-boot/phase-verify/phase-fetch/phase-discover links
# to its launcher, kexec-boot, the trusted keys, and initramfs/init. Reproducible: fixed mtimes
# (SOURCE_DATE_EPOCH), sorted newc cpio, zstd -19.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
# shellcheck source=scripts/pack-cpio.sh
. "$here/pack-cpio.sh"
PY=/usr/bin/python3.11
MODULES="" ZIPAPP="" KEYS="" ROOT="" OUTPUT="" STAGE2=0 ARCH="" DEBS=""

die() { echo "build-initramfs: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --modules) MODULES=$2; shift ;;
        --zipapp) ZIPAPP=$2; shift ;;
        --keys) KEYS=$2; shift ;;
        --root) ROOT=$2; shift ;;
        --output) OUTPUT=$2; shift ;;
        --arch) ARCH=$2; shift ;;
        --debs) DEBS=$2; shift ;;
        --stage2) STAGE2=1 ;;
        -h | --help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (try --help)" ;;
    esac
    shift
done
[ -n "$OUTPUT" ] || die "--output is required"
if ! /bin/busybox --list >/dev/null 2>&1; then
    die "busybox-static is not installed"
fi
EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0)}

host_machine=$(uname -m)
case "${ARCH:-$host_machine}" in
    x86_64 | amd64) ARCH=x86_64 MACHINE=x86_64 DEB_ARCH=amd64 CONSOLE=ttyS0 ;;
    arm64 | aarch64) ARCH=arm64 MACHINE=aarch64 DEB_ARCH=arm64 CONSOLE=ttyAMA0 ;;
    *) die "unknown --arch $ARCH (x86_64 or arm64)" ;;
esac
TRIPLET=$MACHINE-linux-gnu
# Modules init loads before scanning the buses: none is needed on x86_64 (every NIC driver
# binds through the PCI/virtio/USB modaliases); on arm64 the same holds for QEMU's virt
# machine (pci-host-generic is built in, virtio_pci and virtio_net load by modalias), so the
# list names them only to be loaded early.
BOOT_MODULES=""
[ "$ARCH" = arm64 ] && BOOT_MODULES="virtio_pci virtio_net"
# The USB host controllers of arm64 boards are often platform devices, not PCI ones (the USB
# stick's state partition sits behind them): their glue drivers too, on arm64 only.
ARCH_MODULES=""
[ "$ARCH" = arm64 ] && ARCH_MODULES="kernel/drivers/usb/host/xhci-plat-hcd.ko
    kernel/drivers/usb/host/ehci-platform.ko kernel/drivers/usb/host/ohci-platform.ko
    kernel/drivers/usb/host/ohci-hcd.ko kernel/drivers/usb/host/ohci-pci.ko"
# Foreign: the binaries come from Debian's packages of that arch, unpacked into $SYSROOT.
FOREIGN=0
[ "$MACHINE" = "$host_machine" ] || FOREIGN=1
SYSROOT=""

root=$(mktemp -d "${OUTPUT}.root.XXXXXX")
trap 'rm -rf "$root" ${SYSROOT:+"$SYSROOT"}' EXIT INT TERM

# The package closure of $@ (Depends and Pre-Depends of $DEB_ARCH, recursively; arch-all and
# virtual packages hold no binaries and are left out), one name a line. Bounded: 200 packages.
deb_closure() {
    seen=" " todo="$*"
    # One apt-cache call per round (each call reads the whole package cache: ~1.5 s).
    for _round in 1 2 3 4 5 6 7 8 9 10; do
        [ -n "$todo" ] || break
        for pkg in $todo; do seen="$seen$pkg "; done
        # shellcheck disable=SC2046 # one word per package
        found=$(apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks \
            --no-replaces --no-enhances $(printf "%s:$DEB_ARCH\n" $todo) 2>/dev/null |
            sed -n "s/^ *|\{0,1\}\(Pre\)\{0,1\}Depends: \([a-z0-9][a-z0-9.+-]*\):$DEB_ARCH\$/\2/p" |
            sort -u)
        todo=""
        for pkg in $found; do
            case "$seen" in *" $pkg "*) ;; *) todo="$todo $pkg" ;; esac
        done
        [ "$(printf '%s' "$seen" | wc -w)" -le 200 ] || die "package closure of $* over 200 packages"
    done
    printf '%s\n' $seen | sort -u
}

# Unpack Debian's $DEB_ARCH packages $@ and what they depend on into $SYSROOT (downloaded once
# into $DEBS: a new version is a new file name).
make_sysroot() {
    DEBS=${DEBS:-$repo/build/boot/debs-$DEB_ARCH}
    mkdir -p "$DEBS"
    if ! apt-cache show "busybox-static:$DEB_ARCH" >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        dpkg --print-foreign-architectures | grep -qx "$DEB_ARCH" ||
            dpkg --add-architecture "$DEB_ARCH"
        apt-get update -qq >/dev/null 2>&1 || true
    fi
    apt-cache show "busybox-static:$DEB_ARCH" >/dev/null 2>&1 ||
        die "apt knows no $DEB_ARCH packages (as root: dpkg --add-architecture $DEB_ARCH; apt-get update)"
    pkgs=$(deb_closure "$@")
    # shellcheck disable=SC2046 # one word per package
    uris=$(apt-get download --print-uris $(printf '%s\n' $pkgs | sed "s/\$/:$DEB_ARCH/") 2>&1) ||
        die "apt-get download --print-uris failed: $(printf '%s\n' "$uris" | tail -n 1)"
    files=$(printf '%s\n' "$uris" | awk '/^\x27/{print $2}')
    missing=""
    for file in $files; do
        [ -f "$DEBS/$file" ] || missing="$missing $file"
    done
    if [ -n "$missing" ]; then
        fetch=$(mktemp -d "$DEBS/.download.XXXXXX")
        for file in $missing; do
            # busybox-static_1%3a1.35.0-4+deb12u1+b1_arm64.deb -> busybox-static:arm64=1:1.35...
            name=${file%%_*} rest=${file#*_}
            version=$(printf '%s' "${rest%_*}" | sed 's/%3a/:/g')
            printf '%s\n' "$name:$DEB_ARCH=$version"
        done >"$fetch/.want"
        # shellcheck disable=SC2046
        if ! (cd "$fetch" && apt-get download $(cat .want) 2>&1 |
            grep -v '^W: Download is performed unsandboxed' >&2); then
            :
        fi
        for file in $missing; do
            [ -f "$fetch/$file" ] || { rm -rf "$fetch"; die "apt-get download of $file failed"; }
            mv -f "$fetch/$file" "$DEBS/$file"
        done
        rm -rf "$fetch"
    fi
    SYSROOT=$(mktemp -d "${OUTPUT}.sysroot.XXXXXX")
    for file in $files; do
        dpkg-deb -x "$DEBS/$file" "$SYSROOT"
    done
}

# $1 (a path in the target's file system) with the links in $SYSROOT followed, as the
# target would follow them.
sysroot_path() {
    path=$1
    for _hop in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16; do
        [ -L "$SYSROOT$path" ] || break
        target=$(readlink "$SYSROOT$path")
        case "$target" in
            /*) path=$target ;;
            *) path=$(dirname "$path")/$target ;;
        esac
    done
    printf '%s\n' "$path"
}

# Copy a file to the same path under $root (following symlinks of the source): from the
# host, or from $SYSROOT for a foreign arch.
put() {
    mkdir -p "$root$(dirname "$1")"
    if [ "$FOREIGN" = 1 ]; then
        real=$SYSROOT$(sysroot_path "$1")
        [ -f "$real" ] || die "$1 is in none of the $DEB_ARCH packages"
        cp "$real" "$root$1"
    else
        cp -L "$1" "$root$1"
    fi
}

# The program interpreter and NEEDED libraries of ELF file $1 (read, never run: any arch),
# found in $SYSROOT's library directories, one target path a line.
elf_libs() {
    readelf -lW "$1" 2>/dev/null | sed -n 's/.*\[Requesting program interpreter: \(.*\)\]/\1/p'
    readelf -dW "$1" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | while read -r soname; do
        found=""
        for dir in /lib/$TRIPLET /usr/lib/$TRIPLET /lib /usr/lib; do
            if [ -e "$SYSROOT$dir/$soname" ] || [ -L "$SYSROOT$dir/$soname" ]; then
                found=$dir/$soname
                break
            fi
        done
        # A subshell cannot stop the build: the caller does, on this mark.
        printf '%s\n' "${found:-!$soname}"
    done
}

# Copy ELF file $1 (a path on the host, or in $SYSROOT for a foreign arch) to path $2 of the
# image (default: the same path) and every library the dynamic loader would map for it.
put_elf() {
    if [ "$FOREIGN" = 0 ]; then
        put "$1"
        ldd "$1" 2>/dev/null | awk '/=> \//{print $3} /^\t\/[^ ]+ \(/{print $1}' | while read -r lib; do
            [ -e "$root$lib" ] || put "$lib"
        done
        return 0
    fi
    path=${1#"$SYSROOT"}
    dest=${2:-$path}
    mkdir -p "$root$(dirname "$dest")"
    real=$SYSROOT$(sysroot_path "$path")
    [ -f "$real" ] || die "$path is in none of the $DEB_ARCH packages"
    cp "$real" "$root$dest"
    # Breadth-first over the libraries' own NEEDED entries, bounded by the number of files.
    queue=$dest
    for _round in 1 2 3 4 5 6 7 8; do
        [ -n "$queue" ] || break
        next=""
        for file in $queue; do
            for lib in $(elf_libs "$root$file"); do
                case "$lib" in "!"*) die "$file needs ${lib#!}, in none of the $DEB_ARCH packages" ;; esac
                [ -e "$root$lib" ] && continue
                put "$lib"
                next="$next $lib"
            done
        done
        queue=$next
    done
}

# The file the target would run as $1, in $SYSROOT (foreign) or on the host.
target_file() {
    if [ "$FOREIGN" = 1 ]; then
        printf '%s\n' "$SYSROOT$(sysroot_path "$1")"
    else
        readlink -f "$1"
    fi
}

install_busybox() {
    mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin"
    if [ "$FOREIGN" = 1 ]; then
        cp "$(target_file /bin/busybox)" "$root/bin/busybox"
        # The applet list of this machine's busybox-static (the foreign one cannot run here):
        # the same Debian version is built with the same configuration on every arch.
        want=$(dpkg-query -W -f '${Version}' busybox-static 2>/dev/null || true)
        have=$(ls "$DEBS" | sed -n "s/^busybox-static_\(.*\)_$DEB_ARCH\.deb\$/\1/p" | sed 's/%3a/:/g' | tail -n 1)
        [ "$want" = "$have" ] ||
            echo "build-initramfs: warning: busybox-static $want here, $have for $DEB_ARCH: applet links may differ" >&2
    else
        cp /bin/busybox "$root/bin/busybox"
    fi
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
    # What differs between arches, for the init (docs/boot.md): shell variable assignments.
    mkdir -p "$root/etc/phase"
    {
        echo "# Written by scripts/build-initramfs.sh --arch $ARCH"
        echo "PHASE_ARCH=$ARCH"
        echo "PHASE_CONSOLE=$CONSOLE"
        echo "PHASE_BOOT_MODULES=\"$BOOT_MODULES\""
    } >"$root/etc/phase/boot.conf"
}

if [ "$STAGE2" = 1 ]; then
    [ "$FOREIGN" = 0 ] || make_sysroot busybox-static
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
    command -v depmod >/dev/null || die "depmod is missing (apt-get install kmod)"
    if [ "$FOREIGN" = 1 ]; then
        command -v readelf >/dev/null || die "readelf is missing (apt-get install binutils)"
        make_sysroot busybox-static python3.11-minimal libpython3.11-minimal \
            libpython3.11-stdlib kexec-tools
        KEXEC=/sbin/kexec
        [ -f "$SYSROOT$KEXEC" ] || die "no $KEXEC in kexec-tools:$DEB_ARCH"
        STDLIB=$SYSROOT/usr/lib/python3.11
        # The bytecode is that of this machine's $PY: the same Python minor version.
        [ -f "$SYSROOT$PY" ] || die "no $PY in python3.11-minimal:$DEB_ARCH"
    else
        KEXEC=$(command -v kexec) || die "kexec is missing (apt-get install kexec-tools)"
        STDLIB=/usr/lib/python3.11
    fi

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
    put_elf "$KEXEC"

    # Python: interpreter, stdlib as a directory of sourceless bytecode (its os.pyc is getpath's
    # landmark for sys.prefix), the extension modules.
    put_elf "$PY"
    ln -s python3.11 "$root/usr/bin/python3"
    "$PY" -I "$here/pack-stdlib.py" "$STDLIB" "$root/usr/lib/python3.11"
    mkdir -p "$root/usr/lib/python3.11/lib-dynload"
    # What the client tools import (no _bz2/_lzma: nothing here reads such archives; no
    # _multibytecodec: the CJK codecs are not packed).
    for mod in _asyncio _contextvars _ctypes _hashlib _json _queue _ssl _uuid mmap resource \
        termios; do
        put_elf /usr/lib/python3.11/lib-dynload/$mod.cpython-311-$TRIPLET.so
    done

    # Phase tools.
    mkdir -p "$root/usr/lib/phase" "$root/usr/share/phase" "$root/etc/phase/keys"
    # The zipapp unpacked (its bytecode, this machine's native part, nothing of another's) and
    # its launcher, which the tools' links point at: no unpacking, no compiling at boot, and
    # imports from a directory (quicker than from a zip under emulation).
    "$PY" -I "$here/initramfs-zipapp.py" "$ZIPAPP" "$root/usr/lib/phase/phase" "$MACHINE" \
        "$root/usr/lib/phase/app" ||
        die "cannot put $ZIPAPP in the initramfs (scripts/build-zipapp.py --machines?)"
    for tool in phase-verify phase-fetch phase-discover phase-boot; do
        ln -s /usr/lib/phase/phase "$root/usr/bin/$tool"
    done
    # The libraries PyNaCl's and cffi's native modules link (libpthread for _cffi_backend).
    natives=$root/usr/lib/phase/app
    find "$natives" -name '*.so*' | grep -q . ||
        die "$ZIPAPP has no native part for $MACHINE (scripts/build-zipapp.py --machines)"
    for so in $(find "$natives" -name '*.so*' | sort); do
        if [ "$FOREIGN" = 1 ]; then
            for lib in $(elf_libs "$so"); do
                case "$lib" in "!"*) die "${so##*/} needs ${lib#!}, in none of the $DEB_ARCH packages" ;; esac
                [ -e "$root$lib" ] || put_elf "$lib"
            done
        else
            ldd "$so" | awk '/=> \//{print $3}' | while read -r lib; do
                [ -e "$root$lib" ] || put "$lib"
            done
        fi
    done
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
    # Debian's cloud kernels are for VMs (virtio, ena, gve, mana). Their Mellanox drivers serve
    # Azure's accelerated-networking VFs, which ride beside hv_netvsc (not packed either), and
    # take 3.6 MB, 1 MB compressed, of the 10 MB budget (docs/bench-boot.md): left out there.
    # The generic kernel's initramfs (the USB stick) keeps every NIC driver.
    SKIP_MODS='^$'
    case "$version" in *-cloud-*) SKIP_MODS='/ethernet/mellanox/' ;; esac
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
        $ARCH_MODULES -name '*.ko*' 2>/dev/null) | sort | grep -v "$SKIP_MODS" >"$root/.mods"
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
