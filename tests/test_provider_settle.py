"""A provider never signs a file that is still being written: settle time, and plasmd publish."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import pytest

from phase_client.keys import SigningKey
from phase_client.manifest import parse_manifest
from phase_client.provider.catalog import Catalog, describe_changes
from phase_client.provider.hashcache import HashCache
from phase_client.provider.publish import publish
from phase_client.provider.statedir import StateDir
from tests.conftest import run_tool
from tests.provider_helpers import ServerProcess, serve_args, write_random

SETTLE = 5.0


class Clocks:
    """A wall clock and a monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.mono = 1000.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def settle_catalog(root: Path, state: StateDir, key: SigningKey, clocks: Clocks) -> Catalog:
    cache = HashCache(state.hash_cache_path)
    return Catalog(
        root=root,
        channel_dirs={},
        expected_channels=(),
        expected_arches=(),
        key=key,
        hasher=cache.sha256,
        last_sequence=state.last_sequence,
        record_sequence=state.record_sequence,
        validity_days=7,
        clock=lambda: clocks.wall,
        monotonic=lambda: clocks.mono,
        settle_time=SETTLE,
    )


def touch(path: Path, mtime: float) -> None:
    os.utime(path, (mtime, mtime))


def kernel_hash(entry_bytes: bytes) -> str:
    return parse_manifest(entry_bytes).artifacts["kernel"].sha256


def test_a_file_being_written_is_not_signed_until_it_settles(
    tmp_path: Path, key: SigningKey
) -> None:
    root = tmp_path / "art"
    kernel = root / "stable/x86_64/vmlinuz"
    kernel.parent.mkdir(parents=True)
    clocks = Clocks()
    clocks.wall = 2_000_000_000.0
    catalog = settle_catalog(root, StateDir(tmp_path / "state"), key, clocks)
    whole = os.urandom(64 * 1024)
    with kernel.open("wb") as handle:
        for part in range(4):  # a slow writer: a quarter, then a scan, then the next quarter
            handle.write(whole[part * 16384 : (part + 1) * 16384])
            handle.flush()
            touch(kernel, clocks.wall)  # written "now"
            snapshot = catalog.scan()
            assert snapshot.entries == {}, f"signed after {part + 1} quarters"
            assert snapshot.pending == {"stable/x86_64": "vmlinuz"}
            assert "stable/x86_64" not in snapshot.missing
            clocks.advance(SETTLE / 2)  # less than the settle time between two writes
    clocks.advance(SETTLE / 2)  # now unchanged for the whole settle time
    snapshot = catalog.scan()
    assert list(snapshot.entries) == ["stable/x86_64"]
    assert snapshot.pending == {}
    entry = snapshot.entries["stable/x86_64"]
    assert kernel_hash(entry.manifest_bytes) == hashlib.sha256(whole).hexdigest()
    assert entry.files["vmlinuz"].size == len(whole)


def test_a_file_seen_unchanged_settles_even_with_an_mtime_in_the_future(
    tmp_path: Path, key: SigningKey
) -> None:
    root = tmp_path / "art"
    kernel = root / "stable/x86_64/vmlinuz"
    write_random(kernel, 4096)
    clocks = Clocks()
    clocks.wall = 1_000_000_000.0
    touch(kernel, clocks.wall + 10**6)  # a clock that jumped, or a tar from elsewhere
    catalog = settle_catalog(root, StateDir(tmp_path / "state"), key, clocks)
    assert catalog.scan().pending == {"stable/x86_64": "vmlinuz"}
    clocks.advance(SETTLE)
    assert list(catalog.scan().entries) == ["stable/x86_64"]


def test_old_files_are_offered_at_once_and_a_replacement_waits(
    tmp_path: Path, key: SigningKey
) -> None:
    root = tmp_path / "art"
    kernel = root / "stable/x86_64/vmlinuz"
    old = write_random(kernel, 4096, seed=1)
    clocks = Clocks()
    clocks.wall = kernel.stat().st_mtime + 3600  # written an hour ago
    catalog = settle_catalog(root, StateDir(tmp_path / "state"), key, clocks)
    first = catalog.scan()
    assert list(first.entries) == ["stable/x86_64"]
    entry = first.entries["stable/x86_64"]
    write_random(kernel, 8192, seed=2)  # rewritten in place, just now
    touch(kernel, clocks.wall)
    during = catalog.scan()
    # The combination stays offered with its last signed manifest meanwhile.
    assert during.entries["stable/x86_64"] is entry
    assert kernel_hash(entry.manifest_bytes) == hashlib.sha256(old).hexdigest()
    assert describe_changes(first, during, first=False) == [
        (logging.INFO, "Waiting for stable/x86_64 to settle: vmlinuz still changing")
    ]
    clocks.advance(SETTLE)
    after = catalog.scan()
    assert after.entries["stable/x86_64"].files["vmlinuz"].size == 8192
    lines = describe_changes(during, after, first=False)
    assert [level for level, _ in lines] == [logging.INFO]
    assert lines[0][1].startswith("Updated stable/x86_64")


