#!/usr/bin/env python3
"""The zipapp as an initramfs carries it: unpacked, with a launcher beside it.

    initramfs-zipapp.py SRC.pyz LAUNCHER MACHINE APP_DIR

An initramfs boots one machine, and under QEMU's emulation importing from a zip costs: every
module goes through zipimport, which is Python code (~0.12 s more of a boot's start than from a
directory, docs/bench-boot.md, tenth round). So the zipapp's modules are written, as the
sourceless bytecode they are in the zip, to the new directory APP_DIR, with MACHINE's native
part (PyNaCl and cffi) unpacked among them, its Python modules compiled to sourceless bytecode
of this Python: the boot neither unpacks nor compiles anything (under emulation the unpacking,
then compiling PyNaCl's sources, took ~0.5-1 s of every boot). The other machines' parts are
dropped. LAUNCHER is the script the tools' links point at (``#!/usr/bin/python3 -IS``): it puts
APP_DIR (by its path relative to the launcher's own directory, links resolved) first on
``sys.path`` and runs the tool named by ``argv[0]``. The initramfs is compressed as a whole
(scripts/pack-cpio.sh). Same input, same bytes. Run it with the initramfs' Python (the bytecode
is that Python's). Exit codes: 0 written, 1 the input is not a zipapp with MACHINE's native
part (or writing failed), 2 usage.
"""

from __future__ import annotations

import ast
import io
import os
import sys
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run with -I: find pyczip beside us
from pyczip import compile_source, write_executable, write_tree

NATIVE_PREFIX = "_native/"


def native_ids(main: str) -> dict[str, str]:
    """The ``{machine: id}`` literal the zip's ``__main__`` passes to ``boot(...)``."""
    for node in ast.walk(ast.parse(main)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "boot" and node.args:
            value = ast.literal_eval(node.args[0])
            if isinstance(value, dict):
                return {str(k): str(v) for k, v in value.items()}
    raise ValueError("its __main__.py names no native parts (boot({...}))")


def split(source: Path, machine: str) -> dict[str, bytes]:
    """Every file of the app as it goes into APP_DIR (relative paths): the zip's modules and
    data as they are, MACHINE's native part with its modules compiled to ``.pyc``; no
    ``__main__.py``, no other machine's part."""
    data = source.read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = zf.infolist()
        if not infos or "__main__.py" not in zf.namelist():
            raise ValueError(f"{source} is not a zipapp (no __main__.py)")
        ids = native_ids(zf.read("__main__.py").decode())
        if machine not in ids:
            raise ValueError(f"{source} has no native part for {machine}")
        mine = f"{NATIVE_PREFIX}{machine}/"
        entries: dict[str, bytes] = {}
        native: dict[str, bytes] = {}
        for info in infos:
            if info.is_dir() or info.filename == "__main__.py":
                continue
            if info.filename.startswith(mine):
                native[info.filename[len(mine) :]] = zf.read(info)
            elif not info.filename.startswith(NATIVE_PREFIX):
                entries[info.filename] = zf.read(info)
        if not native:
            raise ValueError(f"{source} has no native part for {machine}")
    for relative, body in native.items():
        if relative.endswith(".py"):
            # Sourceless bytecode beside the shared objects: what the import system loads
            # from a directory without compiling (and without writing a __pycache__).
            relative, body = (
                relative + "c",
                compile_source(Path(relative), relative, body, optimize=2),
            )
        if relative in entries:
            raise ValueError(f"{relative} is both in {source} and in its native part")
        entries[relative] = body
    for relative in entries:
        if relative.startswith("/") or ".." in relative.split("/"):
            raise ValueError(f"bad entry {relative!r} in {source}")
    return entries


LAUNCHER = """#!/usr/bin/python3 -IS
# Written by scripts/initramfs-zipapp.py from the zipapp {source}: this initramfs' tools run
# from its modules unpacked in {app}/ beside this file (a directory imports faster than a zip
# under emulation). argv[0] names the tool (phase-boot, phase-fetch, ...: links to this file).
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), {app!r}))
from phase_client.cli import main

sys.exit(main(sys.argv))
"""


def main(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        sys.stdout.write(__doc__ or "")
        return 0
    if len(argv) != 4:
        sys.stderr.write(
            "usage: initramfs-zipapp.py SRC.pyz LAUNCHER MACHINE APP_DIR (try --help)\n"
        )
        return 2
    source, launcher, machine, app = Path(argv[0]), Path(argv[1]), argv[2], Path(argv[3])
    relative = os.path.relpath(app.resolve(), launcher.parent.resolve())
    try:
        files = split(source, machine)
    except (OSError, ValueError, SyntaxError, zipfile.BadZipFile) as exc:
        sys.stderr.write(f"initramfs-zipapp: {exc}\n")
        return 1
    try:
        write_tree(app, files)
        write_executable(launcher, LAUNCHER.format(source=source.name, app=relative).encode())
    except OSError as exc:
        sys.stderr.write(f"initramfs-zipapp: writing {exc.filename or launcher}: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
