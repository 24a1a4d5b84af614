"""Multi-source range split, and interrupted runs (real processes, real signals)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from phase_client.fetch import download as download_module
from phase_client.fetch import fetcher as fetcher_module
from phase_client.fetch.download import Delivered, Settings, find_liars, range_digests
from phase_client.fetch.fetcher import FetchRequest, fetch
from phase_client.manifest import dump_document
from phase_client.trust import TrustPolicy

from .conftest import REPO
from .fetch_servers import Behaviour, FileServer, publish, signed_manifest
from .test_fetch_download import KEY, PREFIX, blob, files_in

MiB = 1024 * 1024


def request(urls: list[str], out: Path, **settings: float) -> FetchRequest:
    return FetchRequest(
        manifests=urls,
        output=out,
        policy=TrustPolicy(keys=(KEY.public,)),
        settings=Settings(split_min=MiB, **settings),  # type: ignore[arg-type]
    )


def test_split_across_two_rate_limited_providers(tmp_path: Path) -> None:
    size = 8 * MiB
    arts = {"kernel": blob(size, 7)}
    document = signed_manifest(KEY, arts)
    # Each provider's uplink: 8 MiB/s for all its connections together.
    with FileServer(rate=8 * MiB) as one, FileServer(rate=8 * MiB) as two:
        urls = [publish(one, document, arts), publish(two, document, arts)]
        summary = fetch(request(urls, tmp_path / "out", connections=4)).to_json()
        assert (tmp_path / "out" / "kernel").read_bytes() == arts["kernel"]
        kernel = summary["artifacts"]["kernel"]
        assert kernel["split"] is True
        shares = [one.served(PREFIX + "vmlinuz"), two.served(PREFIX + "vmlinuz")]
        # Both providers carried a real share of the file, and nothing was fetched twice.
        assert sum(shares) == size
        assert min(shares) >= size // 5, shares
        assert all(r.status == 206 for r in one.requests_for(PREFIX + "vmlinuz"))
        assert set(kernel["sources"]) == {u.replace("manifest.json", "vmlinuz") for u in urls}


def deleted_files_open_under(directory: Path) -> list[str]:
    """This process's open files under ``directory`` that were unlinked."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(directory)) and target.endswith(" (deleted)"):
                found.append(target)
    return found


def test_split_with_a_lying_provider_falls_back_and_bans_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = 4 * MiB
    arts = {"kernel": blob(size, 8), "initramfs": blob(8 * MiB, 9)}
    document = signed_manifest(KEY, arts)
    # While the artifact is fetched again one source at a time, the failed copy is not kept
    # (fetched in place, it would be in RAM twice): only its ranges' digests are.
    held: list[list[str]] = []

    def fetch_whole(*args: Any, **kwargs: Any) -> Any:
        held.append(deleted_files_open_under(tmp_path / "out"))
        return download_module.fetch_whole(*args, **kwargs)

    monkeypatch.setattr(fetcher_module, "fetch_whole", fetch_whole)
    # Rate-limited so that neither provider can take every range before the other starts.
    with FileServer(rate=32 * MiB) as good, FileServer(rate=32 * MiB) as liar:
        urls = [publish(good, document, arts), publish(liar, document, arts)]
        # initramfs is fetched first (name order); the liar tampers with every range of it.
        liar.behave(PREFIX + "initramfs.img", Behaviour(tamper=True))
        summary = fetch(request(urls, tmp_path / "out")).to_json()
        assert held and held == [[]] * len(held)
        initramfs = summary["artifacts"]["initramfs"]
        assert (tmp_path / "out" / "initramfs").read_bytes() == arts["initramfs"]
        assert initramfs["source"] == good.url(PREFIX + "initramfs.img")
        # Hashing the verified file's ranges as the failed split copy's found the liar's...
        assert any(
            f.startswith(liar.url(PREFIX + "initramfs.img") + ": served wrong bytes in range")
            for f in initramfs["failures"]
        ), initramfs["failures"]
        # ...so the kernel came from the good provider alone, not split.
        assert liar.requests_for(PREFIX + "vmlinuz") == []
        assert summary["artifacts"]["kernel"]["split"] is False


