"""Pure phase-fetch decisions: ranges, Content-Range checks, splitting, rate guard, sources."""

from __future__ import annotations

import io
import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phase_client.byterange import ByteRange
from phase_client.fetch.plan import (
    CompletedRanges,
    RangeReplyError,
    RateGuard,
    backoff_delay,
    check_partial_reply,
    declared_length_ok,
    parse_content_range,
    remaining_range,
    split_ranges,
)
from phase_client.fetch.progress import Progress, format_bytes, format_eta, status_line
from phase_client.fetch.sources import Source, SourceBook, artifact_location, sources_for
from phase_client.manifest import Artifact

ART = Artifact("kernel", "sha256:" + "ab" * 32, 1000, "vmlinuz", ("http://m1/x/vmlinuz",))


def test_parse_content_range() -> None:
    assert parse_content_range("bytes 0-99/1000") == (0, 99, 1000)
    assert parse_content_range("bytes 5-5/*") == (5, 5, None)
    for bad in ("bytes 10-5/100", "bytes 0-100/100", "items 0-1/2", "bytes 0-/100", "", "0-1/2"):
        with pytest.raises(RangeReplyError):
            parse_content_range(bad)


def test_partial_reply_must_match_the_ask() -> None:
    wanted = ByteRange(500, 999)
    check_partial_reply("bytes 500-999/1000", wanted, 1000)
    check_partial_reply("bytes 500-999/*", wanted, 1000)
    with pytest.raises(RangeReplyError, match="got 0-999"):
        check_partial_reply("bytes 0-999/1000", wanted, 1000)
    with pytest.raises(RangeReplyError, match="500-998"):
        check_partial_reply("bytes 500-998/1000", wanted, 1000)
    with pytest.raises(RangeReplyError, match="2000 bytes"):
        check_partial_reply("bytes 500-999/2000", wanted, 1000)
    with pytest.raises(RangeReplyError, match="without Content-Range"):
        check_partial_reply(None, wanted, 1000)


def test_byte_range() -> None:
    assert ByteRange(3, 7).length == 5
    assert ByteRange(3, 7).header() == "bytes=3-7"
    with pytest.raises(ValueError):
        ByteRange(5, 4)
    with pytest.raises(ValueError):
        ByteRange(-1, 4)


@given(
    size=st.integers(min_value=0, max_value=10**12),
    parts=st.integers(min_value=1, max_value=64),
    min_part=st.integers(min_value=1, max_value=10**9),
)
def test_split_ranges_cover_every_byte_once(size: int, parts: int, min_part: int) -> None:
    ranges = split_ranges(size, parts, min_part)
    if size == 0:
        assert ranges == []
        return
    assert 1 <= len(ranges) <= parts
    assert ranges[0].first == 0 and ranges[-1].last == size - 1
    for left, right in itertools.pairwise(ranges):
        assert right.first == left.last + 1
    lengths = [r.length for r in ranges]
    assert max(lengths) - min(lengths) <= 1
    if len(ranges) > 1:
        assert min(lengths) >= min_part


def test_split_ranges_examples() -> None:
    assert split_ranges(10, 3, 1) == [ByteRange(0, 3), ByteRange(4, 6), ByteRange(7, 9)]
    assert split_ranges(10, 3, 8) == [ByteRange(0, 9)]  # too small to split


def test_remaining_range() -> None:
    assert remaining_range(ByteRange(10, 19), 0) == ByteRange(10, 19)
    assert remaining_range(ByteRange(10, 19), 4) == ByteRange(14, 19)
    assert remaining_range(ByteRange(10, 19), 10) is None


