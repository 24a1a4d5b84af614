"""Thin glue between the pure trust rules and the outside world (the clock, the build time, the
state dir).

Used by phase-verify, phase-fetch and the initramfs alike, so every tool applies the same rules.
The command-line side (``--key``, ``--keys-dir``, ... into a ``TrustPolicy``) is
``cli/_trust.py``.
"""

from __future__ import annotations

import time

from .buildinfo import BUILD_TIME
from .manifest import parse_manifest
from .state import StateStore
from .timefmt import parse_utc
from .trust import TrustPolicy, VerifiedManifest, effective_now, verify


def verify_bytes(
    data: bytes,
    policy: TrustPolicy,
    state: StateStore | None = None,
    *,
    system_now: int | None = None,
) -> VerifiedManifest:
    """Parse and verify manifest bytes against the policy, the clock floor and the state."""
    manifest = parse_manifest(data)
    records = state.records() if state else {}
    previous = records.get(manifest.combination)
    clock = int(time.time()) if system_now is None else system_now
    now = effective_now(clock, parse_utc(BUILD_TIME), previous)
    return verify(manifest, policy, now=now, previous=previous)
