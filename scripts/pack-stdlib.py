#!/usr/bin/env python3
"""Pack a Python standard library into one zip of sourceless bytecode for the initramfs.

    pack-stdlib.py /usr/lib/python3.11 OUT.zip

Run it with the interpreter the initramfs ships (the bytecode must match). Drops what a boot
never imports (tests, GUI, IDLE, ensurepip, site-packages...). Reproducible: unchecked-hash .pyc,
sorted entries, one fixed date; stored
(not deflated): the initramfs is gzipped as a whole, and stored entries import faster.
"""

from __future__ import annotations

import os
import py_compile
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run with -I: find pyczip beside us
from pyczip import compile_source, zip_bytes

SKIP_DIRS = {
    "__pycache__",
    "test",
    "tests",
    "idlelib",
    "tkinter",
    "turtledemo",
    "lib2to3",
    "ensurepip",
    "distutils",
    "pydoc_data",
    "site-packages",
    "dist-packages",
    "venv",
    "lib-dynload",
    "sqlite3",
    "curses",
    "dbm",
    "msilib",
    "unittest",
    "config-3.11-x86_64-linux-gnu",
}
SKIP_FILES = {"turtle.py", "pydoc.py", "doctest.py", "antigravity.py", "this.py"}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: pack-stdlib.py STDLIB_DIR OUT.zip\n")
        return 2
    stdlib, output = Path(argv[0]), Path(argv[1])
    entries: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(stdlib):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            if not name.endswith(".py") or name in SKIP_FILES:
                continue
            path = Path(dirpath) / name
            rel = path.relative_to(stdlib).as_posix()
            try:
                entries[rel[:-3] + ".pyc"] = compile_source(path, rel)
            except py_compile.PyCompileError:
                continue  # a few files are templates or Python 2 only
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(zip_bytes(entries))
    print(f"packed {len(entries)} modules into {output}: {output.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
