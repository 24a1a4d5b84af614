"""Pure download decisions: Range/Content-Range handling, range splitting, the slow-source guard.

No sockets, no files, no clock (callers pass ``now``), so every rule is unit-tested exhaustively.
"""

from __future__ import annotations

import re

from ..byterange import ByteRange

# "bytes 0-99/1000" or "bytes 0-99/*" (RFC 9110 section 14.4).
_CONTENT_RANGE_RE = re.compile(r"^bytes (\d{1,19})-(\d{1,19})/(\d{1,19}|\*)\Z", re.ASCII)


class RangeReplyError(ValueError):
    """A 206 reply that does not answer the range we asked for."""


def parse_content_range(value: str) -> tuple[int, int, int | None]:
    """``bytes a-b/total`` -> (a, b, total or None for ``*``); ValueError otherwise."""
    match = _CONTENT_RANGE_RE.match(value.strip())
    if not match:
        raise RangeReplyError(f"unparsable Content-Range {value[:80]!r}")
    start, end = int(match.group(1)), int(match.group(2))
    total = None if match.group(3) == "*" else int(match.group(3))
    if end < start or (total is not None and end >= total):
        raise RangeReplyError(f"inconsistent Content-Range {value[:80]!r}")
    return start, end, total


def check_partial_reply(content_range: str | None, wanted: ByteRange, size: int) -> None:
    """Accept a 206 only if it covers exactly the bytes asked for of a ``size``-byte file.

    A different start would splice wrong bytes at our offset; a different total means the server
    holds a different file; a shorter end would leave a hole we would not notice until the hash.
    """
    if content_range is None:
        raise RangeReplyError("206 reply without Content-Range")
    start, end, total = parse_content_range(content_range)
    if total is not None and total != size:
        raise RangeReplyError(f"server's file is {total} bytes, the manifest says {size}")
    if start != wanted.first or end != wanted.last:
        raise RangeReplyError(f"asked for bytes {wanted.first}-{wanted.last}, got {start}-{end}")


def split_ranges(size: int, parts: int, min_part: int) -> list[ByteRange]:
    """Cut ``size`` bytes into at most ``parts`` contiguous ranges of at least ``min_part``.

    Ranges differ in length by at most one byte, cover every byte exactly once, in order.
    """
    if size <= 0:
        return []
    count = max(1, min(parts, size // max(1, min_part)))
    base, extra = divmod(size, count)
    ranges = []
    start = 0
    for index in range(count):
        length = base + (1 if index < extra else 0)
        ranges.append(ByteRange(start, start + length - 1))
        start += length
    return ranges


def remaining_range(wanted: ByteRange, done: int) -> ByteRange | None:
    """What is left of ``wanted`` after its first ``done`` bytes arrived; None when complete."""
    if done >= wanted.length:
        return None
    return ByteRange(wanted.first + done, wanted.last)


def backoff_delay(attempt: int, base: float, cap: float = 5.0) -> float:
    """Exponential backoff for resume attempt 1, 2, 3...: base, 2*base, 4*base ... <= cap."""
    return min(cap, base * 2.0 ** max(0, attempt - 1))


class RateGuard:
    """Detects a slow-retrieval attack: fewer than ``min_rate`` bytes/s over ``grace`` seconds.

    A source that stalls completely is caught by the socket read timeout; this catches the one
    that drips just enough bytes to never time out. Measured over consecutive windows of
    ``grace`` seconds, so a short hiccup inside a fast transfer is forgiven.
    """

    def __init__(self, min_rate: float, grace: float, now: float) -> None:
        self.min_rate = min_rate
        self.grace = grace
        self.window_start = now
        self.window_bytes = 0

    def too_slow(self, received: int, now: float) -> bool:
        self.window_bytes += received
        elapsed = now - self.window_start
        if self.min_rate <= 0 or elapsed < self.grace:
            return False
        if self.window_bytes < self.min_rate * elapsed:
            return True
        self.window_start = now
        self.window_bytes = 0
        return False

    def rate(self, now: float) -> float:
        elapsed = now - self.window_start
        return self.window_bytes / elapsed if elapsed > 0 else 0.0


def declared_length_ok(content_length: str | None, expected: int) -> bool:
    """A Content-Length larger than the bytes we expect is refused before reading a byte."""
    if content_length is None:
        return True
    text = content_length.strip()
    # ASCII digits only (int() also takes "+5", "1_0", "-1" and other scripts' digits).
    return text.isascii() and text.isdigit() and len(text) <= 19 and int(text) <= expected


class CompletedRanges:
    """Byte ranges that have arrived, merged; ``prefix`` is how many bytes from 0 are complete.

    Multi-source ranges arrive out of order; the whole-file hash can only advance over the
    contiguous prefix, so it is hashed while the rest is still downloading.
    """

    def __init__(self) -> None:
        self._spans: list[list[int]] = []  # sorted, disjoint, non-adjacent [start, end)

    def add(self, start: int, length: int) -> None:
        if length <= 0:
            return
        end = start + length
        merged: list[list[int]] = []
        for span in self._spans:
            if span[1] < start or span[0] > end:
                merged.append(span)
            else:
                start, end = min(start, span[0]), max(end, span[1])
        merged.append([start, end])
        merged.sort()
        self._spans = merged

    @property
    def prefix(self) -> int:
        if self._spans and self._spans[0][0] == 0:
            return self._spans[0][1]
        return 0

    @property
    def total(self) -> int:
        return sum(end - start for start, end in self._spans)
