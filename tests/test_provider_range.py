"""Pure HTTP range and validator rules (phase_client.provider.httprange)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phase_client.byterange import ByteRange
from phase_client.provider.httprange import (
    Unsatisfiable,
    etag_for,
    format_http_date,
    if_range_allows,
    none_match,
    not_modified_since,
    parse_http_date,
    parse_range,
)

SIZE = 1000


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-99", ByteRange(0, 99)),
        ("bytes=0-0", ByteRange(0, 0)),
        ("bytes=500-", ByteRange(500, 999)),
        ("bytes=999-", ByteRange(999, 999)),
        ("bytes=-1", ByteRange(999, 999)),
        ("bytes=-100", ByteRange(900, 999)),
        ("bytes=-5000", ByteRange(0, 999)),  # suffix longer than the file: all of it
        ("bytes=900-5000", ByteRange(900, 999)),  # end clamped to the size
        ("bytes=0-999", ByteRange(0, 999)),
        ("BYTES=1-2", ByteRange(1, 2)),  # the unit is case-insensitive
        ("bytes= 1 - 2 ", ByteRange(1, 2)),
    ],
)
def test_single_ranges(header: str, expected: ByteRange) -> None:
    assert parse_range(header, SIZE) == expected


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "bytes",
        "bytes=",
        "bytes=-",
        "bytes=abc",
        "bytes=5-3",  # last before first: invalid, ignored
        "bytes=1-2-3",
        "bytes=0x10-20",
        "items=0-10",
        "bytes=0-10,20-30",  # several ranges: answered with the whole file
        "bytes=0-10, 20-",
        "bytes=+1-2",
        "bytes=1--2",
    ],
)
def test_ignored_headers_mean_whole_file(header: str | None) -> None:
    assert parse_range(header, SIZE) is None


@pytest.mark.parametrize(
    "header", ["bytes=1000-", "bytes=1000-2000", "bytes=5000-6000", "bytes=-0"]
)
def test_unsatisfiable(header: str) -> None:
    with pytest.raises(Unsatisfiable):
        parse_range(header, SIZE)


def test_empty_file_has_no_satisfiable_range() -> None:
    for header in ("bytes=0-", "bytes=-1", "bytes=0-0"):
        with pytest.raises(Unsatisfiable):
            parse_range(header, 0)


def test_content_range() -> None:
    assert ByteRange(10, 19).content_range(100) == "bytes 10-19/100"
    assert ByteRange(10, 19).length == 10


@given(
    size=st.integers(min_value=1, max_value=10**12),
    first=st.integers(min_value=0, max_value=10**13),
    last=st.one_of(st.none(), st.integers(min_value=0, max_value=10**13)),
)
def test_any_range_lies_inside_the_file(size: int, first: int, last: int | None) -> None:
    header = f"bytes={first}-{'' if last is None else last}"
    try:
        result = parse_range(header, size)
    except Unsatisfiable:
        assert first >= size
        return
    if last is not None and last < first:
        assert result is None
        return
    assert result is not None
    assert result.first == first
    assert 0 <= result.first <= result.last < size
    assert result.last == min(size - 1, size - 1 if last is None else last)


@given(size=st.integers(min_value=1, max_value=10**12), suffix=st.integers(1, 10**13))
def test_suffix_ranges_end_at_the_last_byte(size: int, suffix: int) -> None:
    result = parse_range(f"bytes=-{suffix}", size)
    assert result is not None
    assert result.last == size - 1
    assert result.length == min(size, suffix)


@given(st.text(max_size=40))
def test_garbage_never_crashes(header: str) -> None:
    try:
        result = parse_range(header, SIZE)
    except Unsatisfiable:
        return
    assert result is None or 0 <= result.first <= result.last < SIZE


ETAG = etag_for("ab" * 32)


def test_etag_is_strong_and_quoted() -> None:
    assert ETAG == '"' + "ab" * 32 + '"'


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        (None, False),
        (ETAG, True),
        ("*", True),
        (f'"other", {ETAG}', True),
        (f"W/{ETAG}", True),  # If-None-Match uses the weak comparison
        ('"other"', False),
        ("", False),
    ],
)
def test_if_none_match(header: str | None, matches: bool) -> None:
    assert none_match(header, ETAG) is matches


MTIME = 1764158400  # 2025-11-26T12:00:00Z


@pytest.mark.parametrize(
    ("header", "applies"),
    [
        (None, True),
        (ETAG, True),
        ('"other"', False),
        (f"W/{ETAG}", False),  # If-Range needs a strong match
        (format_http_date(MTIME), True),
        (format_http_date(MTIME - 1), False),
        (format_http_date(MTIME + 1), False),
        ("not a date", False),
    ],
)
def test_if_range(header: str | None, applies: bool) -> None:
    assert if_range_allows(header, ETAG, MTIME) is applies


def test_if_modified_since() -> None:
    assert not_modified_since(format_http_date(MTIME), MTIME)
    assert not_modified_since(format_http_date(MTIME + 10), MTIME)
    assert not not_modified_since(format_http_date(MTIME - 10), MTIME)
    assert not not_modified_since("garbage", MTIME)
    assert not not_modified_since(None, MTIME)


def test_http_dates_round_trip() -> None:
    assert format_http_date(MTIME) == "Wed, 26 Nov 2025 12:00:00 GMT"
    assert parse_http_date(format_http_date(MTIME)) == MTIME
    assert parse_http_date("Wed, 26 Nov 2025 12:00:00") is None  # no zone: not an HTTP date


def test_a_byte_range_is_checked_however_it_is_made() -> None:
    assert ByteRange(0, 9)._replace(last=3) == ByteRange(0, 3)
    for make in (
        lambda: ByteRange(5, 4),
        lambda: ByteRange(-1, 4),
        lambda: ByteRange(0, 9)._replace(last=-1),
        lambda: ByteRange._make((5, 1)),
    ):
        with pytest.raises(ValueError, match="bad byte range"):
            make()
