"""The root chain as the tools walk it (phase_client/fetch/rootchain.py, docs/trust.md):
phase-verify over files beside the manifest and in the state directory, phase-fetch over a real
HTTP provider on 127.0.0.1, what is kept where, and kexec-boot's re-check with --keys-dir."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from phase_client.cli.fetch import main as fetch_main
from phase_client.cli.verify import main as verify_main
from phase_client.keys import SigningKey
from phase_client.manifest import dump_document

from .fetch_servers import Behaviour, FileServer, HeaderDripServer, publish, signed_manifest
from .test_root import K, R, raw, root_document

NOW = int(time.time())
LATER = NOW + 365 * 86400
ARTS = {"kernel": b"k" * 4096, "initramfs": b"i" * 1024}


def chain(*, expires_at: int = LATER) -> list[dict[str, Any]]:
    """Roots 1, 2, 3: each rotates the root key and the release key (K0 -> K1 -> K2)."""
    return [
        root_document(1, [R[0]], [K[0]], signed_by=[R[0]], expires_at=expires_at),
        root_document(2, [R[1]], [K[1]], signed_by=[R[0], R[1]], expires_at=expires_at),
        root_document(3, [R[2]], [K[2]], signed_by=[R[1], R[2]], expires_at=expires_at),
    ]


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    """What the stick bakes: root 1 as DIR/root.json (and a stray .pub that must be ignored)."""
    directory = tmp_path / "keys"
    directory.mkdir()
    (directory / "root.json").write_bytes(raw(chain()[0]))
    (directory / "stray.pub").write_text(K[4].public.keyid + "\n")
    return directory


def write_manifest(directory: Path, key: SigningKey, sequence: int = 100) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "manifest.json"
    path.write_bytes(dump_document(signed_manifest(key, ARTS, sequence=sequence)))
    return path


def put_chain(directory: Path, *documents: dict[str, Any]) -> None:
    for document in documents:
        (directory / f"root.{document['version']}.json").write_bytes(raw(document))


def verify(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = verify_main([*argv, "--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


# -- phase-verify -----------------------------------------------------------------------------


def test_verify_walks_the_chain_beside_the_manifest(
    tmp_path: Path, keys_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_manifest(tmp_path / "m", K[2])
    put_chain(manifest.parent, *chain()[1:])
    code, data, err = verify(capsys, str(manifest), "--keys-dir", str(keys_dir))
    assert code == 0, err
    assert data["root"]["version"] == 3 and data["root"]["steps"] == 2
    assert data["root"]["release"] == {"keys": [K[2].public.keyid], "threshold": 1}
    assert data["signed_by"] == [K[2].public.keyid]
    # Text output says which root.
    assert verify_main([str(manifest), "--root", str(keys_dir / "root.json")]) == 0
    assert "(root version 3)" in capsys.readouterr().out


def test_without_the_chain_the_new_release_key_is_not_trusted(
    tmp_path: Path, keys_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_manifest(tmp_path / "m", K[2])
    code, data, err = verify(capsys, str(manifest), "--keys-dir", str(keys_dir))
    assert code == 1 and data["error"]["reason"] == "signature", err
    # A gap in the files (no root.2.json) is the end of the chain: root.3.json is not read.
    put_chain(manifest.parent, chain()[2])
    code, data, err = verify(capsys, str(manifest), "--keys-dir", str(keys_dir))
    assert code == 1 and data["error"]["reason"] == "signature" and "root" not in err
    # Root 3 under the name of root 2 is a gap, refused.
    (manifest.parent / "root.2.json").write_bytes(raw(chain()[2]))
    code, data, err = verify(capsys, str(manifest), "--keys-dir", str(keys_dir))
    assert code == 1 and "gap: root version 3 cannot follow 1" in err


def test_the_revoked_key_is_refused_even_with_a_higher_sequence(
    tmp_path: Path, keys_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_manifest(tmp_path / "m", K[0], sequence=10**9)
    assert verify(capsys, str(manifest), "--keys-dir", str(keys_dir))[0] == 0  # root 1: fine
    put_chain(manifest.parent, *chain()[1:])
    code, data, err = verify(capsys, str(manifest), "--keys-dir", str(keys_dir))
    assert code == 1 and data["error"]["reason"] == "signature", err


def test_the_state_keeps_the_chain_and_a_lost_chain_does_not_resurrect_a_revoked_key(
    tmp_path: Path, keys_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    good = write_manifest(tmp_path / "good", K[2], sequence=5)
    put_chain(good.parent, *chain()[1:])
    argv = ["--keys-dir", str(keys_dir), "--state-dir", str(state)]
    assert verify(capsys, str(good), *argv, "--update-state")[0] == 0
    assert sorted(os.listdir(state)) == [".lock", "accepted.json", "root.2.json", "root.3.json"]
    assert json.loads((state / "root.3.json").read_text()) == chain()[2]
    # The attacker serves an old-key manifest with no chain beside it: the state remembers.
    revoked = write_manifest(tmp_path / "revoked", K[0], sequence=10**9)
    code, data, err = verify(capsys, str(revoked), *argv)
    assert code == 1 and data["error"]["reason"] == "signature", err
    assert data["verified"] is False
    # Losing the state only means walking again from the built-in root.
    for name in ("root.2.json", "root.3.json"):
        (state / name).unlink()
    assert verify(capsys, str(good), *argv)[0] == 0


def test_without_update_state_nothing_is_kept(
    tmp_path: Path, keys_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    good = write_manifest(tmp_path / "good", K[2])
    put_chain(good.parent, *chain()[1:])
    assert verify(capsys, str(good), "--keys-dir", str(keys_dir), "--state-dir", str(state))[0] == 0
    assert not list(state.glob("root.*"))


def test_a_planted_root_in_the_state_dir_is_refused(
    tmp_path: Path, keys_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The state disk is writable by others: a root there counts only if it verifies from the
    built-in root. A thief's root 2 naming his own keys is ignored; so is a link."""
    state = tmp_path / "state"
    state.mkdir()
    thief = SigningKey.from_seed(b"\x66" * 32)
    planted = root_document(2, [thief], [thief], signed_by=[thief], expires_at=LATER)
    (state / "root.2.json").write_bytes(raw(planted))
    manifest = write_manifest(tmp_path / "m", thief)
    code, data, err = verify(
        capsys, str(manifest), "--keys-dir", str(keys_dir), "--state-dir", str(state)
    )
    assert code == 1 and data["error"]["reason"] == "signature"
    assert "root refused" in err and "signed by 0 of the 1" in err
    # A symlink to a real, valid root elsewhere is not followed either.
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_bytes(raw(chain()[1]))
    (state / "root.2.json").unlink()
    (state / "root.2.json").symlink_to(elsewhere)
    good = write_manifest(tmp_path / "good", K[1])
    code, data, err = verify(
        capsys, str(good), "--keys-dir", str(keys_dir), "--state-dir", str(state)
    )
    assert code == 1 and "symbolic link" in err


