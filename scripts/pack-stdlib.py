#!/usr/bin/env python3
"""Pack a Python standard library into one zip of sourceless bytecode for the initramfs.

    pack-stdlib.py /usr/lib/python3.11 OUT.zip

Run it with the interpreter the initramfs ships (the bytecode must match). Drops what a boot
never imports: tests, GUI, IDLE, ensurepip, site-packages, and the modules outside the static
import closure of the client tools (SKIP_MODULES: measured with modulefinder from phase-boot,
phase-fetch, phase-verify, phase-discover and the init's own `python3 -c`, docs/bench-boot.md);
the codecs other than the Unicode ones, Latin-1 and ASCII (the initramfs runs in Python's UTF-8
mode, and the CJK codecs lack their native modules there anyway). Bytecode is compiled as under
`python -OO` (no docstrings, no asserts: CPython's own test suite runs its standard library so).
Reproducible: unchecked-hash .pyc, sorted entries, one fixed date; stored (not deflated): the
initramfs is compressed as a whole, and stored entries import faster.
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
    """Whether the module at ``rel`` (a path under the stdlib, ``.py``) goes into the zip."""
    parts = rel[:-3].split("/")
    if parts[0] in SKIP_MODULES:
        return False
    return not (parts[0] == "encodings" and len(parts) == 2 and parts[1] not in ENCODINGS)


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
            if not wanted(rel):
                continue
            try:
                entries[rel[:-3] + ".pyc"] = compile_source(path, rel, optimize=2)
            except py_compile.PyCompileError:
                continue  # a few files are templates or Python 2 only
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(zip_bytes(entries))
    print(f"packed {len(entries)} modules into {output}: {output.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
