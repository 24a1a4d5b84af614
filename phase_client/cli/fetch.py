"""phase-fetch (not built yet)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    sys.stderr.write("phase-fetch: not built yet\n")
    return 2
