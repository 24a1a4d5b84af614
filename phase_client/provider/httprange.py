"""HTTP conditional and range request rules (RFC 9110 sections 13 and 14). Pure: no I/O.

The server answers a single byte range; a multi-range request gets the whole file (allowed by
RFC 9110 14.2), and a Range header that does not parse is ignored, as the RFC asks.
"""

from __future__ import annotations

import email.utils
import re

from ..byterange import ByteRange as ByteRange  # the one definition, shared with fetch/

_SPEC_RE = re.compile(r"^\s*(\d{0,19})\s*-\s*(\d{0,19})\s*\Z", re.ASCII)


class Unsatisfiable(Exception):
    """The range is well formed but starts beyond the end (answer 416)."""


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The single range ``header`` asks for, clamped to ``size``; None means "send it all".

    None for: no header, a unit other than bytes, a malformed header, several ranges.
    Raises Unsatisfiable when the one range lies wholly past the end (or the file is empty).
    """
    if header is None:
        return None
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    parts = spec.split(",")
    if len(parts) != 1:
        return None
    match = _SPEC_RE.match(parts[0])
    if not match:
        return None
    first_text, last_text = match.groups()
    if not first_text:
        if not last_text:
            return None
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            raise Unsatisfiable
        return ByteRange(max(0, size - suffix), size - 1)
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if last_text and last < first:
        return None  # "5-3" is invalid syntax, so the header is ignored
    if first >= size:
        raise Unsatisfiable
    return ByteRange(first, min(last, size - 1))


def etag_for(sha256_hex: str) -> str:
    """A strong entity tag: the content hash never changes unless the bytes do."""
    return f'"{sha256_hex}"'


def _tags(header: str) -> list[str]:
    return [tag.strip() for tag in header.split(",") if tag.strip()]


def none_match(header: str | None, etag: str) -> bool:
    """True when If-None-Match holds ``etag`` (weak comparison, as RFC 9110 13.1.2 says)."""
    if header is None:
        return False
    tags = _tags(header)
    if "*" in tags:
        return True
    plain = etag.removeprefix("W/")
    return any(tag.removeprefix("W/") == plain for tag in tags)


def parse_http_date(text: str) -> int | None:
    try:
        parsed = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None or parsed.tzinfo is None:
        return None
    return int(parsed.timestamp())


def format_http_date(epoch: float) -> str:
    return email.utils.formatdate(int(epoch), usegmt=True)


def not_modified_since(header: str | None, mtime: float) -> bool:
    """If-Modified-Since: True when the file is not newer than the given date."""
    if header is None:
        return False
    when = parse_http_date(header)
    return when is not None and int(mtime) <= when


def if_range_allows(header: str | None, etag: str, mtime: float) -> bool:
    """If-Range: the Range applies only if the validator still matches (strong comparison)."""
    if header is None:
        return True
    value = header.strip()
    if value.startswith('"') or value.startswith("W/"):
        return value == etag and not etag.startswith("W/")
    when = parse_http_date(value)
    # A date is a weak validator unless exact; equal to Last-Modified (seconds) counts.
    return when is not None and when == int(mtime)