def test_liars_are_the_sources_whose_ranges_hash_otherwise(tmp_path: Path) -> None:
    from phase_client.byterange import ByteRange
    from phase_client.fetch.sources import Source

    verified = tmp_path / "verified"
    verified.write_bytes(blob(3 * MiB, 3))
    suspect = tmp_path / "suspect"
    good = verified.read_bytes()
    suspect.write_bytes(good[: 2 * MiB] + b"x" + good[2 * MiB + 1 :])
    honest, lying, short = (Source(f"http://127.0.0.1:{port}/k") for port in (1, 2, 3))
    delivered = [
        (honest, ByteRange(0, 2 * MiB - 1)),
        (lying, ByteRange(2 * MiB, 3 * MiB - 2)),
        (short, ByteRange(3 * MiB - 1, 3 * MiB + 9)),  # past the end of the failed copy
    ]
    suspect_fd, verified_fd = os.open(suspect, os.O_RDONLY), os.open(verified, os.O_RDONLY)
    try:
        digests = range_digests(suspect_fd, delivered)
        assert [d.source for d in digests] == [honest, lying, short]
        assert all(isinstance(d, Delivered) and len(d.sha256) == 32 for d in digests)
        os.close(suspect_fd)
        suspect.unlink()  # the copy itself is not needed any more
        liars = find_liars(verified_fd, digests)
    finally:
        os.close(verified_fd)
    assert liars == {lying: ByteRange(2 * MiB, 3 * MiB - 2)}


def test_split_survives_a_provider_dying_mid_range(tmp_path: Path) -> None:
    size = 6 * MiB
    arts = {"kernel": blob(size, 10)}
    document = signed_manifest(KEY, arts)
    with FileServer(rate=16 * MiB) as steady, FileServer(rate=16 * MiB) as flaky:
        urls = [publish(steady, document, arts), publish(flaky, document, arts)]
        # Every connection to the flaky provider is cut after a little data, forever.
        flaky.behave(PREFIX + "vmlinuz", Behaviour(cut_at=size, cuts=10**6, stall_after=None))
        flaky.behave(PREFIX + "vmlinuz", Behaviour(status=503))
        summary = fetch(request(urls, tmp_path / "out", retries=1, backoff=0.01)).to_json()
        assert (tmp_path / "out" / "kernel").read_bytes() == arts["kernel"]
        kernel = summary["artifacts"]["kernel"]
        assert kernel["split"] is True
        assert any("HTTP 503" in f for f in kernel["failures"])
        assert steady.served(PREFIX + "vmlinuz") == size


def start_fetch(url: str, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "phase_client", "fetch", "--manifest", url),
            *("--key", KEY.public.keyid, "--output", str(out), "--min-rate", "1"),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def wait_for(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size > 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} did not appear within {timeout}s")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_interrupted_run_leaves_no_final_file(tmp_path: Path, sig: signal.Signals) -> None:
    arts = {"kernel": blob(2 * MiB, 11)}
    with FileServer() as server:
        url = publish(server, signed_manifest(KEY, arts), arts)
        server.behave(PREFIX + "vmlinuz", Behaviour(drip=64 * 1024))
        out = tmp_path / "out"
        proc = start_fetch(url, out)
        try:
            wait_for(out / ".kernel.part")
            os.kill(proc.pid, sig)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert not (out / "kernel").exists()
        assert not (out / "manifest.json").exists()
        if sig == signal.SIGKILL:
            # Nothing can clean up after SIGKILL; the part file is never mistaken for a result.
            assert files_in(out) == [".kernel.part"]
        else:
            assert proc.returncode == 130
            assert err.decode().strip().endswith("phase-fetch: interrupted")
            assert files_in(out) == []


