"""Keys that are hard to get wrong: the identity key's .pub, ``plasmd key show``, and a private
key given where a public one is expected (and the reverse) saying exactly that."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from phase_client.errors import KeyFormatError
from phase_client.keys import load_public_key, load_signing_key
from phase_client.provider.statedir import StateDir
from tests.conftest import run_tool
from tests.provider_helpers import make_tree, serve_args


def keygen(tmp_path: Path) -> tuple[Path, str]:
    key = tmp_path / "release.key"
    result = run_tool("plasmd", "keygen", "--out", str(key), "--json")
    assert result.returncode == 0, result.stderr
    return key, json.loads(result.stdout)["keyid"]


def test_identity_key_gets_its_pub_beside_it(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    identity = state.identity()
    pub = tmp_path / "state" / "identity.key.pub"
    assert pub.read_text() == identity.public.keyid + "\n"
    assert pub.stat().st_mode & 0o777 == 0o644
    pub.unlink()  # an older state dir without one: written on the next start
    assert StateDir(tmp_path / "state").identity() == identity
    assert load_public_key(str(pub)) == identity.public


def test_key_show_private_public_and_identity(tmp_path: Path) -> None:
    key, keyid = keygen(tmp_path)
    result = run_tool("plasmd", "key", "show", str(key))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0] == f"keyid   {keyid}" and lines[1].startswith("peer id 12D3KooW")
    assert lines[2] == f"private {key}"
    result = run_tool("plasmd", "key", "show", "--json", f"{key}.pub")
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["kind"] == "public" and report["keyid"] == keyid
    result = run_tool("plasmd", "key", "show", "--public", str(key))
    assert result.stdout.decode() == keyid + "\n"
    identity = StateDir(tmp_path / "state").identity()
    result = run_tool("plasmd", "key", "show", "--state-dir", str(tmp_path / "state"), "--json")
    assert json.loads(result.stdout)["keyid"] == identity.public.keyid


def test_key_show_of_nothing_is_one_line_exit_2(tmp_path: Path) -> None:
    result = run_tool("plasmd", "key", "show", "--state-dir", str(tmp_path / "empty"))
    assert result.returncode == 2
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and "plasmd serve creates it on first start" in lines[0], lines


def test_the_wrong_half_of_a_key_pair_says_so(tmp_path: Path) -> None:
    key, _ = keygen(tmp_path)
    with pytest.raises(KeyFormatError, match=r"this is a private key .* where a public key is"):
        load_public_key(str(key))
    with pytest.raises(KeyFormatError, match=r"this is a public key .* where a private"):
        load_signing_key(f"{key}.pub")


def test_serve_with_a_public_key_to_sign_with_is_exit_2(tmp_path: Path) -> None:
    key, _ = keygen(tmp_path)
    make_tree(tmp_path / "art", {"stable/x86_64": 1000})
    args = serve_args(tmp_path / "art", tmp_path / "state", "--key", f"{key}.pub")
    result = run_tool("plasmd", "serve", *args)
    assert result.returncode == 2
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert "this is a public key (ed25519:...) where a private (signing) key is" in lines[0]
