#!/bin/sh
# Get Debian's cloud kernel (apt-get download, from the configured Debian archive) and unpack it.
#
#   scripts/fetch-kernel.sh [DIR]        (default build/boot/kernel)
#
# Leaves DIR/vmlinuz, DIR/modules/<version>/ (lib/modules of the package) and DIR/version.
# Cached: does nothing when DIR/vmlinuz exists. Override the package with KERNEL_PACKAGE=name.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dir=${1:-$(dirname "$here")/build/boot/kernel}
[ -f "$dir/vmlinuz" ] && [ -f "$dir/version" ] && exit 0
mkdir -p "$dir"
pkg=${KERNEL_PACKAGE:-}
if [ -z "$pkg" ]; then
    # The metapackage names the current ABI: linux-image-cloud-amd64 -> linux-image-6.1.0-N-cloud-amd64.
    abi() {
        apt-cache depends linux-image-cloud-amd64 2>/dev/null |
            sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' | head -n 1
    }
    pkg=$(abi)
    # A fresh machine may have empty package lists: read them once.
    if [ -z "$pkg" ] && [ "$(id -u)" = 0 ]; then
        apt-get update -qq >/dev/null 2>&1 || true
        pkg=$(abi)
    fi
    [ -n "$pkg" ] || { echo "fetch-kernel: no linux-image-cloud-amd64 in apt's lists (apt-get update?)" >&2; exit 1; }
fi
if ! ls "$dir"/"$pkg"_*.deb >/dev/null 2>&1; then
    (cd "$dir" && apt-get download "$pkg" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2) || true
fi
deb=$(ls "$dir"/"$pkg"_*.deb 2>/dev/null | head -n 1)
[ -n "$deb" ] || { echo "fetch-kernel: apt-get download $pkg failed" >&2; exit 1; }
rm -rf "$dir/x" "$dir/modules"
dpkg-deb -x "$deb" "$dir/x"
version=$(ls "$dir/x/lib/modules" | head -n 1)
mkdir -p "$dir/modules"
mv "$dir/x/lib/modules/$version" "$dir/modules/$version"
cp "$dir/x/boot/vmlinuz-$version" "$dir/vmlinuz.tmp"
rm -rf "$dir/x"
echo "$version" >"$dir/version"
mv "$dir/vmlinuz.tmp" "$dir/vmlinuz"
echo "kernel $version in $dir"
