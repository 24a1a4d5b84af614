"""Start-up of the single-file zipapp (``build/phase.pyz``); see docs/boot.md.

Pure-Python modules import straight from the zip. PyNaCl cannot: its ``nacl._sodium`` and cffi's
``_cffi_backend`` are shared libraries, and the dynamic loader needs real files. The build stores
them (with the rest of the ``nacl`` package, which must sit beside ``_sodium``) under
``_native/<machine>/`` in the zip, one part per machine it was built for (``x86_64``,
``aarch64``: ``os.uname().machine``); the first run extracts this machine's part once into a
private directory named after its content hash, and every later run only checks that the
directory exists. This is what shiv does for a whole application, limited to the ~2-3 MB per
machine that needs it. (An initramfs carries no zipapp: scripts/initramfs-zipapp.py unpacks it
there at build time, and its tools never come here.)

Where: ``$PHASE_PYZ_ROOT``, else ``$XDG_RUNTIME_DIR/phase-pyz``, else ``/run/phase-pyz`` for root,
else ``~/.cache/phase-pyz``. The root must belong to us and not be writable by others: anyone who
could write there could put code into a signature checker.
"""

from __future__ import annotations

import os
import sys

NATIVE_PREFIX = "_native/"


class ZipbootError(Exception):
    """The native part could not be made available; the message says why."""


def default_root() -> str:
    explicit = os.environ.get("PHASE_PYZ_ROOT")
    if explicit:
        return explicit
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return os.path.join(runtime, "phase-pyz")
    if os.geteuid() == 0 and os.path.isdir("/run"):
        return "/run/phase-pyz"
    return os.path.join(os.path.expanduser("~"), ".cache", "phase-pyz")


def private_dir(path: str) -> str:
    """Create ``path`` (mode 0700) if needed and refuse one that others could write to."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.stat(path)
    except OSError as exc:
        raise ZipbootError(f"cannot create {path}: {exc.strerror or exc}") from exc
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise ZipbootError(
            f"{path} is not private (owner uid {st.st_uid}, mode {st.st_mode & 0o777:o}); "
            "set PHASE_PYZ_ROOT to a directory only you can write"
        )
    return path


def extract(archive: str, target: str, root: str, machine: str) -> None:
    """Unpack the ``_native/<machine>/`` entries of ``archive`` into ``target``, atomically."""
    import shutil
    import tempfile
    import zipfile

    staging = tempfile.mkdtemp(prefix=".extract-", dir=root)
    try:
        with zipfile.ZipFile(archive) as zf:
            prefix = f"{NATIVE_PREFIX}{machine}/"
            mine = [i for i in zf.infolist() if i.filename.startswith(prefix) and not i.is_dir()]
            if not mine:
                raise ZipbootError(
                    f"{archive} carries no native part for {machine} and {target} is missing "
                    "(a damaged zipapp? rebuild it with 'make zipapp')"
                )
            for info in mine:
                relative = info.filename[len(prefix) :]
                if relative.startswith("/") or ".." in relative.split("/"):
                    raise ZipbootError(f"bad entry {info.filename!r} in {archive}")
                dest = os.path.join(staging, relative)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                with zf.open(info) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out)
                    out.flush()
                    os.fsync(out.fileno())
                os.chmod(dest, (info.external_attr >> 16) & 0o755 or 0o644)
        os.chmod(staging, 0o700)
        try:
            os.rename(staging, target)
        except OSError:
            # Another process finished the same extraction first: use its copy.
            if not os.path.isdir(target):
                raise
    except OSError as exc:
        raise ZipbootError(f"cannot extract the native modules into {root}: {exc}") from exc
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)


def machine() -> str:
    """This machine's name as the zip's native parts are keyed (``os.uname().machine``)."""
    return os.uname().machine


def native_dir(archive: str, native_ids: dict[str, str], machine: str) -> str:
    """The extracted native part for ``machine`` (extracting it on first use)."""
    native_id = native_ids.get(machine)
    if native_id is None:
        have = ", ".join(sorted(native_ids)) or "none"
        raise ZipbootError(
            f"this zipapp has no native part (PyNaCl) for {machine}, only for {have}; "
            "rebuild it with scripts/build-zipapp.py --machines"
        )
    root = private_dir(default_root())
    target = os.path.join(root, f"native-{native_id}")
    if not os.path.isdir(target):
        extract(archive, target, root, machine)
    return target


def boot(native_ids: dict[str, str]) -> None:
    """Entry point called by the zip's ``__main__``: set up the native part, then dispatch.

    ``native_ids``: the content hash of each machine's native part, by machine name.
    ``__main__`` (shipped as source) has already checked that this Python reads our bytecode.
    """
    archive = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        sys.path.append(native_dir(archive, native_ids, machine()))
    except ZipbootError as exc:
        sys.stderr.write(f"phase: {exc}\n")
        sys.exit(1)
    from phase_client.cli import main

    sys.exit(main(sys.argv))
