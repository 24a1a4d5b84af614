"""phase-fetch against hostile manifest sources: header drips, documents that break parsers,
FIFOs where a file was expected. One bad alternative never costs the run, and never holds it.

The bounds on elapsed time below are hang detectors (a request that never ends), far above what
the runs need; they are not speed goals.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .fetch_servers import Behaviour, FileServer, HeaderDripServer, publish, signed_manifest
from .test_fetch_download import ARTS, KEY, PREFIX, run_fetch


@pytest.fixture
def drip() -> Iterator[HeaderDripServer]:
    with HeaderDripServer() as server:
        yield server


@pytest.fixture
def server() -> Iterator[FileServer]:
    with FileServer() as s:
        yield s


def test_header_drip_ends_at_the_request_deadline(
    drip: HeaderDripServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    code, _, err = run_fetch(
        capsys, "--manifest", drip.url, "--timeout", "1", "--output", str(tmp_path / "o")
    )
    elapsed = time.monotonic() - started
    assert code == 3, err
    assert "no response headers within 1s" in err
    assert elapsed < 10, f"a header drip held the fetch for {elapsed:.1f}s"
    assert not (tmp_path / "o").exists() or os.listdir(tmp_path / "o") == []


def test_a_good_alternative_does_not_wait_for_a_drip(
    drip: HeaderDripServer,
    server: FileServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    good = publish(server, signed_manifest(KEY, ARTS), ARTS)
    started = time.monotonic()
    code, summary, err = run_fetch(
        capsys,
        *("--manifest", drip.url, "--manifest", good),
        *("--timeout", "30", "--output", str(tmp_path / "o")),
    )
    elapsed = time.monotonic() - started
    assert code == 0, err
    assert summary["manifest"]["source"] == good
    assert f"skipping manifest {drip.url}: no answer in time" in err
    assert elapsed < 15, f"the verified manifest waited {elapsed:.1f}s for the drip"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"sequence": ' + b"9" * 5000 + b"}", id="5000-digit-integer"),
        pytest.param(b"[" * 100_000, id="deep-nesting"),
        pytest.param(b'{"a": "\\ud800"}', id="lone-surrogate"),
        pytest.param(b"\xff" * 100, id="not-utf8"),
    ],
)
def test_a_hostile_alternative_is_that_sources_failure_only(
    body: bytes, server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hostile = server.add("/evil/manifest.json", body)
    good = publish(server, signed_manifest(KEY, ARTS), ARTS)
    code, summary, err = run_fetch(
        capsys, "--manifest", hostile, "--manifest", good, "--output", str(tmp_path / "o")
    )
    assert code == 0, err
    assert summary["manifest"]["source"] == good
    assert f"manifest {hostile}:" in err
    # Alone, the same document is a verification failure (exit 1) in one line, not a crash (70).
    code, _, err = run_fetch(capsys, "--manifest", hostile, "--output", str(tmp_path / "p"))
    assert code == 1, err
    assert len(err.strip().splitlines()) <= 2 and "internal error" not in err


def test_a_fifo_as_the_manifest_fails_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "manifest.json"
    os.mkfifo(fifo)
    started = time.monotonic()
    code, _, err = run_fetch(capsys, "--manifest", str(fifo), "--output", str(tmp_path / "o"))
    assert code == 3, err
    assert "not a regular file" in err
    assert time.monotonic() - started < 10


def test_fifos_in_place_of_a_key_a_state_file_or_a_mirror_file_fail_at_once(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = publish(server, signed_manifest(KEY, ARTS), ARTS)
    fifo_key = tmp_path / "release.pub"
    os.mkfifo(fifo_key)
    state = tmp_path / "state"
    state.mkdir()
    os.mkfifo(state / "accepted.json")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    os.mkfifo(mirror / "vmlinuz")
    started = time.monotonic()
    code, _, err = run_fetch(
        capsys, "--manifest", url, "--key", str(fifo_key), "--output", str(tmp_path / "a")
    )
    assert code == 2 and "not a regular file" in err, err
    code, _, err = run_fetch(
        capsys, "--manifest", url, "--state-dir", str(state), "--output", str(tmp_path / "b")
    )
    assert code == 1 and "state" in err, err
    # The provider's copy is cut after the first byte, so the local mirror is tried: it must be
    # skipped as unreadable, not waited on.
    server.behave(PREFIX + "vmlinuz", Behaviour(status=503))
    code, _, err = run_fetch(
        capsys,
        *("--manifest", url, "--mirror", str(mirror), "--artifact", "kernel"),
        *("--output", str(tmp_path / "c")),
    )
    assert code == 3 and "not a regular file" in err, err
    assert time.monotonic() - started < 20  # hang detector
