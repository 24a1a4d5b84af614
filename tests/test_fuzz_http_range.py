"""Fuzz targets for the HTTP range parsers: the provider's Range/If-Range/If-None-Match/date
headers (phase_client/provider/httprange.py) and the client's Content-Range check of a 206
reply (phase_client/fetch/plan.py). docs/fuzz.md: make fuzz.

Properties: a Range header gives None, an in-bounds ByteRange or Unsatisfiable; a 206 reply is
accepted only when it covers exactly the bytes asked for; nothing else is ever raised.
"""

from __future__ import annotations

from hypothesis import event, example, given
from hypothesis import strategies as st

from phase_client.byterange import ByteRange
from phase_client.byterange import ByteRange as WantedRange  # one class, both sides
from phase_client.fetch.plan import (
    RangeReplyError,
    check_partial_reply,
    declared_length_ok,
    parse_content_range,
)
from phase_client.provider.httprange import (
    Unsatisfiable,
    if_range_allows,
    none_match,
    not_modified_since,
    parse_http_date,
    parse_range,
)
from tests.conftest import fuzz_settings

ETAG = '"' + "ab" * 32 + '"'
sizes = st.integers(0, 2**63 - 1) | st.integers(0, 7000)
numbers = st.one_of(
    st.integers(0, 6000).map(str),
    st.integers(0, 6000).map(str),
    st.integers(0, 2**64).map(str),
    st.sampled_from(["", "0", "00", "-1", "+1", "1_0", "0x10", "1e3", " 7", "\u0661", "\uff11"]),
    st.integers(19, 6000).flatmap(lambda n: st.sampled_from(["9" * n, "0" * n + "1"])),
)


@st.composite
def range_headers(draw: st.DrawFn) -> str:
    """Mostly near-valid ``bytes=a-b`` forms, sometimes anything at all."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.text(max_size=40))
    unit = draw(st.sampled_from(["bytes"] * 5 + ["Bytes", " bytes ", "bits", "", "bytes\n"]))
    specs = [
        draw(numbers)
        + draw(st.sampled_from(["-"] * 5 + [" - ", "--", "", "\u2013"]))
        + draw(numbers)
        + draw(st.sampled_from([""] * 5 + [" ", "\n", "\t"]))
        for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3])))
    ]
    return unit + draw(st.sampled_from(["="] * 5 + [" = ", ""])) + ",".join(specs)


@fuzz_settings(500)
@given(st.none() | range_headers(), sizes)
@example("bytes=" + "9" * 5000 + "-", 100)
@example("bytes=-" + "9" * 5000, 100)
@example("bytes=0-" + "9" * 5000, 100)
@example("bytes=" + "0" * 5000 + "1-2", 100)
@example("bytes=\u0661-2", 100)
@example("bytes=0-0\n", 10)
def test_range_header(header: str | None, size: int) -> None:
    try:
        result = parse_range(header, size)
    except Unsatisfiable:
        event("416")
        return
    if result is None:
        event("whole file")
        return
    event("partial")
    assert isinstance(result, ByteRange)
    assert 0 <= result.first <= result.last < size
    assert result.length == result.last - result.first + 1
    # The range we would answer, asked for again, is the same range.
    assert parse_range(f"bytes={result.first}-{result.last}", size) == result


@fuzz_settings(300)
@given(sizes, st.data())
def test_valid_range_round_trips(size: int, data: st.DataObject) -> None:
    if size == 0:
        return
    first = data.draw(st.integers(0, size - 1))
    last = data.draw(st.integers(first, size - 1))
    assert parse_range(f"bytes={first}-{last}", size) == ByteRange(first, last)
    assert parse_range(f"bytes={first}-", size) == ByteRange(first, size - 1)


@fuzz_settings(300)
@given(st.none() | st.text(max_size=60), st.floats(0, 2**40, allow_nan=False))
@example("Mon, 01 Jan 99999 00:00:00 GMT", 0.0)
@example("Mon, 01 Jan 0000 00:00:00 GMT", 0.0)
@example("Mon, 01 Jan 2024 25:61:61 +9999", 0.0)
@example('W/"x", "y"', 0.0)
def test_conditional_headers(header: str | None, mtime: float) -> None:
    assert isinstance(none_match(header, ETAG), bool)
    assert isinstance(not_modified_since(header, mtime), bool)
    assert isinstance(if_range_allows(header, ETAG, mtime), bool)
    if header is not None:
        when = parse_http_date(header)
        assert when is None or isinstance(when, int)


@st.composite
def content_ranges(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 4)) == 0:
        return draw(st.text(max_size=50))
    total = draw(numbers | st.just("*"))
    return (
        draw(st.sampled_from(["bytes ", "bytes  ", "Bytes ", "bytes=", " bytes "]))
        + draw(numbers)
        + "-"
        + draw(numbers)
        + "/"
        + total
        + draw(st.sampled_from(["", "\n", " ", "\r\n"]))
    )


@fuzz_settings(500)
@given(st.none() | content_ranges(), st.integers(0, 2**63 - 1), st.data())
@example("bytes 0-9/10\n", 10, None)
@example("bytes 0-" + "9" * 5000 + "/10", 10, None)
@example("bytes \u0660-9/10", 10, None)
def test_content_range_of_a_206(header: str | None, size: int, data: st.DataObject | None) -> None:
    if data is None:
        wanted = WantedRange(0, max(0, size - 1))
    else:
        start = data.draw(st.integers(0, max(0, size - 1)))
        wanted = WantedRange(start, data.draw(st.integers(start, max(start, size - 1))))
    if header is not None and data is not None and data.draw(st.booleans()):
        # The reply a server should send, perhaps a little off.
        echo = f"bytes {wanted.first}-{wanted.last}/{size}"
        header = data.draw(st.sampled_from([echo, echo.replace(f"/{size}", "/*"), echo + "\n"]))
        if data.draw(st.integers(0, 3)) == 0:  # a wrong end
            header = header.replace(f"-{wanted.last}/", f"-{data.draw(st.integers(0, 9))}/")
    if header is not None:
        try:
            start, end, total = parse_content_range(header)
        except RangeReplyError:
            event("unparsable")
        else:
            assert 0 <= start <= end and (total is None or end < total)
    try:
        check_partial_reply(header, wanted, size)
    except RangeReplyError:
        return
    event("accepted")
    assert header is not None
    start, end, total = parse_content_range(header)
    assert (start, end) == (wanted.first, wanted.last) and total in (None, size)


@fuzz_settings(200)
@given(st.none() | numbers | st.text(max_size=30), st.integers(0, 2**63 - 1))
def test_declared_content_length(value: str | None, expected: int) -> None:
    assert isinstance(declared_length_ok(value, expected), bool)
