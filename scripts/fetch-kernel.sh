#!/bin/sh
# Get Debian's cloud kernel (apt-get download, from the configured Debian archive) and unpack it.
#
#   scripts/fetch-kernel.sh [DIR]                 x86_64 (default DIR build/boot/kernel)
#   ARCH=arm64 scripts/fetch-kernel.sh [DIR]      arm64  (default DIR build/boot/kernel-arm64)
#
# Leaves DIR/vmlinuz, DIR/modules/<version>/ (lib/modules of the package) and DIR/version.
# Cached: does nothing when DIR/vmlinuz exists. Override the package with KERNEL_PACKAGE=name.
# ARCH (x86_64/amd64 or arm64/aarch64) picks linux-image-cloud-<arch>'s current ABI package; a
# foreign one needs its architecture known to dpkg: as root this adds it
# (dpkg --add-architecture arm64; apt-get update) when apt has no arm64 lists yet.
# No emulation: the package is only unpacked (dpkg-deb -x). Exit 0 done, 1 failure, 2 bad ARCH.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
case "${ARCH:-x86_64}" in
    x86_64 | amd64) deb_arch=amd64 default=kernel ;;
    arm64 | aarch64) deb_arch=arm64 default=kernel-arm64 ;;
    *) echo "fetch-kernel: unknown ARCH '${ARCH}' (x86_64 or arm64)" >&2; exit 2 ;;
esac
case "${1:-}" in
    -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
dir=${1:-$(dirname "$here")/build/boot/$default}
[ -f "$dir/vmlinuz" ] && [ -f "$dir/version" ] && exit 0
mkdir -p "$dir"
host_arch=$(dpkg --print-architecture)
# apt names a foreign architecture's packages name:arch.
qual=""
[ "$deb_arch" = "$host_arch" ] || qual=":$deb_arch"
pkg=${KERNEL_PACKAGE:-}
if [ -z "$pkg" ]; then
    # The metapackage names the current ABI: linux-image-cloud-amd64 -> linux-image-6.1.0-N-cloud-amd64.
    abi() {
        apt-cache depends "linux-image-cloud-$deb_arch$qual" 2>/dev/null |
            sed -n "s/^ *Depends: \(linux-image-[0-9].*-cloud-$deb_arch\)\(:$deb_arch\)\{0,1\}\$/\1/p" |
            head -n 1
    }
    pkg=$(abi)
    # A fresh machine may have empty package lists, or none for a foreign arch: read them once.
    if [ -z "$pkg" ] && [ "$(id -u)" = 0 ]; then
        if [ -n "$qual" ] && ! dpkg --print-foreign-architectures | grep -qx "$deb_arch"; then
            dpkg --add-architecture "$deb_arch"
        fi
        apt-get update -qq >/dev/null 2>&1 || true
        pkg=$(abi)
    fi
    [ -n "$pkg" ] || {
        echo "fetch-kernel: no linux-image-cloud-$deb_arch in apt's lists (as root: ${qual:+dpkg --add-architecture $deb_arch; }apt-get update)" >&2
        exit 1
    }
fi
if ! ls "$dir"/"$pkg"_*.deb >/dev/null 2>&1; then
    (cd "$dir" && apt-get download "$pkg$qual" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2) || true
fi
deb=$(ls "$dir"/"$pkg"_*.deb 2>/dev/null | head -n 1)
[ -n "$deb" ] || { echo "fetch-kernel: apt-get download $pkg$qual failed" >&2; exit 1; }
rm -rf "$dir/x" "$dir/modules"
dpkg-deb -x "$deb" "$dir/x"
version=$(ls "$dir/x/lib/modules" | head -n 1)
mkdir -p "$dir/modules"
mv "$dir/x/lib/modules/$version" "$dir/modules/$version"
cp "$dir/x/boot/vmlinuz-$version" "$dir/vmlinuz.tmp"
[ -f "$dir/x/boot/config-$version" ] && cp "$dir/x/boot/config-$version" "$dir/config"
rm -rf "$dir/x"
echo "$version" >"$dir/version"
mv "$dir/vmlinuz.tmp" "$dir/vmlinuz"
echo "kernel $version ($deb_arch) in $dir"
