#!/usr/bin/env python3
"""The zipapp as an initramfs carries it: one machine's native part, every entry stored.

    initramfs-zipapp.py SRC.pyz DST.pyz MACHINE

An initramfs boots one machine, so the other machines' native parts (PyNaCl and cffi, ~0.5 MB
each) are dropped; and it is compressed as a whole (scripts/pack-cpio.sh), which packs stored
entries tighter than entries each deflated on their own. The rest is kept as it is: the #! line,
the entries' date, the bytecode and ``__main__.py`` (whose native ids still name every machine:
the one kept is checked against its own). Same input, same bytes. Exit codes: 0 written, 1 the
input is not a zipapp with MACHINE's native part, 2 usage.
"""

from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run with -I: find pyczip beside us
from pyczip import write_executable, zip_bytes

NATIVE_PREFIX = "_native/"


def slim(source: Path, machine: str) -> bytes:
    data = source.read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = zf.infolist()
        if not infos or "__main__.py" not in zf.namelist():
            raise ValueError(f"{source} is not a zipapp (no __main__.py)")
        mine = f"{NATIVE_PREFIX}{machine}/"
        entries = {
            info.filename: zf.read(info)
            for info in infos
            if not info.is_dir()
            and (not info.filename.startswith(NATIVE_PREFIX) or info.filename.startswith(mine))
        }
        if not any(name.startswith(mine) for name in entries):
            raise ValueError(f"{source} has no native part for {machine}")
        prefix = data[: min(info.header_offset for info in infos)]
        return zip_bytes(entries, date_time=infos[0].date_time, prefix=prefix)


def main(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        sys.stdout.write(__doc__ or "")
        return 0
    if len(argv) != 3:
        sys.stderr.write("usage: initramfs-zipapp.py SRC.pyz DST.pyz MACHINE (try --help)\n")
        return 2
    source, output, machine = Path(argv[0]), Path(argv[1]), argv[2]
    try:
        data = slim(source, machine)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        sys.stderr.write(f"initramfs-zipapp: {exc}\n")
        return 1
    try:
        write_executable(output, data)
    except OSError as exc:
        sys.stderr.write(f"initramfs-zipapp: writing {output}: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