def test_keeping_a_root_replaces_a_planted_link_instead_of_writing_through_it(
    tmp_path: Path, keys_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (state / "root.2.json").symlink_to(victim)
    good = write_manifest(tmp_path / "good", K[2])
    put_chain(good.parent, *chain()[1:])
    argv = [str(good), "--keys-dir", str(keys_dir), "--state-dir", str(state), "--update-state"]
    assert verify(capsys, *argv)[0] == 0
    assert victim.read_text() == "precious\n"
    assert not (state / "root.2.json").is_symlink()
    assert json.loads((state / "root.2.json").read_text()) == chain()[1]


def test_an_expired_final_root_is_refused_but_an_expired_middle_one_is_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = chain(expires_at=NOW - 60)
    root_file = tmp_path / "root.json"
    root_file.write_bytes(raw(old[0]))
    manifest = write_manifest(tmp_path / "m", K[0])
    code, data, err = verify(capsys, str(manifest), "--root", str(root_file))
    assert code == 1 and data["error"]["reason"] == "expired"
    assert "root version 1 expired" in err
    # Roots 1 and 2 expired long ago; 3 is current: the drawer-stick case.
    fresh3 = root_document(3, [R[2]], [K[2]], signed_by=[R[1], R[2]], expires_at=LATER)
    put_chain(manifest.parent, old[1], fresh3)
    manifest = write_manifest(tmp_path / "m", K[2])
    code, data, err = verify(capsys, str(manifest), "--root", str(root_file))
    assert code == 0 and data["root"]["version"] == 3, err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--key", K[0].public.keyid], "is the whole trust"),
        (["--threshold", "1"], "is the whole trust"),
    ],
)
def test_a_root_is_the_whole_trust(
    tmp_path: Path,
    keys_dir: Path,
    extra: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    manifest = write_manifest(tmp_path / "m", K[0])
    assert verify_main([str(manifest), "--keys-dir", str(keys_dir), *extra]) == 2
    assert message in capsys.readouterr().err


def test_bad_root_files_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_manifest(tmp_path / "m", K[0])
    cases = {
        "missing.json": None,
        "junk.json": b"{nope",
        "unsigned.json": raw(root_document(1, [R[0]], [K[0]], expires_at=LATER)),
    }
    for name, data in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
        code = verify_main([str(manifest), "--root", str(tmp_path / name), "--json"])
        out, err = capsys.readouterr()
        assert code == 2, (name, err)
        assert json.loads(out)["error"]["reason"] == "usage"
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    os.mkfifo(tmp_path / "fifo.json")
    assert verify_main([str(manifest), "--root", str(tmp_path / "fifo.json")]) == 2
    assert "not a regular file" in capsys.readouterr().err


def test_bare_keys_walk_no_chain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--key without a root: exactly as before (a version-1 root, no chain files read)."""
    manifest = write_manifest(tmp_path / "m", K[0])
    put_chain(manifest.parent, *chain()[1:])
    code, data, err = verify(capsys, str(manifest), "--key", K[0].public.keyid)
    assert code == 0, err
    assert data["root"] == {
        "version": 1,
        "expires_at": None,
        "digest": None,
        "release": {"keys": [K[0].public.keyid], "threshold": 1},
        "steps": 0,
        "bounded": False,
    }


# -- phase-fetch over HTTP --------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[FileServer]:
    with FileServer() as s:
        yield s


def serve_chain(server: FileServer, *documents: dict[str, Any]) -> None:
    for document in documents:
        server.add(f"/root/{document['version']}.json", raw(document))


def fetch(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = fetch_main(["--json", *argv])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


def test_fetch_walks_the_providers_chain_and_leaves_it_for_the_recheck(
    server: FileServer, tmp_path: Path, keys_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    serve_chain(server, *chain()[1:])
    url = publish(server, signed_manifest(K[2], ARTS), ARTS)
    out, state = tmp_path / "out", tmp_path / "state"
    argv = ["--manifest", url, "--keys-dir", str(keys_dir), "--state-dir", str(state)]
    code, summary, err = fetch(capsys, *argv, "--output", str(out))
    assert code == 0, err
    assert summary["root"]["version"] == 3 and summary["root"]["steps"] == 2
    assert sorted(os.listdir(out)) == [
        "cmdline",
        "initramfs",
        "kernel",
        "manifest.json",
        "root.2.json",
        "root.3.json",
    ]
    assert {p.name for p in state.glob("root.*")} == {"root.2.json", "root.3.json"}
    asked = [r.path for r in server.state.requests if r.path.startswith("/root/")]
    assert asked == ["/root/2.json", "/root/3.json", "/root/4.json"]
    # kexec-boot's re-check: phase-verify DIR/manifest.json --keys-dir KEYS --check-dir DIR.
    code, data, err = verify(
        capsys, str(out / "manifest.json"), "--keys-dir", str(keys_dir), "--check-dir", str(out)
    )
    assert code == 0 and data["root"]["version"] == 3, err
    # The next run starts from the state: root 2 and 3 are not asked for again.
    server.state.requests.clear()
    code, summary, err = fetch(capsys, *argv, "--output", str(out))
    assert code == 0 and summary["root"]["version"] == 3, err
    asked = [r.path for r in server.state.requests if r.path.startswith("/root/")]
    assert asked == ["/root/4.json"]


def test_fetch_refuses_the_revoked_keys_manifest_before_any_artifact(
    server: FileServer, tmp_path: Path, keys_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    serve_chain(server, *chain()[1:])
    url = publish(server, signed_manifest(K[0], ARTS, sequence=10**9), ARTS)
    out, state = tmp_path / "out", tmp_path / "state"
    argv = ["--manifest", url, "--keys-dir", str(keys_dir), "--state-dir", str(state)]
    code, summary, err = fetch(capsys, *argv, "--output", str(out))
    assert code == 1 and summary["error"]["reason"] == "signature", err
    assert server.requests_for("/stable/x86_64/vmlinuz") == []
    # The roots were kept anyway: revocation holds even if the provider hides the chain now.
    assert {p.name for p in state.glob("root.*")} == {"root.2.json", "root.3.json"}


def test_one_hostile_provider_does_not_stop_the_chain(
    server: FileServer, tmp_path: Path, keys_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FileServer() as hostile:
        hostile.add("/root/2.json", b'{"junk": 1.5}')
        hostile.add("/root/3.json", b"x", Behaviour(status=500))
        bad = publish(hostile, signed_manifest(K[2], ARTS), ARTS)
        serve_chain(server, *chain()[1:])
        good = publish(server, signed_manifest(K[2], ARTS), ARTS)
        out = tmp_path / "out"
        argv = ["--manifest", bad, "--manifest", good, "--keys-dir", str(keys_dir)]
        code, summary, err = fetch(capsys, *argv, "--output", str(out))
    assert code == 0, err
    assert summary["root"]["version"] == 3


def test_a_dripping_provider_does_not_hold_the_chain(
    server: FileServer, tmp_path: Path, keys_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    serve_chain(server, *chain()[1:])
    good = publish(server, signed_manifest(K[2], ARTS), ARTS)
    with HeaderDripServer() as drip:
        started = time.monotonic()
        code, summary, err = fetch(
            capsys,
            *("--manifest", drip.url, "--manifest", good, "--keys-dir", str(keys_dir)),
            *("--timeout", "30", "--output", str(tmp_path / "o")),
        )
        elapsed = time.monotonic() - started
    assert code == 0 and summary["root"]["version"] == 3, err
    # Three roots asked (2, 3, the absent 4): each waits at most the grace for the drip.
    assert elapsed < 8, f"a dripping provider held the root walk for {elapsed:.1f}s"


def test_an_oversized_root_from_a_provider_is_refused_unread(
    server: FileServer, tmp_path: Path, keys_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.add("/root/2.json", b"{" + b" " * (600 * 1024) + b"}")
    url = publish(server, signed_manifest(K[0], ARTS), ARTS)
    code, summary, err = fetch(
        capsys, "--manifest", url, "--keys-dir", str(keys_dir), "--output", str(tmp_path / "o")
    )
    assert code == 0, err
    assert summary["root"]["version"] == 1 and "512 KiB" in err
    assert files_in(tmp_path / "o") == ["cmdline", "initramfs", "kernel", "manifest.json"]


def files_in(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def test_a_later_fetch_with_a_shorter_chain_removes_the_stale_root_files(
    server: FileServer, tmp_path: Path, keys_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    put_chain(out, root_document(7, [R[5]], [K[5]], signed_by=[R[5]], expires_at=LATER))
    url = publish(server, signed_manifest(K[0], ARTS), ARTS)
    code, _, err = fetch(
        capsys, "--manifest", url, "--keys-dir", str(keys_dir), "--output", str(out)
    )
    assert code == 0, err
    assert files_in(out) == ["cmdline", "initramfs", "kernel", "manifest.json"]
