"""Manifest generation from an artifacts directory, and signing. Hashes files; no network."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from ..errors import ManifestError, UsageError
from ..fsutil import sha256_file
from ..keys import SigningKey
from ..manifest import ARTIFACT_FILES, build_document, parse_manifest, sign_document
from .config import VALIDITY_RULE, check_number

DAY = 86400


def next_sequence(previous: int | None, now: float | None = None) -> int:
    """A sequence that only grows: the clock in seconds, or one more than the last one."""
    clock = int(time.time() if now is None else now)
    return max(clock, (previous or 0) + 1)


def default_version(now: float | None = None) -> str:
    return time.strftime("%Y.%m.%d", time.gmtime(time.time() if now is None else now))


def artifact_entries(
    combo_dir: Path, hasher: Any = sha256_file
) -> tuple[dict[str, dict[str, Any]], str | None]:
    """Manifest ``artifacts`` for the files of DIR/<channel>/<arch>/, and its cmdline file."""
    entries: dict[str, dict[str, Any]] = {}
    for filename, name in ARTIFACT_FILES.items():
        path = combo_dir / filename
        if path.is_file():
            digest, size = hasher(path)
            entries[name] = {"hash": f"sha256:{digest}", "size": size, "path": filename}
    cmdline = None
    cmdline_path = combo_dir / "cmdline"
    if cmdline_path.is_file():
        cmdline = " ".join(cmdline_path.read_text(encoding="utf-8").split())
    return entries, cmdline


def generate(
    *,
    artifacts_dir: str | os.PathLike[str],
    channel: str,
    arch: str,
    key: SigningKey,
    version: str | None = None,
    sequence: int | None = None,
    previous_sequence: int | None = None,
    expires_in_days: float = 30,
    cmdline: str | None = None,
    now: float | None = None,
    hasher: Any = sha256_file,
) -> dict[str, Any]:
    """A signed manifest document for DIR/<channel>/<arch>/."""
    combo_dir = Path(artifacts_dir) / channel / arch
    if not combo_dir.is_dir():
        raise UsageError(f"{combo_dir} does not exist")
    entries, file_cmdline = artifact_entries(combo_dir, hasher)
    if "kernel" not in entries:
        raise UsageError(f"{combo_dir} has no vmlinuz (the kernel is required)")
    check_number(expires_in_days, VALIDITY_RULE, "--expires-in")  # nan, inf, 1e300: exit 2
    created = int(time.time() if now is None else now)
    if sequence is None:
        sequence = next_sequence(previous_sequence, created)
    try:
        document = build_document(
            version=version or default_version(created),
            sequence=sequence,
            channel=channel,
            arch=arch,
            created_at=created,
            expires_at=created + int(expires_in_days * DAY),
            artifacts=entries,
            cmdline=cmdline if cmdline is not None else file_cmdline,
        )
    except ManifestError as exc:
        raise UsageError(f"cannot build a manifest: {exc}") from exc
    return sign_document(document, key)


def previous_sequence_of(path: str | os.PathLike[str]) -> int | None:
    """The sequence of an existing manifest file, if it parses; None otherwise."""
    try:
        return parse_manifest(Path(path).read_bytes()).sequence
    except (OSError, ManifestError):
        return None
