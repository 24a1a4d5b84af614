"""The provider's catalog: scanning, signing, hash cache, sequences, mirror mode, refusals."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from phase_client.keys import SigningKey
from phase_client.manifest import dump_document, parse_manifest
from phase_client.provider.catalog import (
    Catalog,
    Snapshot,
    choose_default,
    describe_changes,
    missing_combinations,
)
from phase_client.provider.hashcache import HashCache
from phase_client.provider.signer import generate
from phase_client.provider.statedir import StateDir
from phase_client.trust import TrustPolicy, verify
from tests.conftest import key_from_byte
from tests.provider_helpers import make_tree, write_random

NOW = 1_800_000_000.0


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_catalog(
    root: Path, state: StateDir, key: SigningKey, clock: Clock | None = None, **kw: object
) -> tuple[Catalog, HashCache]:
    cache = HashCache(state.hash_cache_path)
    options: dict[str, object] = {
        "root": root,
        "channel_dirs": {},
        "expected_channels": (),
        "expected_arches": (),
        "key": key,
        "hasher": cache.sha256,
        "last_sequence": state.last_sequence,
        "record_sequence": state.record_sequence,
        "validity_days": 7,
        "clock": clock or Clock(),
    }
    options.update(kw)
    return Catalog(**options), cache  # type: ignore[arg-type]


@pytest.fixture
def state(tmp_path: Path) -> StateDir:
    return StateDir(tmp_path / "state")


def test_seed_layout(tmp_path: Path, state: StateDir, key: SigningKey) -> None:
    root = tmp_path / "art"
    make_tree(root, {"stable/arm64": 4096, "testing/arm64": 2048})
    (root / "stable" / "x86_64").mkdir()
    (root / "testing" / "x86_64").mkdir()
    catalog, _ = make_catalog(root, state, key)
    snap = catalog.scan()
    assert sorted(snap.entries) == ["stable/arm64", "testing/arm64"]
    assert snap.missing == ("stable/x86_64", "testing/x86_64")
    lines = describe_changes(Snapshot(), snap, first=True)
    assert lines == [
        (logging.INFO, "Found 2 channel/arch combinations"),
        (logging.INFO, "Advertising stable/arm64"),
        (logging.INFO, "Advertising testing/arm64"),
        (logging.WARNING, "Missing artifacts for stable/x86_64"),
        (logging.WARNING, "Missing artifacts for testing/x86_64"),
    ]


def test_manifest_is_signed_and_verifiable(
    tmp_path: Path, state: StateDir, key: SigningKey
) -> None:
    root = tmp_path / "art"
    data = make_tree(root, {"stable/x86_64": 10_000})["stable/x86_64"]
    write_random(root / "stable/x86_64/initramfs.img", 3000, seed=9)
    (root / "stable/x86_64/cmdline").write_text("console=ttyS0\n  quiet\n")
    (root / "stable/x86_64/version").write_text("1.2.3\n")
    catalog, _ = make_catalog(root, state, key)
    entry = catalog.scan().entries["stable/x86_64"]
    policy = TrustPolicy(keys=(key.public,), channel="stable", arch="x86_64")
    verified = verify(parse_manifest(entry.manifest_bytes), policy, now=int(NOW))
    assert verified.signed_by == (key.public.keyid,)
    manifest = verified.manifest
    assert manifest.version == "1.2.3"
    assert manifest.cmdline == "console=ttyS0 quiet"
    assert sorted(manifest.artifacts) == ["initramfs", "kernel"]
    assert manifest.artifacts["kernel"].size == len(data)
    assert entry.files["vmlinuz"].size == len(data)
    assert set(entry.files) == {"vmlinuz", "initramfs.img"}


def test_arbitrary_channels_and_arch_aliases(
    tmp_path: Path, state: StateDir, key: SigningKey
) -> None:
    root = tmp_path / "art"
    make_tree(root, {"nightly/riscv64": 100, "edge/amd64": 100})
    (root / "Not A Channel" / "x86_64").mkdir(parents=True)
    (root / "stable" / "x86_64").mkdir(parents=True)  # no kernel: missing, not offered
    catalog, _ = make_catalog(root, state, key)
    snap = catalog.scan()
    assert sorted(snap.entries) == ["edge/x86_64", "nightly/riscv64"]
    assert "stable/x86_64" in snap.missing
    assert snap.routes["/edge/x86_64/vmlinuz"][1] is not None


def test_missing_and_default_rules() -> None:
    assert missing_combinations(
        ["stable"], ["arm64"], ["testing"], ["x86_64"], ["stable/arm64"]
    ) == [
        "stable/x86_64",
        "testing/arm64",
        "testing/x86_64",
    ]
    offered = ["stable/arm64", "stable/x86_64", "testing/x86_64"]
    assert choose_default(offered, None, None, "x86_64") == "stable/x86_64"
    assert choose_default(offered, None, None, "riscv64") == "stable/arm64"
    assert choose_default(offered, "testing", None, "arm64") == "stable/arm64"
    assert choose_default(offered, "testing", None, "riscv64") == "testing/x86_64"
    assert choose_default(offered, "testing", "x86_64", "arm64") == "testing/x86_64"
    assert choose_default(offered, "nightly", None, "x86_64") == "stable/x86_64"
    assert choose_default(["testing/arm64", "beta/x86_64"], None, None, "x86_64") == "beta/x86_64"
    assert choose_default([], None, None, "x86_64") is None


def test_hash_cache_never_rehashes_unchanged_files(
    tmp_path: Path, state: StateDir, key: SigningKey
) -> None:
    root = tmp_path / "art"
    make_tree(root, {"stable/arm64": 50_000, "testing/arm64": 20_000})
    catalog, cache = make_catalog(root, state, key)
    catalog.scan()
    cache.save()
    assert cache.hashed == 2
    catalog.scan()
    assert cache.hashed == 2  # a re-scan reads nothing
    # A restart: a new cache object loaded from the state dir.
    catalog2, cache2 = make_catalog(root, state, key)
    catalog2.scan()
    assert cache2.hashed == 0
    # A changed file (new size and mtime) is hashed again, and only that one.
    write_random(root / "stable/arm64/vmlinuz", 60_000, seed=5)
    catalog2.scan()
    assert cache2.hashed == 1


def test_unchanged_files_keep_their_manifest_until_half_validity(
    tmp_path: Path, state: StateDir, key: SigningKey
) -> None:
    root = tmp_path / "art"
    make_tree(root, {"stable/arm64": 1000})
    clock = Clock()
    catalog, _ = make_catalog(root, state, key, clock=clock)
    first = catalog.scan().entries["stable/arm64"]
    clock.now += 3 * 86400
    assert catalog.scan().entries["stable/arm64"] is first
    clock.now += 0.6 * 86400  # past half of the 7-day validity: re-signed before expiry
    resigned = catalog.scan().entries["stable/arm64"]
    assert resigned is not first
    assert resigned.manifest.sequence > first.manifest.sequence
    assert resigned.manifest.expires_at == int(clock.now) + 7 * 86400
    lines = describe_changes(Snapshot(entries={"stable/arm64": first}), catalog.snapshot, False)
    assert lines[0][1].startswith("Updated stable/arm64: version ")


def test_sequence_grows_across_restarts_even_with_a_clock_behind(
    tmp_path: Path, key: SigningKey
) -> None:
    root = tmp_path / "art"
    make_tree(root, {"stable/arm64": 1000})
    sequences = []
    for _ in range(3):
        state = StateDir(tmp_path / "state")  # a restart reads the counters again
        catalog, _ = make_catalog(root, state, key, clock=Clock(NOW - 1000))
        sequences.append(catalog.scan().entries["stable/arm64"].manifest.sequence)
    assert sequences[0] < sequences[1] < sequences[2]
    saved = json.loads((tmp_path / "state" / "sequences.json").read_text())
    assert saved == {"stable/arm64": sequences[2]}


def test_identity_key_is_created_once(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    first = state.identity()
    path = tmp_path / "state" / "identity.key"
    assert path.stat().st_mode & 0o777 == 0o600
    assert StateDir(tmp_path / "state").identity().public == first.public
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700


def test_changes_are_picked_up(tmp_path: Path, state: StateDir, key: SigningKey) -> None:
    root = tmp_path / "art"
    make_tree(root, {"stable/arm64": 1000})
    catalog, _ = make_catalog(root, state, key)
    before = catalog.scan()
    make_tree(root, {"testing/arm64": 500})
    (root / "stable/arm64/vmlinuz").unlink()
    after = catalog.scan()
    assert list(after.entries) == ["testing/arm64"]
    lines = [message for _, message in describe_changes(before, after, first=False)]
    assert lines == [
        "Advertising testing/arm64",
        "Withdrawing stable/arm64",
        "Missing artifacts for stable/arm64",
    ]
    assert "/stable/arm64/vmlinuz" not in after.routes


def test_symlink_out_of_the_tree_is_refused(
    tmp_path: Path, state: StateDir, key: SigningKey
) -> None:
    root = tmp_path / "art"
    (root / "stable/arm64").mkdir(parents=True)
    secret = tmp_path / "secret"
    secret.write_bytes(b"do not serve")
    (root / "stable/arm64/vmlinuz").symlink_to(secret)
    inner = root / "shared-kernel"
    write_random(inner, 100)
    (root / "testing/arm64").mkdir(parents=True)
    (root / "testing/arm64/vmlinuz").symlink_to(inner)  # inside the tree: fine
    catalog, _ = make_catalog(root, state, key)
    snap = catalog.scan()
    assert list(snap.entries) == ["testing/arm64"]
    assert "outside" in snap.rejected["stable/arm64"]
    assert not any(str(secret) == f.path for e in snap.entries.values() for f in e.files.values())


def test_channel_dirs_from_the_config(tmp_path: Path, state: StateDir, key: SigningKey) -> None:
    make_tree(tmp_path / "s", {"arm64": 100})
    make_tree(tmp_path / "t", {"x86_64": 100})
    catalog, _ = make_catalog(
        None,  # type: ignore[arg-type]
        state,
        key,
        channel_dirs={"stable": tmp_path / "s", "testing": tmp_path / "t"},
        expected_channels=("stable", "testing"),
        expected_arches=("arm64", "x86_64"),
    )
    snap = catalog.scan()
    assert sorted(snap.entries) == ["stable/arm64", "testing/x86_64"]
    assert snap.missing == ("stable/x86_64", "testing/arm64")


# -- mirror mode -----------------------------------------------------------------------------


def presign(root: Path, combo: str, release: SigningKey, **kw: object) -> Path:
    channel, arch = combo.split("/")
    document = generate(
        artifacts_dir=root, channel=channel, arch=arch, key=release, now=NOW - 60, **kw
    )  # type: ignore[arg-type]
    path = root / combo / "manifest.json"
    path.write_bytes(dump_document(document))
    return path


def test_mirror_serves_a_good_presigned_manifest_as_is(
    tmp_path: Path, state: StateDir, key: SigningKey
) -> None:
    root = tmp_path / "art"
    make_tree(root, {"stable/arm64": 5000})
    release = key_from_byte(7)
    path = presign(root, "stable/arm64", release)
    catalog, _ = make_catalog(root, state, key)
    entry = catalog.scan().entries["stable/arm64"]
    assert entry.mirror
    assert entry.manifest_bytes == path.read_bytes()
    assert [s.keyid for s in entry.manifest.signatures] == [release.public.keyid]
    assert state.last_sequence("stable/arm64") is None  # the mirror never signs


@pytest.mark.parametrize("damage", ["content", "missing", "expired", "wrong-combo"])
def test_mirror_with_a_bad_manifest_is_not_offered(
    tmp_path: Path, state: StateDir, key: SigningKey, damage: str
) -> None:
    root = tmp_path / "art"
    make_tree(root, {"stable/arm64": 5000, "stable/x86_64": 100})
    release = key_from_byte(7)
    if damage == "expired":
        presign(root, "stable/arm64", release, expires_in_days=0.0001)
    elif damage == "wrong-combo":
        src = presign(root, "stable/x86_64", release)
        (root / "stable/arm64/manifest.json").write_bytes(src.read_bytes())
        src.unlink()
    else:
        presign(root, "stable/arm64", release)
    if damage == "content":
        write_random(root / "stable/arm64/vmlinuz", 5000, seed=77)
    if damage == "missing":
        (root / "stable/arm64/vmlinuz").unlink()
    catalog, _ = make_catalog(root, state, key)
    snap = catalog.scan()
    assert "stable/arm64" not in snap.entries
    assert "stable/arm64" in snap.rejected
    assert "/stable/arm64/manifest.json" not in snap.routes
    assert "stable/x86_64" in snap.entries  # the others are still offered
    lines = describe_changes(Snapshot(), snap, first=True)
    assert (logging.WARNING, f"Not offering stable/arm64: {snap.rejected['stable/arm64']}") in lines
