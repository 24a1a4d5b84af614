# Sourced by the initramfs builders: pack_cpio DIR EPOCH OUTPUT writes DIR as a reproducible
# zstd-compressed newc cpio (fixed owner and mtimes, sorted names), zero-padded to a multiple of
# 4 bytes so that another archive can be appended to it, and renamed into place.
#
# zstd, not gzip: every kernel we boot has CONFIG_RD_ZSTD (Debian's since 5.10), and on the
# stage-1 initramfs (docs/bench-boot.md) zstd -19 is 19 % smaller than gzip -9 and the kernel
# unpacks it no slower (xz: 30 % smaller, but 2.3 s more to unpack under QEMU's emulation).
# -T2 fixes the multi-threaded frame layout whatever the machine's cores: same bytes everywhere.
pack_cpio() {
    command -v zstd >/dev/null || { echo "pack_cpio: zstd is missing (apt-get install zstd)" >&2; return 1; }
    find "$1" -exec touch -h -d "@$2" {} +
    pack_tmp=$(mktemp "$3.XXXXXX")
    # A pipeline's status is its last command's (zstd's), and sh has no pipefail: cpio's own
    # failure (a file it cannot read...) is written down beside the archive and looked at.
    if ! { (cd "$1" && find . -mindepth 1 | LC_ALL=C sort |
        cpio --quiet -o -H newc --owner=0:0 --reproducible) || : >"$pack_tmp.cpio-failed"; } |
        zstd -q -19 -T2 --no-progress >"$pack_tmp" || [ -e "$pack_tmp.cpio-failed" ]; then
        rm -f "$pack_tmp" "$pack_tmp.cpio-failed"
        echo "pack_cpio: packing $1 failed" >&2
        return 1
    fi
    pack_pad=$(((4 - $(wc -c <"$pack_tmp") % 4) % 4))
    [ "$pack_pad" -eq 0 ] || head -c "$pack_pad" /dev/zero >>"$pack_tmp"
    sync "$pack_tmp" 2>/dev/null || true
    chmod 0644 "$pack_tmp"
    mv -f "$pack_tmp" "$3"
    echo "built $3: $(wc -c <"$3") bytes"
}
