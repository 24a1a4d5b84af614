"""The provider side of the root of trust (docs/trust.md): ``plasmd root init|rotate|sign|show``
as an operator runs them, and ``plasmd serve`` serving DIR/root/ as /root/<N>.json and
/root/latest.json, end to end with phase-fetch on 127.0.0.1."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from phase_client.cli.fetch import main as fetch_main
from phase_client.cli.plasmd import main as plasmd_main
from phase_client.keys import SigningKey, load_signing_key
from phase_client.root import parse_root, servable_chain
from tests.provider_helpers import make_tree, running_server, serve_args

from .test_root import K, R, raw, root_document

FAR = 4102444800  # 2100-01-01


def plasmd(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = plasmd_main(list(argv))
    out, err = capsys.readouterr()
    try:
        return code, json.loads(out), err
    except ValueError:
        return code, out, err


@pytest.fixture
def keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Path]:
    """Root keys r1, r2, r3 and release keys old, new, made with plasmd keygen."""
    found = {}
    for name in ("r1", "r2", "r3", "old", "new"):
        path = tmp_path / "keys" / f"{name}.key"
        path.parent.mkdir(exist_ok=True)
        assert plasmd_main(["keygen", "--out", str(path), "-q"]) == 0
        found[name] = path
    capsys.readouterr()
    return found


def pub(path: Path) -> str:
    return f"{path}.pub"


def make_chain(
    tmp_path: Path, keys: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> list[Path]:
    """Root 1 (root r1+r2 1-of-2, release old), root 2 (root r2+r3, release new; old revoked)."""
    one, two = tmp_path / "1.json", tmp_path / "2.json"
    code, info, err = plasmd(
        capsys,
        *("root", "init", "--root-key", pub(keys["r1"]), "--root-key", pub(keys["r2"])),
        *("--release-key", pub(keys["old"]), "--sign-with", str(keys["r1"])),
        *("--output", str(one), "--json"),
    )
    assert code == 0 and info["version"] == 1 and info["complete"], err
    code, info, err = plasmd(
        capsys,
        *("root", "rotate", "--from", str(one), "--root-key", pub(keys["r3"])),
        *("--root-key", pub(keys["r2"]), "--release-key", pub(keys["new"])),
        *("--output", str(two), "--json"),
    )
    assert code == 0 and info["version"] == 2 and info["signatures"] == [], err
    return [one, two]


def test_init_rotate_sign_show(
    tmp_path: Path, keys: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    one, two = make_chain(tmp_path, keys, capsys)
    show = ("root", "show", str(two), "--previous", str(one))
    code, info, err = plasmd(capsys, *show, "--json")
    assert code == 1 and info["ok"] is False and info["error"]["reason"] == "incomplete"
    assert info["complete"] is False
    assert len(err.strip().splitlines()) == 1
    # The holder of an old root key signs; not enough: the new keys must sign too.
    assert plasmd(capsys, "root", "sign", str(two), "--key", str(keys["r1"]))[0] == 0
    code, out, _ = plasmd(capsys, *show)
    assert code == 1 and "root keys of version 1: 1 of 1 required signed" in out
    assert "own root keys: 0 of 1" in out
    assert plasmd(capsys, "root", "sign", str(two), "--key", str(keys["r3"]))[0] == 0
    code, out, err = plasmd(capsys, *show)
    assert code == 0 and "a valid next root of version 1" in out, err
    root = parse_root(two.read_bytes())
    assert [k.keyid for k in root.release_role.keys] == [load_signing_key(keys["new"]).public.keyid]


def test_rotate_revokes_and_keeps_thresholds_sane(
    tmp_path: Path, keys: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    one = make_chain(tmp_path, keys, capsys)[0]
    out = tmp_path / "r.json"
    code, info, err = plasmd(
        capsys,
        *("root", "rotate", "--from", str(one), "--revoke", pub(keys["r1"])),
        *("--output", str(out), "--json"),
    )
    assert code == 0, err
    assert info["roles"]["root"]["keys"] == [load_signing_key(keys["r2"]).public.keyid]
    assert info["roles"]["release"] == {
        "keys": [load_signing_key(keys["old"]).public.keyid],
        "threshold": 1,
    }
    # Revoking the last key of a role, or asking for more signatures than keys: usage errors.
    code, _, err = plasmd(
        capsys,
        *("root", "rotate", "--from", str(one), "--revoke", pub(keys["old"])),
        *("--output", str(tmp_path / "x.json")),
    )
    assert code == 2 and "the release role would have no key left" in err
    code, _, err = plasmd(
        capsys,
        *("root", "rotate", "--from", str(one), "--root-threshold", "3"),
        *("--output", str(tmp_path / "x.json")),
    )
    assert code == 2 and "threshold 3 but only 2 key(s)" in err
    # An existing output is not overwritten without --force.
    code, _, err = plasmd(
        capsys, "root", "rotate", "--from", str(one), "--output", str(out), "--json"
    )
    assert code == 2 and "refusing to overwrite" in err
    assert not (tmp_path / "x.json").exists()


def test_bad_root_files_are_one_line_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "junk.json").write_text("{]")
    for path in (tmp_path / "junk.json", tmp_path / "missing.json"):
        code, _, err = plasmd(capsys, "root", "show", str(path))
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err


# -- what a provider serves -------------------------------------------------------------------


def chain(expires_at: int = FAR) -> list[dict[str, Any]]:
    return [
        root_document(1, [R[0]], [K[0]], signed_by=[R[0]], expires_at=expires_at),
        root_document(2, [R[1]], [K[1]], signed_by=[R[0], R[1]], expires_at=expires_at),
        root_document(3, [R[2]], [K[2]], signed_by=[R[1], R[2]], expires_at=expires_at),
    ]


def test_servable_chain_is_the_verified_run() -> None:
    docs = [raw(d) for d in chain()]
    assert servable_chain({1: docs[0], 2: docs[1], 3: docs[2]}) == (
        {1: docs[0], 2: docs[1], 3: docs[2]},
        {},
    )
    served, refused = servable_chain({1: docs[0], 3: docs[2]})
    assert served == {1: docs[0]} and "gap" in refused[3]
    forged = raw(root_document(3, [R[4]], [K[4]], signed_by=[R[4]]))
    served, refused = servable_chain({1: docs[0], 2: docs[1], 3: forged, 4: docs[2]})
    assert list(served) == [1, 2] and "signed by 0 of the 1" in refused[3]
    assert refused[4] == "after a refused root"
    served, refused = servable_chain({1: docs[1], 2: docs[1]})
    assert served == {2: docs[1]} and "holds 2" in refused[1]  # the run starts at 2


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:  # loopback only
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def test_plasmd_serve_serves_the_chain_and_a_stick_on_root_one_fetches_a_root_three_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The provider signs with K2, a release key only root 3 knows; the stick holds root 1."""
    art = tmp_path / "art"
    contents = make_tree(art, {"stable/x86_64": 50_000})
    docs = chain()
    (art / "root").mkdir()
    for document in docs:
        (art / "root" / f"{document['version']}.json").write_bytes(raw(document))
    forged = root_document(4, [R[4]], [K[4]], signed_by=[R[4]], expires_at=FAR)
    (art / "root" / "4.json").write_bytes(raw(forged))
    signing = tmp_path / "release.key"
    signing.write_bytes(K[2].file_bytes())
    os.chmod(signing, 0o600)
    keys_dir = tmp_path / "stick-keys"
    keys_dir.mkdir()
    (keys_dir / "root.json").write_bytes(raw(docs[0]))
    args = serve_args(art, tmp_path / "state", "--key", str(signing))
    with running_server(args) as server:
        server.wait_for(r"Not offering root/4\.json: .*signed by 0 of the 1")
        assert get(server.url + "/root/2.json") == (200, raw(docs[1]))
        assert get(server.url + "/root/latest.json") == (200, raw(docs[2]))
        assert get(server.url + "/root/4.json")[0] == 404
        assert not any("root/x86_64" in line or "Advertising root" in line for line in server.lines)
        out = tmp_path / "boot"
        code = fetch_main(
            [
                *("--manifest", server.url + "/stable/x86_64/manifest.json"),
                *("--keys-dir", str(keys_dir), "--output", str(out), "--json"),
            ]
        )
        printed, err = capsys.readouterr()
        assert code == 0, err
        summary = json.loads(printed)
        assert summary["root"]["version"] == 3
        assert summary["manifest"]["signed_by"] == [K[2].public.keyid]
        assert (out / "kernel").read_bytes() == contents["stable/x86_64"]
        # A stick that only knew K0 (bare keys, no root) refuses the same manifest.
        code = fetch_main(
            [
                *("--manifest", server.url + "/stable/x86_64/manifest.json"),
                *("--key", K[0].public.keyid, "--output", str(tmp_path / "b")),
            ]
        )
        assert code == 1 and "no valid signature" in capsys.readouterr().err


def test_a_release_key_file_is_a_signing_key(tmp_path: Path) -> None:
    """The fixture above writes K2's seed the way plasmd keygen does; keep them in step."""
    path = tmp_path / "k.key"
    path.write_bytes(K[2].file_bytes())
    assert load_signing_key(path) == SigningKey.from_seed(K[2].seed)
