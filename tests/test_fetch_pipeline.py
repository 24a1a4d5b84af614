"""The byte sinks of phase-fetch on real files: in-order hash+write, out-of-order ranges."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

from phase_client.fetch.pipeline import (
    HashWritePipeline,
    PrefixHasher,
    RangeWriter,
    Sink,
    WriteError,
)

DATA = random.Random(1).randbytes(5 * 1024 * 1024 + 123)


def feed(sink: Sink, data: bytes, step: int) -> None:
    for offset in range(0, len(data), step):
        piece = data[offset : offset + step]
        view = sink.buffer()
        view[: len(piece)] = piece
        sink.submit(view, len(piece))


def test_pipeline_hashes_and_writes_in_order(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "part", os.O_RDWR | os.O_CREAT)
    try:
        pipeline = HashWritePipeline(fd, buffers=3, size=64 * 1024)
        feed(pipeline, b"garbage that a 200 reply makes us throw away", 7)
        pipeline.reset()
        feed(pipeline, DATA, 50_000)
        assert pipeline.hexdigest() == hashlib.sha256(DATA).hexdigest()
        assert pipeline.have == len(DATA)
        pipeline.close()
    finally:
        os.close(fd)
    assert (tmp_path / "part").read_bytes() == DATA


def test_pipeline_write_error_is_a_write_error(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "part", os.O_RDONLY | os.O_CREAT)  # writes fail with EBADF
    try:
        pipeline = HashWritePipeline(fd, buffers=2, size=1024)
        with pytest.raises(WriteError):
            feed(pipeline, DATA[:100_000], 1024)
            pipeline.drain()
        pipeline.close()
    finally:
        os.close(fd)
    assert not issubclass(WriteError, OSError)


def test_prefix_hasher_out_of_order(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "part", os.O_RDWR | os.O_CREAT)
    try:
        os.ftruncate(fd, len(DATA))
        hasher = PrefixHasher(fd, len(DATA))
        starts = list(range(0, len(DATA), 300_001))
        random.Random(2).shuffle(starts)
        for start in starts:
            writer = RangeWriter(fd, start, 4096, hasher.written)
            feed(writer, DATA[start : start + 300_001], 4096)
        assert hasher.finish() == hashlib.sha256(DATA).hexdigest()
        incomplete = PrefixHasher(fd, len(DATA))
        incomplete.written(0, 1000)
        incomplete.written(2000, len(DATA) - 2000)
        assert incomplete.finish() == ""  # a hole: no digest
    finally:
        os.close(fd)
