"""What of the project goes into an image: located, hashed (for the cache key), dated.

Reads files and asks git for a date; runs nothing else.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from ..errors import UsageError
from ..fsutil import sha256_file
from .plan import BUILD_INPUTS, PROJECT_FILES

# The zipapp's dependencies (scripts/build-zipapp.py): their versions are part of the image.
ZIPAPP_DISTRIBUTIONS = (
    "cffi",
    "ifaddr",
    "kademlia",
    "PyNaCl",
    "rpcudp",
    "u-msgpack-python",
    "urllib3",
    "zeroconf",
)
SKIP_DIRS = {"__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
# 2024-01-01: the fallback SOURCE_DATE_EPOCH outside a git work tree.
FALLBACK_EPOCH = 1704067200
MAX_EPOCH = 2**32 - 1  # squashfs and cpio store 32-bit times


def project_root() -> Path:
    """The phase-client source tree this package lives in (the builder needs its packaging/,
    initramfs/ and scripts/, which a wheel does not install)."""
    root = Path(__file__).resolve().parents[2]
    needed = [f.source for f in PROJECT_FILES] + [p for p in BUILD_INPUTS if p != "phase_client"]
    missing = [name for name in needed if not (root / name).exists()]
    if missing:
        raise UsageError(
            f"plasmd image build runs from a phase-client source tree: {missing[0]} "
            f"not found in {root}"
        )
    return root


def _files(root: Path, name: str) -> list[Path]:
    top = root / name
    if top.is_file():
        return [top]
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        found += [Path(dirpath) / f for f in sorted(filenames) if not f.endswith(".pyc")]
    return found


def input_hashes(root: Path) -> dict[str, str]:
    """relative path -> sha256 (with the file mode: an executable bit matters) of every input
    file, plus the versions of the zipapp's dependencies and the bytecode's Python."""
    hashes: dict[str, str] = {}
    for name in BUILD_INPUTS:
        for path in _files(root, name):
            digest, _ = sha256_file(path)
            executable = os.access(path, os.X_OK)
            hashes[path.relative_to(root).as_posix()] = f"{digest}{'+x' * executable}"
    for dist in ZIPAPP_DISTRIBUTIONS:
        try:
            hashes[f"dist:{dist}"] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            hashes[f"dist:{dist}"] = "absent"
    hashes["python"] = f"{sys.version_info[0]}.{sys.version_info[1]} magic " + (
        importlib.util.MAGIC_NUMBER.hex()
    )
    return hashes


def parse_epoch(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise UsageError(f"SOURCE_DATE_EPOCH is not an integer: {text!r}") from None
    if not 0 <= value <= MAX_EPOCH:
        raise UsageError(f"SOURCE_DATE_EPOCH out of range (0..{MAX_EPOCH}): {value}")
    return value


def default_epoch(root: Path, environ: dict[str, str] | None = None) -> int:
    """SOURCE_DATE_EPOCH if set; else the date of the last commit that touched an input (so
    commits elsewhere in the tree do not change the image); else a fixed date."""
    env = os.environ if environ is None else environ
    if env.get("SOURCE_DATE_EPOCH"):
        return parse_epoch(env["SOURCE_DATE_EPOCH"])
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "log", "-1", "--format=%ct", "--", *BUILD_INPUTS],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return parse_epoch(out.stdout) if out.stdout.strip() else FALLBACK_EPOCH
    except (OSError, subprocess.SubprocessError, UsageError):
        return FALLBACK_EPOCH
