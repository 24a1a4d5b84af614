"""Reproducible bytecode, zip files and directory trees, shared by build-zipapp.py,
initramfs-zipapp.py and pack-stdlib.py.

Bytecode is unchecked-hash .pyc (no timestamp: the same source gives the same bytes) and names
``arcname`` in tracebacks; zip entries are sorted, carry one fixed date and Unix modes (0755 for
shared libraries, 0644 for the rest).
"""

from __future__ import annotations

import errno
import io
import os
import py_compile
import shutil
import tempfile
import zipfile
from pathlib import Path

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can hold


def compile_source(
    path: Path, arcname: str, source: bytes | None = None, *, optimize: int = 0
) -> bytes:
    """Bytecode of ``path`` (or of ``source`` in its place) at ``optimize`` level (2: without
    docstrings and asserts, as ``python -OO``); raises py_compile.PyCompileError."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "m.py"
        src.write_bytes(path.read_bytes() if source is None else source)
        out = Path(tmp) / "m.pyc"
        py_compile.compile(
            str(src),
            cfile=str(out),
            dfile=arcname,
            doraise=True,
            optimize=optimize,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )
        return out.read_bytes()


def zip_bytes(
    entries: dict[str, bytes],
    *,
    date_time: tuple[int, int, int, int, int, int] = ZIP_EPOCH,
    deflate: bool = False,
    prefix: bytes = b"",
) -> bytes:
    """A zip of ``entries`` (sorted), after ``prefix`` (e.g. a ``#!`` line, which the zip's
    offsets then count). Stored unless ``deflate`` (level 9)."""
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    level = 9 if deflate else None
    buffer = io.BytesIO()
    buffer.write(prefix)
    with zipfile.ZipFile(buffer, "w", method, compresslevel=level) as zf:
        for arcname in sorted(entries):
            info = zipfile.ZipInfo(arcname, date_time=date_time)
            info.compress_type = method
            mode = 0o755 if arcname.endswith(".so") else 0o644
            info.external_attr = (0o100000 | mode) << 16
            info.create_system = 3
            zf.writestr(info, entries[arcname], compresslevel=level)
    return buffer.getvalue()


def write_executable(output: Path, data: bytes) -> None:
    """``data`` as ``output`` (mode 0755): written to a temp file beside it, fsynced, renamed
    into place; nothing half-written is left, even on an error."""
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o755)
        os.replace(tmp, output)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_tree(target: Path, files: dict[str, bytes]) -> None:
    """``files`` (relative path -> bytes) as the new directory ``target`` (directories 0755,
    shared libraries 0755, the rest 0644): written in a temporary directory beside it, then
    renamed into place, so nothing half-written is left. FileExistsError if it exists."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(target):
        raise FileExistsError(errno.EEXIST, "exists", str(target))
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for relative in sorted(files):
            dest = staging / relative
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(files[relative])
            dest.chmod(0o755 if ".so" in dest.name else 0o644)
        for directory in (staging, *(p for p in staging.rglob("*") if p.is_dir())):
            directory.chmod(0o755)
        os.rename(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
