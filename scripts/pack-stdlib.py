#!/usr/bin/env python3
"""Pack a Python standard library as a directory of sourceless bytecode for the initramfs.

    pack-stdlib.py /usr/lib/python3.11 OUT_DIR

Run it with the interpreter the initramfs ships (the bytecode must match). Drops what a boot
never imports: tests, GUI, IDLE, ensurepip, site-packages, and the modules outside the static
import closure of the client tools (SKIP_MODULES: measured with modulefinder from phase-boot,
phase-fetch, phase-verify, phase-discover and the init's own `python3 -c`, docs/bench-boot.md);
the codecs other than the Unicode ones, Latin-1 and ASCII (the initramfs runs in Python's UTF-8
mode, and the CJK codecs lack their native modules there anyway). Bytecode is compiled as under
`python -OO` (no docstrings, no asserts: CPython's own test suite runs its standard library so).
Each module is ``OUT_DIR/<name>.pyc`` (a package's ``<name>/__init__.pyc``), what the import
system loads from a directory without a source: a directory, not a zip, because under QEMU's
emulation importing from a zip (zipimport is Python code, run for every module) took ~0.25 s
more of a boot's start (docs/bench-boot.md, tenth round); the initramfs is compressed as a
whole either way. OUT_DIR must not exist: it is written beside itself and renamed into place.
Reproducible: unchecked-hash .pyc, and the initramfs' packer fixes names' order and dates.
"""

from __future__ import annotations

import os
import py_compile
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run with -I: find pyczip beside us
from pyczip import compile_source, write_tree

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
# Top-level modules and packages outside the client tools' static import closure. Not here
# although outside it: what the interpreter or the codec machinery imports by name (site,
# _sitebuiltins, sitecustomize, _sysconfigdata_*, stringprep for encodings.idna, sre_*).
SKIP_MODULES = {
    "__hello__", "__phello__", "_distutils_system_mod", "_markupbase", "_pyio", "aifc",
    "asynchat", "asyncore", "cProfile", "cgi", "cgitb", "chunk", "colorsys", "compileall",
    "configparser", "crypt", "filecmp", "fileinput", "graphlib", "imaplib", "imghdr", "imp",
    "mailbox", "mailcap", "modulefinder", "nntplib", "optparse", "pickletools", "pipes",
    "poplib", "profile", "pstats", "pty", "pyclbr", "rlcompleter", "sched", "shelve", "smtpd",
    "smtplib", "sndhdr", "sunau", "symtable", "tabnanny", "telnetlib", "timeit", "tomllib",
    "trace", "uu", "wave", "wsgiref", "xdrlib", "zipapp", "zoneinfo",
}  # fmt: skip
# The codecs kept (encodings/<name>.py); aliases maps every spelling of these to them. cp437:
# zipfile decodes the names of entries without the UTF-8 flag with it (the zipapp itself).
ENCODINGS = {
    "__init__", "aliases", "ascii", "base64_codec", "charmap", "cp437", "hex_codec", "idna",
    "latin_1",
    "punycode", "quopri_codec", "raw_unicode_escape", "rot_13", "undefined", "unicode_escape",
    "utf_16", "utf_16_be", "utf_16_le", "utf_32", "utf_32_be", "utf_32_le", "utf_7", "utf_8",
    "utf_8_sig", "uu_codec", "zlib_codec",
}  # fmt: skip


def wanted(rel: str) -> bool:
    """Whether the module at ``rel`` (a path under the stdlib, ``.py``) is packed."""
    parts = rel[:-3].split("/")
    if parts[0] in SKIP_MODULES:
        return False
    return not (parts[0] == "encodings" and len(parts) == 2 and parts[1] not in ENCODINGS)


def main(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        sys.stdout.write(__doc__ or "")
        return 0
    if len(argv) != 2:
        sys.stderr.write("usage: pack-stdlib.py STDLIB_DIR OUT_DIR (try --help)\n")
        return 2
    stdlib, output = Path(argv[0]), Path(argv[1])
    if os.path.lexists(output):
        sys.stderr.write(f"pack-stdlib: {output} exists\n")
        return 1
    entries: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(stdlib):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            if not name.endswith(".py") or name in SKIP_FILES:
                continue
            path = Path(dirpath) / name
            rel = path.relative_to(stdlib).as_posix()
            if not wanted(rel):
                continue
            try:
                entries[rel[:-3] + ".pyc"] = compile_source(path, rel, optimize=2)
            except py_compile.PyCompileError:
                continue  # a few files are templates or Python 2 only
    try:
        write_tree(output, entries)
    except OSError as exc:
        sys.stderr.write(f"pack-stdlib: writing {output}: {exc}\n")
        return 1
    size = sum(len(body) for body in entries.values())
    print(f"packed {len(entries)} modules into {output}: {size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