def test_backoff_grows_and_is_capped() -> None:
    assert [backoff_delay(a, 0.5) for a in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff_delay(20, 0.5) == 5.0


def test_rate_guard() -> None:
    guard = RateGuard(min_rate=1000, grace=10, now=0)
    assert not guard.too_slow(100, 5)  # inside grace
    assert guard.too_slow(100, 10)  # 200 bytes in 10 s < 1000 B/s
    fast = RateGuard(min_rate=1000, grace=10, now=0)
    assert not fast.too_slow(20_000, 10)  # window passed, reset
    assert not fast.too_slow(100, 15)
    assert fast.too_slow(100, 20)  # the next window is slow
    off = RateGuard(min_rate=0, grace=1, now=0)
    assert not off.too_slow(0, 100)


def test_declared_length() -> None:
    assert declared_length_ok(None, 10)
    assert declared_length_ok("10", 10)
    assert declared_length_ok("3", 10)  # shorter: a cut, handled by resume
    assert not declared_length_ok("11", 10)
    assert not declared_length_ok("ten", 10)


def test_sources_order_and_dedupe() -> None:
    sources = sources_for(
        ART,
        "http://p1:8080/stable/x86_64/manifest.json",
        mirrors=["http://m2/base", "http://m1/x/"],
        other_manifests=["http://p2:8081/stable/x86_64/manifest.json"],
    )
    assert [s.location for s in sources] == [
        "http://p1:8080/stable/x86_64/vmlinuz",
        "http://m1/x/vmlinuz",
        "http://m2/base/vmlinuz",
        "http://p2:8081/stable/x86_64/vmlinuz",
    ]
    assert [s.role for s in sources] == ["provider", "mirror", "mirror", "extra-provider"]


def test_local_locations() -> None:
    assert artifact_location("/media/usb/manifest.json", "vmlinuz") == "/media/usb/vmlinuz"
    assert artifact_location("/srv/mirror/", "vmlinuz") == "/srv/mirror/vmlinuz"
    assert Source("/srv/mirror/vmlinuz").origin == "/srv/mirror"


def test_source_book_bans_whole_origin() -> None:
    book = SourceBook()
    a = Source("http://p1:8080/x/vmlinuz")
    a2 = Source("http://p1:8080/x/initramfs.img")
    b = Source("http://p2:8080/x/vmlinuz")
    c = Source("http://p3:8080/x/vmlinuz")
    book.ban(a, "sha256 mismatch")
    book.mark_unreachable(c, "refused")
    assert book.usable([a, a2, b, c]) == [b]


def test_progress_formatting() -> None:
    assert format_bytes(512) == "512 B"
    assert format_bytes(3 * 1024 * 1024) == "3.0 MiB"
    assert format_eta(65) == "01:05"
    assert format_eta(3725) == "1:02:05"
    assert format_eta(None) == "--:--"
    line = status_line("kernel", 50_000_000, 100_000_000, 1.0)
    assert line.startswith("kernel  47.7 MiB / 95.4 MiB   50%  50.0 MB/s  ETA 00:01")


def test_progress_plain_lines_and_tty_line() -> None:
    plain = io.StringIO()
    progress = Progress(plain, tty=False, interval=0.0)
    progress.start("kernel", 100)
    progress.add(50)
    assert plain.getvalue().startswith("INFO kernel  50 B / 100 B   50%")
    tty = io.StringIO()
    live = Progress(tty, tty=True, interval=0.0)
    live.start("initramfs", 10)
    live.add(10)
    live.finish()
    assert tty.getvalue().startswith("\r\x1b[Kinitramfs  10 B / 10 B  100%")
    assert tty.getvalue().endswith("\r\x1b[K")
    quiet = io.StringIO()
    off = Progress(quiet, enabled=False, tty=True, interval=0.0)
    off.start("kernel", 10)
    off.add(10)
    off.finish()
    assert quiet.getvalue() == ""


def test_completed_ranges_examples() -> None:
    done = CompletedRanges()
    assert done.prefix == 0
    done.add(10, 5)
    assert done.prefix == 0 and done.total == 5
    done.add(0, 10)
    assert done.prefix == 15
    done.add(20, 5)
    done.add(15, 5)
    assert done.prefix == 25 and done.total == 25
    done.add(3, 4)  # overlap changes nothing
    done.add(7, 0)
    assert done.prefix == 25 and done.total == 25


@given(
    cuts=st.lists(st.integers(min_value=1, max_value=10_000), min_size=0, max_size=40, unique=True),
    order=st.randoms(use_true_random=False),
)
def test_completed_ranges_any_order(cuts: list[int], order: Any) -> None:
    size = 10_001
    bounds = [0, *sorted(cuts), size]
    pieces = list(itertools.pairwise(bounds))
    order.shuffle(pieces)
    done = CompletedRanges()
    last = 0
    for start, end in pieces:
        done.add(start, end - start)
        assert done.prefix >= last  # never goes back
        last = done.prefix
        contiguous = 0
        covered = {p for p in pieces[: pieces.index((start, end)) + 1]}
        while any(s == contiguous for s, _ in covered):
            contiguous = next(e for s, e in covered if s == contiguous)
        assert done.prefix == contiguous
    assert done.prefix == size and done.total == size
