#!/usr/bin/env python3
"""The zipapp as an initramfs carries it: every entry stored, the native part unpacked beside it.

    initramfs-zipapp.py SRC.pyz DST.pyz MACHINE NATIVE_ROOT

An initramfs boots one machine. Its zipapp keeps no native part at all: MACHINE's (PyNaCl and
cffi) is written, unpacked, to ``NATIVE_ROOT/native-<id>/`` (``<id>`` as the zip's ``__main__``
names it), its Python modules as sourceless bytecode of this Python, so the boot neither unpacks
it nor compiles it (under emulation that was ~0.5-1 s of every boot: the unpacking, then
compiling PyNaCl's sources); the init points ``$PHASE_PYZ_ROOT`` at ``NATIVE_ROOT``. The other
machines' parts (~0.5 MB each) are dropped. The zip is compressed as a whole with the initramfs
(scripts/pack-cpio.sh), which packs stored entries tighter than entries each deflated on their
own. The rest is kept as it is: the #! line, the entries' date, the bytecode and ``__main__.py``.
Same input, same bytes. Run it with the initramfs' Python (the bytecode is that Python's).
Exit codes: 0 written, 1 the input is not a zipapp with MACHINE's native part (or writing
failed), 2 usage.
"""

from __future__ import annotations

import ast
import io
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run with -I: find pyczip beside us
from pyczip import compile_source, write_executable, zip_bytes

NATIVE_PREFIX = "_native/"


def native_ids(main: str) -> dict[str, str]:
    """The ``{machine: id}`` literal the zip's ``__main__`` passes to ``boot(...)``."""
    for node in ast.walk(ast.parse(main)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "boot" and node.args:
            value = ast.literal_eval(node.args[0])
            if isinstance(value, dict):
                return {str(k): str(v) for k, v in value.items()}
    raise ValueError("its __main__.py names no native parts (boot({...}))")


def split(source: Path, machine: str) -> tuple[bytes, str, dict[str, bytes]]:
    """The zip without any native part, MACHINE's native id, and its native part's files
    (relative paths; modules compiled to ``.pyc``)."""
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
            if info.is_dir():
                continue
            if info.filename.startswith(mine):
                native[info.filename[len(mine) :]] = zf.read(info)
            elif not info.filename.startswith(NATIVE_PREFIX):
                entries[info.filename] = zf.read(info)
        if not native:
            raise ValueError(f"{source} has no native part for {machine}")
        prefix = data[: min(info.header_offset for info in infos)]
    unpacked: dict[str, bytes] = {}
    for relative, body in native.items():
        if relative.startswith("/") or ".." in relative.split("/"):
            raise ValueError(f"bad entry {relative!r} in {source}")
        if relative.endswith(".py"):
            # Sourceless bytecode beside the shared objects: what the import system loads
            # from a directory without compiling (and without writing a __pycache__).
            unpacked[relative + "c"] = compile_source(Path(relative), relative, body, optimize=2)
        else:
            unpacked[relative] = body
    zipped = zip_bytes(entries, date_time=infos[0].date_time, prefix=prefix)
    return zipped, ids[machine], unpacked


def write_native(root: Path, native_id: str, files: dict[str, bytes]) -> Path:
    """``files`` as ``root/native-<id>/`` (root and the part mode 0700, as _zipboot demands of
    its root; shared objects 0755): written in a temporary directory beside it, then renamed
    into place, so nothing half-written is left."""
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    target = root / f"native-{native_id}"
    if target.exists():
        shutil.rmtree(target)
    staging = Path(tempfile.mkdtemp(prefix=".native-", dir=root))
    try:
        for relative in sorted(files):
            dest = staging / relative
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(files[relative])
            dest.chmod(0o755 if ".so" in dest.name else 0o644)
        for directory in (staging, *(p for p in staging.rglob("*") if p.is_dir())):
            directory.chmod(0o700 if directory == staging else 0o755)
        os.rename(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def main(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]):
        sys.stdout.write(__doc__ or "")
        return 0
    if len(argv) != 4:
        sys.stderr.write(
            "usage: initramfs-zipapp.py SRC.pyz DST.pyz MACHINE NATIVE_ROOT (try --help)\n"
        )
        return 2
    source, output, machine, native_root = Path(argv[0]), Path(argv[1]), argv[2], Path(argv[3])
    try:
        data, native_id, files = split(source, machine)
    except (OSError, ValueError, SyntaxError, zipfile.BadZipFile) as exc:
        sys.stderr.write(f"initramfs-zipapp: {exc}\n")
        return 1
    try:
        write_native(native_root, native_id, files)
        write_executable(output, data)
    except OSError as exc:
        sys.stderr.write(f"initramfs-zipapp: writing {exc.filename or output}: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