def test_served_by_a_real_server_only_once_complete(tmp_path: Path) -> None:
    art = tmp_path / "art"
    (art / "stable/x86_64").mkdir(parents=True)
    kernel = art / "stable/x86_64/vmlinuz"
    whole = os.urandom(256 * 1024)
    args = serve_args(art, tmp_path / "state", "--scan-interval", "0.1", "--settle-time", "8")
    server = ServerProcess(args)
    try:
        server.started()
        with kernel.open("wb") as handle:
            handle.write(whole[:1000])
            handle.flush()
            server.wait_for(r"^INFO Waiting for stable/x86_64 to settle: vmlinuz still changing$")
            code, body = get(server.port, "/status")
            assert code == 200 and json.loads(body)["offered"] == []
            assert json.loads(body)["pending"] == {"stable/x86_64": "vmlinuz"}
            assert get(server.port, "/stable/x86_64/manifest.json")[0] == 404
            handle.write(whole[1000:])
        server.wait_for(r"^INFO Advertising stable/x86_64$")
        code, data = get(server.port, "/stable/x86_64/manifest.json")
        assert code == 200
        assert kernel_hash(data) == hashlib.sha256(whole).hexdigest()
        assert get(server.port, "/stable/x86_64/vmlinuz") == (200, whole)
        assert not any(line.startswith("INFO Updated") for line in server.lines)
    finally:
        assert server.stop() == 0


def get(port: int, path: str) -> tuple[int, bytes]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# -- plasmd publish ---------------------------------------------------------------------------


def test_publish_renames_a_complete_copy_into_place(tmp_path: Path) -> None:
    source = tmp_path / "build" / "vmlinuz"
    data = write_random(source, 300_000)
    art = tmp_path / "art"
    art.mkdir()
    result = publish(source, art, "stable", "amd64")
    target = art / "stable/x86_64/vmlinuz"
    assert result.path == target and target.read_bytes() == data
    assert result.sha256 == hashlib.sha256(data).hexdigest() and result.size == len(data)
    assert sorted(os.listdir(target.parent)) == ["vmlinuz"]  # no temp file left
    assert target.stat().st_mode & 0o777 == 0o644


def test_publish_replaces_a_symlink_instead_of_writing_through_it(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"precious")
    combo = tmp_path / "art/stable/x86_64"
    combo.mkdir(parents=True)
    (combo / "vmlinuz").symlink_to(outside)
    source = tmp_path / "new-kernel"
    source.write_bytes(b"new kernel")
    publish(source, tmp_path / "art", "stable", "x86_64", "kernel")
    assert outside.read_bytes() == b"precious"
    assert not (combo / "vmlinuz").is_symlink()
    assert (combo / "vmlinuz").read_bytes() == b"new kernel"


def test_publish_never_follows_a_symlinked_directory(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "art/stable").mkdir(parents=True)
    (tmp_path / "art/stable/x86_64").symlink_to(elsewhere)
    source = tmp_path / "vmlinuz"
    source.write_bytes(b"k")
    result = run_tool(
        "plasmd", "publish", str(source), "--artifacts", str(tmp_path / "art"), "--arch", "x86_64"
    )
    assert result.returncode == 2
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and "symbolic link" in lines[0], lines
    assert os.listdir(elsewhere) == []


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--as", "bzImage"], "--as bzImage is not a file a provider serves"),
        (["--channel", "Bad Name"], "invalid channel"),
        (["--artifacts", "/nonexistent-plasmd-dir"], "does not exist"),
    ],
)
def test_publish_bad_input_is_one_line_exit_2(tmp_path: Path, argv: list[str], needle: str) -> None:
    source = tmp_path / "vmlinuz"
    source.write_bytes(b"k")
    (tmp_path / "art").mkdir()
    if "--artifacts" not in argv:
        argv = [*argv, "--artifacts", str(tmp_path / "art")]
    result = run_tool("plasmd", "publish", str(source), *argv)
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert needle in stderr.strip().splitlines()[-1] and "Traceback" not in stderr


def test_publish_takes_the_directory_from_the_config(tmp_path: Path) -> None:
    (tmp_path / "art").mkdir()
    config = tmp_path / "plasmd.toml"
    config.write_text('[provider]\nartifacts_dir = "art"\n')
    source = tmp_path / "initrd"
    source.write_bytes(b"initramfs bytes")
    env = dict(os.environ, PLASMD_CONFIG=str(config))
    result = run_tool(
        "plasmd", "publish", str(source), "--as", "initramfs", "--arch", "arm64", "--json", env=env
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["path"] == str(tmp_path / "art/stable/arm64/initramfs.img")
    assert Path(report["path"]).read_bytes() == b"initramfs bytes"
