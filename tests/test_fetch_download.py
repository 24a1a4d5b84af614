"""phase-fetch against real local HTTP servers: the good path and every misbehaviour.

Runs the command in-process (``cli.fetch.main``) for speed; the servers are real sockets on
127.0.0.1 with port 0 (tests/fetch_servers.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from phase_client.cli.fetch import main as fetch_main
from phase_client.manifest import dump_document

from .conftest import key_from_byte
from .fetch_servers import Behaviour, FileServer, dead_url, publish, signed_manifest

KEY = key_from_byte(21)
OTHER = key_from_byte(22)
MiB = 1024 * 1024
PREFIX = "/stable/x86_64/"


def blob(size: int, seed: int = 0) -> bytes:
    """Deterministic, incompressible-looking test data."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest() * 64
        counter += 1
    return bytes(out[:size])


@pytest.fixture
def server() -> Iterator[FileServer]:
    with FileServer() as s:
        yield s


@pytest.fixture
def second() -> Iterator[FileServer]:
    with FileServer() as s:
        yield s


def run_fetch(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = fetch_main(["--json", "--key", KEY.public.keyid, *argv])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


def files_in(directory: Path) -> list[str]:
    return sorted(os.listdir(directory)) if directory.exists() else []


ARTS = {"kernel": blob(3 * MiB, 1), "initramfs": blob(MiB // 2, 2)}


def test_good_fetch_writes_verified_files(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = signed_manifest(KEY, ARTS)
    url = publish(server, document, ARTS)
    out = tmp_path / "out"
    code, summary, err = run_fetch(capsys, "--manifest", url, "--output", str(out))
    assert code == 0, err
    assert files_in(out) == ["cmdline", "initramfs", "kernel", "manifest.json"]
    assert (out / "kernel").read_bytes() == ARTS["kernel"]
    assert (out / "initramfs").read_bytes() == ARTS["initramfs"]
    assert (out / "cmdline").read_text() == "console=ttyS0 quiet\n"
    assert (out / "manifest.json").read_bytes() == dump_document(document)
    kernel = summary["artifacts"]["kernel"]
    assert kernel["bytes"] == 3 * MiB and kernel["source"] == server.url(PREFIX + "vmlinuz")
    assert kernel["retries"] == 0 and kernel["resumed"] is False and kernel["cached"] is False
    assert summary["manifest"]["sequence"] == 100
    assert server.served(PREFIX + "vmlinuz") == 3 * MiB


def test_wrong_key_downloads_nothing(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = publish(server, signed_manifest(OTHER, ARTS), ARTS)
    out = tmp_path / "out"
    code, summary, err = run_fetch(capsys, "--manifest", url, "--output", str(out))
    assert code == 1
    assert "no valid signature by a trusted key" in err
    assert summary["ok"] is False
    assert server.requests_for(PREFIX + "vmlinuz") == []
    assert server.requests_for(PREFIX + "initramfs.img") == []
    assert files_in(out) == []


def test_tampered_artifact_is_refused(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = publish(server, signed_manifest(KEY, ARTS), ARTS)
    server.behave(PREFIX + "vmlinuz", Behaviour(tamper=True))
    out = tmp_path / "out"
    code, _, err = run_fetch(capsys, "--manifest", url, "--output", str(out))
    assert code == 1
    line = err.strip().splitlines()[-1]
    assert line.startswith("phase-fetch: kernel: no source delivered verified bytes")
    assert server.url(PREFIX + "vmlinuz") in line and "sha256 mismatch" in line
    assert files_in(out) == []  # no final file, no part file


def test_bad_source_is_banned_and_mirror_used(
    server: FileServer, second: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = publish(server, signed_manifest(KEY, ARTS), ARTS)
    publish(second, signed_manifest(KEY, ARTS), ARTS)
    # Artifacts are fetched in name order: initramfs, then kernel.
    server.behave(PREFIX + "initramfs.img", Behaviour(tamper=True))
    out = tmp_path / "out"
    code, summary, err = run_fetch(
        capsys, "--manifest", url, "--mirror", second.url(PREFIX), "--output", str(out)
    )
    assert code == 0, err
    assert (out / "initramfs").read_bytes() == ARTS["initramfs"]
    initramfs = summary["artifacts"]["initramfs"]
    assert initramfs["source"] == second.url(PREFIX + "initramfs.img")
    assert "sha256 mismatch" in initramfs["failures"][0]
    assert initramfs["received"] == 2 * len(ARTS["initramfs"])
    # The provider that lied about the initramfs is not asked for the kernel at all.
    assert server.requests_for(PREFIX + "vmlinuz") == []
    assert summary["artifacts"]["kernel"]["source"] == second.url(PREFIX + "vmlinuz")


def test_oversized_body_refused_before_reading(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = publish(server, signed_manifest(KEY, ARTS), ARTS)
    server.behave(PREFIX + "vmlinuz", Behaviour(extra=10 * MiB))
    code, _, err = run_fetch(capsys, "--manifest", url, "--output", str(tmp_path / "o"))
    assert code == 1
    assert "declares" in err and "more than the" in err
    assert files_in(tmp_path / "o") == []


def test_endless_body_aborted_at_the_signed_size(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = publish(server, signed_manifest(KEY, ARTS), ARTS)
    server.behave(PREFIX + "vmlinuz", Behaviour(endless=True))
    code, _, err = run_fetch(capsys, "--manifest", url, "--output", str(tmp_path / "o"))
    assert code == 1
    assert "sent more than the 3145728 bytes signed" in err
    # Aborted at once: the server got rid of little more than the file before the client left
    # (socket buffers), nowhere near its 256 MiB of junk.
    assert server.served(PREFIX + "vmlinuz") < 3 * MiB + 32 * MiB
    assert files_in(tmp_path / "o") == []


def test_cut_connection_resumes_with_range(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    size = 4 * MiB
    arts = {"kernel": blob(size, 3)}
    url = publish(server, signed_manifest(KEY, arts), arts)
    server.behave(PREFIX + "vmlinuz", Behaviour(cut_at=size // 2))
    out = tmp_path / "out"
    code, summary, err = run_fetch(capsys, "--manifest", url, "--output", str(out))
    assert code == 0, err
    assert (out / "kernel").read_bytes() == arts["kernel"]
    kernel = summary["artifacts"]["kernel"]
    assert kernel["resumed"] is True and kernel["retries"] == 1
    requests = server.requests_for(PREFIX + "vmlinuz")
    assert [r.range for r in requests] == [None, f"bytes={size // 2}-{size - 1}"]
    assert requests[1].status == 206
    # Only the missing half was served again, not the whole file.
    assert requests[1].sent == size - size // 2
    assert server.served(PREFIX + "vmlinuz") == size


def test_server_ignoring_range_means_start_over(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    size = 2 * MiB
    arts = {"kernel": blob(size, 4)}
    url = publish(server, signed_manifest(KEY, arts), arts)
    server.behave(PREFIX + "vmlinuz", Behaviour(cut_at=MiB, ignore_range=True))
    out = tmp_path / "out"
    code, summary, err = run_fetch(capsys, "--manifest", url, "--output", str(out))
    assert code == 0, err
    assert (out / "kernel").read_bytes() == arts["kernel"]
    assert summary["artifacts"]["kernel"]["restarted"] is True
    requests = server.requests_for(PREFIX + "vmlinuz")
    assert [(r.range, r.status) for r in requests] == [
        (None, 200),
        (f"bytes={MiB}-{size - 1}", 200),
    ]


def test_wrong_content_range_drops_the_source(
    server: FileServer, second: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    size = 2 * MiB
    arts = {"kernel": blob(size, 5)}
    url = publish(server, signed_manifest(KEY, arts), arts)
    publish(second, signed_manifest(KEY, arts), arts)
    server.behave(PREFIX + "vmlinuz", Behaviour(cut_at=MiB, wrong_content_range=True))
    out = tmp_path / "out"
    code, summary, err = run_fetch(
        capsys, "--manifest", url, "--mirror", second.url(PREFIX), "--output", str(out)
    )
    assert code == 0, err
    failures = summary["artifacts"]["kernel"]["failures"]
    assert len(failures) == 1 and "bad range reply" in failures[0]
    assert (out / "kernel").read_bytes() == arts["kernel"]


def test_dead_first_manifest_and_dead_mirror(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = publish(server, signed_manifest(KEY, ARTS), ARTS)
    dead = dead_url(PREFIX + "manifest.json")
    out = tmp_path / "out"
    code, summary, err = run_fetch(
        capsys, "--manifest", dead, "--manifest", url, "--output", str(out)
    )
    assert code == 0, err
    assert summary["manifest"]["source"] == url
    # A dead mirror listed in the manifest's urls comes after the provider: not needed here;
    # a local manifest whose only source is dead gives exit 3 with the reason.
    local = tmp_path / "manifest.json"
    local.write_bytes(server.state.files[PREFIX + "manifest.json"])
    code, summary, err = run_fetch(
        capsys,
        "--manifest",
        str(local),
        "--mirror",
        dead_url("/mirror/"),
        "--output",
        str(tmp_path / "o2"),
    )
    assert code == 3
    assert "phase-fetch: initramfs: no source could deliver it" in err
    # In words, without urllib3's class names or its connection object's repr.
    assert "cannot connect: " in err and "Connection refused" in err, err
    assert "NewConnectionError" not in err and "Connection(" not in err, err
    assert files_in(tmp_path / "o2") == []


def test_no_manifest_reachable_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, summary, err = run_fetch(
        capsys, "--manifest", dead_url("/m.json"), "--output", str(tmp_path / "o")
    )
    assert code == 3 and "no manifest reachable" in err
    assert summary == {
        "ok": False,
        "error": {
            "exit_code": 3,
            "reason": "unreachable",
            "message": err.strip().split(": ", 1)[1],
        },
    }


def test_slow_source_dropped_for_the_next(
    server: FileServer, second: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = publish(server, signed_manifest(KEY, ARTS), ARTS)
    publish(second, signed_manifest(KEY, ARTS), ARTS)
    server.behave(PREFIX + "vmlinuz", Behaviour(drip=2000))
    out = tmp_path / "out"
    code, summary, err = run_fetch(
        capsys,
        *("--manifest", url, "--mirror", second.url(PREFIX), "--output", str(out)),
        *("--min-rate", "64", "--grace", "1"),
    )
    assert code == 0, err
    failures = summary["artifacts"]["kernel"]["failures"]
    assert len(failures) == 1 and "too slow" in failures[0]
    assert summary["artifacts"]["kernel"]["source"] == second.url(PREFIX + "vmlinuz")
    assert (out / "kernel").read_bytes() == ARTS["kernel"]


def test_stalled_source_times_out_then_next(
    server: FileServer, second: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = publish(server, signed_manifest(KEY, ARTS), ARTS)
    publish(second, signed_manifest(KEY, ARTS), ARTS)
    server.behave(PREFIX + "vmlinuz", Behaviour(stall_after=MiB))
    out = tmp_path / "out"
    code, summary, err = run_fetch(
        capsys,
        *("--manifest", url, "--mirror", second.url(PREFIX), "--output", str(out)),
        *("--timeout", "1", "--retries", "1"),
    )
    assert code == 0, err
    kernel = summary["artifacts"]["kernel"]
    assert "gave up after 1 resume attempts" in kernel["failures"][0]
    assert kernel["source"] == second.url(PREFIX + "vmlinuz")


def test_manifest_too_large(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big = server.add("/big/manifest.json", b" " * (MiB + 1))
    code, _, err = run_fetch(capsys, "--manifest", big, "--output", str(tmp_path / "o"))
    assert code == 1 and "over the 1 MiB limit" in err
    endless = server.add("/endless/manifest.json", b"{}", Behaviour(endless=True))
    code, _, err = run_fetch(capsys, "--manifest", endless, "--output", str(tmp_path / "o"))
    assert code == 1 and "larger than the 1 MiB limit" in err
    assert server.served("/endless/manifest.json") < 64 * MiB


def test_cache_hit_and_corrupt_blob(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = publish(server, signed_manifest(KEY, ARTS), ARTS)
    cache = tmp_path / "cache"
    code, summary, err = run_fetch(
        capsys, "--manifest", url, "--cache", str(cache), "--output", str(tmp_path / "a")
    )
    assert code == 0, err
    kernel_hex = hashlib.sha256(ARTS["kernel"]).hexdigest()
    assert (cache / "sha256" / kernel_hex).read_bytes() == ARTS["kernel"]
    served = server.served(PREFIX + "vmlinuz")
    code, summary, err = run_fetch(
        capsys, "--manifest", url, "--cache", str(cache), "--output", str(tmp_path / "b")
    )
    assert code == 0, err
    assert summary["artifacts"]["kernel"]["cached"] is True
    assert summary["artifacts"]["kernel"]["source"] == "cache"
    assert server.served(PREFIX + "vmlinuz") == served  # not downloaded again
    assert (tmp_path / "b" / "kernel").read_bytes() == ARTS["kernel"]
    # A blob changed behind our back is noticed (re-hashed on use) and fetched again.
    blob_path = cache / "sha256" / kernel_hex
    blob_path.unlink()  # break a possible hard link with tmp_path/a/kernel first
    blob_path.write_bytes(b"X" + ARTS["kernel"][1:])
    code, summary, err = run_fetch(
        capsys, "--manifest", url, "--cache", str(cache), "--output", str(tmp_path / "c")
    )
    assert code == 0, err
    assert summary["artifacts"]["kernel"]["cached"] is False
    assert "corrupt" in err
    assert server.served(PREFIX + "vmlinuz") == served + len(ARTS["kernel"])
    assert blob_path.read_bytes() == ARTS["kernel"]


def test_rollback_state(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    url = publish(server, signed_manifest(KEY, ARTS, sequence=200), ARTS)
    code, _, err = run_fetch(
        capsys, "--manifest", url, "--state-dir", str(state), "--output", str(tmp_path / "a")
    )
    assert code == 0, err
    assert (
        json.loads((state / "accepted.json").read_text())["accepted"]["stable/x86_64"]["sequence"]
        == 200
    )
    old = server.add("/old/manifest.json", dump_document(signed_manifest(KEY, ARTS, sequence=7)))
    before = len(server.state.requests)
    code, _, err = run_fetch(
        capsys, "--manifest", old, "--state-dir", str(state), "--output", str(tmp_path / "b")
    )
    assert code == 1 and "sequence 7 is lower than 200" in err
    assert len(server.state.requests) == before + 1  # the manifest only
    assert files_in(tmp_path / "b") == []


def test_alternatives_first_verified_wins_and_same_content_adds_sources(
    server: FileServer, second: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = signed_manifest(KEY, ARTS)
    forged = server.add("/forged/manifest.json", dump_document(signed_manifest(OTHER, ARTS)))
    url = publish(server, document, ARTS, prefix="/a/")
    other = publish(second, document, ARTS, prefix="/b/")
    code, summary, err = run_fetch(
        capsys,
        *("--manifest", forged, "--manifest", url, "--manifest", other),
        *("--output", str(tmp_path / "o")),
    )
    assert code == 0, err
    assert summary["manifest"]["source"] == url
    assert summary["manifest"]["extra_sources"] == [other]


def test_artifact_filter_and_usage_errors(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = publish(server, signed_manifest(KEY, ARTS), ARTS)
    out = tmp_path / "o"
    code, _, err = run_fetch(
        capsys, "--manifest", url, "--artifact", "kernel", "--output", str(out)
    )
    assert code == 0, err
    assert files_in(out) == ["cmdline", "kernel", "manifest.json"]
    assert server.requests_for(PREFIX + "initramfs.img") == []
    code, _, err = run_fetch(capsys, "--manifest", url, "--artifact", "dtb", "--output", str(out))
    assert code == 2 and "artifact dtb not in the manifest" in err
    code, _, err = run_fetch(capsys, "--output", str(out))
    assert code == 2 and "no manifest given" in err
    with pytest.raises(SystemExit) as exc:
        fetch_main(["--retries", "-1"])
    assert exc.value.code == 2


def test_dripping_manifest_server_is_given_up(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = publish(server, signed_manifest(KEY, ARTS), ARTS)
    # A 64-byte piece every 0.3 s: never a read timeout (1 s), but ~5 s for the whole manifest.
    server.behave(PREFIX + "manifest.json", Behaviour(drip=200))
    code, _, err = run_fetch(capsys, "--manifest", url, "--timeout", "1", "--output", str(tmp_path))
    assert code == 3
    assert "too slow (no manifest after 3s)" in err


def test_disk_full_is_our_failure_not_the_sources(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 1 MiB tmpfs as output (root, as on CI): exit 2, one line, no part file left."""
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        url = publish(server, signed_manifest(KEY, ARTS), ARTS)
        code, _, err = run_fetch(capsys, "--manifest", url, "--output", str(small / "out"))
        assert code == 2, err
        assert "cannot write the part file: No space left on device" in err.splitlines()[-1]
        assert files_in(small / "out") == []
        # The source was not blamed: it served one artifact and was not banned or marked bad.
        assert "sha256" not in err and "no source" not in err
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_signed_mirror_urls_are_the_second_source(
    server: FileServer, second: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mirror = second.add("/mirror/kernel.bin", ARTS["kernel"])
    document = signed_manifest(KEY, ARTS, urls={"kernel": [mirror]})
    url = publish(server, document, ARTS)
    server.behave(PREFIX + "vmlinuz", Behaviour(status=404))
    code, summary, err = run_fetch(capsys, "--manifest", url, "--output", str(tmp_path / "o"))
    assert code == 0, err
    kernel = summary["artifacts"]["kernel"]
    assert kernel["source"] == mirror
    assert kernel["failures"] == [f"{server.url(PREFIX + 'vmlinuz')}: HTTP 404 Not Found"]
