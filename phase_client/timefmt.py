"""RFC 3339 UTC timestamps in the one form manifests use: ``2025-11-26T12:00:00Z``. Pure."""

from __future__ import annotations

import calendar
import re
import time

_RFC3339_UTC = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})Z\Z", re.ASCII)


def parse_utc(text: str) -> int:
    """Seconds since the epoch for ``YYYY-MM-DDTHH:MM:SSZ``; ValueError on anything else."""
    match = _RFC3339_UTC.match(text) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"{text!r} is not an RFC 3339 UTC timestamp like 2025-11-26T12:00:00Z")
    year, month, day, hour, minute, second = (int(g) for g in match.groups())
    if not (1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]):
        raise ValueError(f"{text!r} is not a valid date")
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(f"{text!r} is not a valid time of day")
    return calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))


def format_utc(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(epoch)))
