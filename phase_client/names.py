"""Channel and architecture names, as manifests, mDNS records and URLs spell them. Pure.

Their own module because discovery and the command line need them without the manifest's
parser and signatures (``manifest`` imports PyNaCl through ``keys``: ~35 ms of
``phase-discover``'s start on the host, ~0.5 s under QEMU's emulation).
"""

from __future__ import annotations

import os
import re

from .errors import UsageError

CHANNEL_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}\Z")
ARCH_RE = CHANNEL_RE
ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}


def normalize_arch(arch: str) -> str:
    """``amd64`` -> ``x86_64``, ``aarch64`` -> ``arm64``; other names unchanged (lower-cased)."""
    lowered = arch.strip().lower()
    return ARCH_ALIASES.get(lowered, lowered)


def host_arch() -> str:
    """This machine's architecture, by the manifest's names (x86_64 when it cannot tell).

    ``os.uname()`` is what ``platform.machine()`` reads on POSIX, without the 2 ms import."""
    return normalize_arch(os.uname().machine or "x86_64")


def check_channel(channel: str) -> str:
    if not CHANNEL_RE.match(channel):
        raise UsageError(f"invalid channel {channel!r} (lower-case letters, digits, '-', '_')")
    return channel


def check_arch(arch: str) -> str:
    normal = normalize_arch(arch)
    if not ARCH_RE.match(normal):
        raise UsageError(f"invalid arch {arch!r} (e.g. x86_64, arm64)")
    return normal