def test_help_and_bad_usage() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "phase_client", "fetch", "--help"],
        cwd=REPO,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 0
    text = proc.stdout.decode()
    for needle in ("--manifest", "--mirror", "--cache", "--connections", "exit codes:", "3  no"):
        assert needle in text
    proc = subprocess.run(
        [sys.executable, "-m", "phase_client", "fetch", "--timeout", "zero"],
        cwd=REPO,
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 2 and b"Traceback" not in proc.stderr


def test_split_resumes_a_cut_range_without_refetching(tmp_path: Path) -> None:
    size = 8 * MiB
    arts = {"kernel": blob(size, 12)}
    document = signed_manifest(KEY, arts)
    with FileServer(rate=32 * MiB) as one, FileServer(rate=32 * MiB) as two:
        urls = [publish(one, document, arts), publish(two, document, arts)]
        # Each provider cuts, once, whichever range crosses this offset.
        for server in (one, two):
            server.behave(PREFIX + "vmlinuz", Behaviour(cut_at=size // 2 + 12345))
        summary = fetch(request(urls, tmp_path / "out", backoff=0.01)).to_json()
        kernel = summary["artifacts"]["kernel"]
        assert (tmp_path / "out" / "kernel").read_bytes() == arts["kernel"]
        assert kernel["split"] is True and kernel["resumed"] is True and kernel["retries"] >= 1
        # Every byte crossed the network exactly once: the cut range resumed where it stopped.
        assert one.served(PREFIX + "vmlinuz") + two.served(PREFIX + "vmlinuz") == size
        assert kernel["received"] == size


def test_local_manifest_and_local_files(tmp_path: Path) -> None:
    """A manifest on a USB stick next to its files: no network at all."""
    arts = {"kernel": blob(MiB, 13), "initramfs": blob(MiB // 3, 14)}
    stick = tmp_path / "stick"
    stick.mkdir()
    (stick / "vmlinuz").write_bytes(arts["kernel"])
    (stick / "initramfs.img").write_bytes(arts["initramfs"])
    (stick / "manifest.json").write_bytes(dump_document(signed_manifest(KEY, arts)))
    summary = fetch(request([str(stick / "manifest.json")], tmp_path / "out")).to_json()
    assert summary["artifacts"]["kernel"]["source"] == str(stick / "vmlinuz")
    assert (tmp_path / "out" / "initramfs").read_bytes() == arts["initramfs"]


def test_fetch_imports_stay_light() -> None:
    """The initramfs runs phase-fetch from a zipapp: no zeroconf/kademlia on this path."""
    code = (
        "import sys, phase_client.cli.fetch, phase_client.fetch.fetcher; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('zeroconf', 'kademlia', 'rpcudp', 'urllib3')))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, timeout=60, check=True
    )
    assert proc.stdout.strip() == b"[]"


def peak_rss_kib(url: str, out: Path, work: Path) -> int:
    """phase-fetch's own peak RSS, measured by GNU time (a fork of pytest would inherit ours)."""
    report = work / "rss.txt"
    subprocess.run(
        [
            *("/usr/bin/time", "-f", "%M", "-o", str(report)),
            *(sys.executable, "-m", "phase_client", "fetch", "--quiet", "--manifest", url),
            *("--key", KEY.public.keyid, "--output", str(out)),
        ],
        cwd=REPO,
        check=True,
        timeout=120,
    )
    return int(report.read_text().split()[-1])


def test_memory_stays_flat(tmp_path: Path) -> None:
    small = {"kernel": blob(4 * MiB, 15)}
    large = {"kernel": os.urandom(192 * MiB)}
    with FileServer() as server:
        small_url = publish(server, signed_manifest(KEY, small), small, prefix="/s/")
        large_url = publish(server, signed_manifest(KEY, large), large, prefix="/l/")
        small_rss = peak_rss_kib(small_url, tmp_path / "s", tmp_path)
        large_rss = peak_rss_kib(large_url, tmp_path / "l", tmp_path)
    assert (tmp_path / "l" / "kernel").stat().st_size == 192 * MiB
    # 48x the bytes, (almost) the same memory: the ring buffers, not the artifact, set the size.
    assert large_rss - small_rss < 16 * 1024, (small_rss, large_rss)
    assert large_rss < 64 * 1024


def test_one_connection_means_no_split(tmp_path: Path) -> None:
    arts = {"kernel": blob(4 * MiB, 16)}
    document = signed_manifest(KEY, arts)
    with FileServer() as one, FileServer() as two:
        urls = [publish(one, document, arts), publish(two, document, arts)]
        summary = fetch(request(urls, tmp_path / "out", connections=1)).to_json()
        assert summary["artifacts"]["kernel"]["split"] is False
        assert two.requests_for(PREFIX + "vmlinuz") == []
