# Sourced by the initramfs builders: pack_cpio DIR EPOCH OUTPUT writes DIR as a reproducible
# gzip'd newc cpio (fixed owner and mtimes, sorted names, no gzip timestamp), zero-padded to a
# multiple of 4 bytes so that another archive can be appended to it, and renamed into place.
pack_cpio() {
    find "$1" -exec touch -h -d "@$2" {} +
    pack_tmp=$(mktemp "$3.XXXXXX")
    (cd "$1" && find . -mindepth 1 | LC_ALL=C sort |
        cpio --quiet -o -H newc --owner=0:0 --reproducible) | gzip -n -9 >"$pack_tmp"
    pack_pad=$(((4 - $(wc -c <"$pack_tmp") % 4) % 4))
    [ "$pack_pad" -eq 0 ] || head -c "$pack_pad" /dev/zero >>"$pack_tmp"
    sync "$pack_tmp" 2>/dev/null || true
    chmod 0644 "$pack_tmp"
    mv -f "$pack_tmp" "$3"
    echo "built $3: $(wc -c <"$3") bytes"
}
