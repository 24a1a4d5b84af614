"""phase-verify and plasmd keygen/manifest, run as a user runs them: every exit path."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from phase_client.keys import SigningKey
from phase_client.manifest import build_document, dump_document, sign_document

from .conftest import key_from_byte, run_tool


def fresh_document(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    fields: dict[str, Any] = {
        "version": "2026.11.24",
        "sequence": 100,
        "channel": "stable",
        "arch": "x86_64",
        "created_at": now - 60,
        "expires_at": now + 86400,
        "artifacts": {"kernel": {"hash": "sha256:" + "ab" * 32, "size": 5, "path": "vmlinuz"}},
    }
    fields.update(overrides)
    return build_document(**fields)


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Any]:
    a, b = key_from_byte(11), key_from_byte(12)
    for name, k in (("a", a), ("b", b)):
        (tmp_path / f"{name}.pub").write_text(k.public.keyid + "\n")
    return {"a": a, "b": b, "a_pub": str(tmp_path / "a.pub"), "b_pub": str(tmp_path / "b.pub")}


def write(tmp_path: Path, document: dict[str, Any], name: str = "m.json") -> str:
    path = tmp_path / name
    path.write_bytes(dump_document(document))
    return str(path)


def assert_one_line_no_traceback(result: Any) -> None:
    err = result.stderr.decode()
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_verified(tmp_path: Path, keys: dict[str, Any]) -> None:
    path = write(tmp_path, sign_document(fresh_document(), keys["a"]))
    result = run_tool("verify", path, "--key", keys["a_pub"])
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert out.startswith("VERIFIED stable/x86_64 version 2026.11.24 sequence 100 signed by ")
    assert keys["a"].public.keyid in out
    # --manifest form, inline key, JSON output
    result = run_tool("verify", "--manifest", path, "--key", keys["a"].public.keyid, "--json")
    data = json.loads(result.stdout)
    assert data["verified"] is True and data["sequence"] == 100
    assert data["artifacts"]["kernel"]["path"] == "vmlinuz"


def test_stdin_and_quiet(tmp_path: Path, keys: dict[str, Any]) -> None:
    data = dump_document(sign_document(fresh_document(), keys["a"]))
    result = run_tool("verify", "-", "--key", keys["a_pub"], "--quiet", stdin=data)
    assert result.returncode == 0 and result.stdout == b"" and result.stderr == b""


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("tampered", "signature"),
        ("wrong-key", "signature"),
        ("unsigned", "signature"),
        ("expired", "expired"),
        ("wrong-channel", "mismatch"),
        ("wrong-arch", "mismatch"),
        ("garbage", "malformed"),
        ("float", "malformed"),
        ("missing-file", "malformed"),
        ("fifo", "malformed"),
        ("threshold", "signature"),
    ],
)
def test_not_verified_exits_1(tmp_path: Path, keys: dict[str, Any], case: str, reason: str) -> None:
    a = keys["a"]
    extra: list[str] = []
    document = sign_document(fresh_document(), a)
    if case == "tampered":
        document["version"] = "evil"
    elif case == "wrong-key":
        document = sign_document(fresh_document(), keys["b"])
    elif case == "unsigned":
        document = fresh_document()
    elif case == "expired":
        document = sign_document(
            fresh_document(created_at=1_600_000_000, expires_at=1_600_086_400), a
        )
    elif case == "wrong-channel":
        extra = ["--channel", "testing"]
    elif case == "wrong-arch":
        extra = ["--arch", "aarch64"]
    elif case == "threshold":
        extra = ["--key", keys["b_pub"], "--threshold", "2"]
    path = write(tmp_path, document)
    if case == "garbage":
        Path(path).write_bytes(b"\x00\x01 not json at all")
    elif case == "float":
        Path(path).write_bytes(Path(path).read_bytes().replace(b'"size": 5', b'"size": 5.0'))
    elif case == "missing-file":
        path = str(tmp_path / "nope.json")
    elif case == "fifo":  # e.g. planted as DIR/manifest.json: refused at once, never waited on
        path = str(tmp_path / "fifo.json")
        os.mkfifo(path)
    result = run_tool("verify", path, "--key", keys["a_pub"], *extra)
    assert result.returncode == 1, result.stderr
    assert result.stderr.decode().startswith(f"FAILED: {reason}: ")
    assert_one_line_no_traceback(result)
    result = run_tool("verify", path, "--key", keys["a_pub"], *extra, "--json")
    assert result.returncode == 1
    envelope = json.loads(result.stdout)
    assert envelope == {
        "ok": False,
        "verified": False,
        "error": {"exit_code": 1, "reason": reason, "message": envelope["error"]["message"]},
    }


def test_threshold_two_keys_passes(tmp_path: Path, keys: dict[str, Any]) -> None:
    path = write(tmp_path, sign_document(sign_document(fresh_document(), keys["a"]), keys["b"]))
    result = run_tool("verify", path, "--keys-dir", str(tmp_path), "--threshold", "2")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "args",
    [
        [],  # no manifest
        ["{m}"],  # no key
        ["{m}", "--key", "/nonexistent/key.pub"],
        ["{m}", "--key", "{junk}"],
        ["{m}", "--keys-dir", "/nonexistent"],
        ["{m}", "--key", "{a}", "--threshold", "2"],
        ["{m}", "--key", "{a}", "--update-state"],
        ["{m}", "--key", "{a}", "--arch", "x86 64"],
        ["{m}", "--manifest", "{m}", "--key", "{a}"],
        ["{m}", "--key", "{a}", "--no-such-flag"],
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, keys: dict[str, Any], args: list[str]) -> None:
    m = write(tmp_path, sign_document(fresh_document(), keys["a"]))
    junk = tmp_path / "junk.pub"
    junk.write_text("definitely not a key")
    argv = [a.format(m=m, a=keys["a_pub"], junk=junk) for a in args]
    result = run_tool("verify", *argv)
    assert result.returncode == 2, (argv, result.stderr)
    assert "Traceback" not in result.stderr.decode()


def test_rollback_state(tmp_path: Path, keys: dict[str, Any]) -> None:
    state = tmp_path / "state"
    a = keys["a"]
    newer = write(tmp_path, sign_document(fresh_document(sequence=200), a), "newer.json")
    older = write(tmp_path, sign_document(fresh_document(sequence=150), a), "older.json")
    same_seq = write(
        tmp_path, sign_document(fresh_document(sequence=200, version="other"), a), "same.json"
    )
    base = ["--key", keys["a_pub"], "--state-dir", str(state)]
    assert run_tool("verify", older, *base, "--update-state").returncode == 0
    assert run_tool("verify", newer, *base, "--update-state").returncode == 0
    recorded = json.loads((state / "accepted.json").read_text())
    assert recorded["accepted"]["stable/x86_64"]["sequence"] == 200
    result = run_tool("verify", older, *base)
    assert result.returncode == 1
    assert "FAILED: rollback: sequence 150 is lower than 200" in result.stderr.decode()
    assert run_tool("verify", same_seq, *base).returncode == 1
    assert run_tool("verify", newer, *base).returncode == 0  # identical content: fine
    # No temp files are left next to the state.
    assert sorted(p.name for p in state.iterdir()) == [".lock", "accepted.json"]


def test_corrupt_state_is_a_clear_failure(tmp_path: Path, keys: dict[str, Any]) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "accepted.json").write_text("{broken")
    path = write(tmp_path, sign_document(fresh_document(), keys["a"]))
    result = run_tool("verify", path, "--key", keys["a_pub"], "--state-dir", str(state))
    assert result.returncode == 1
    assert "corrupt" in result.stderr.decode()
    assert_one_line_no_traceback(result)


def test_state_created_at_is_a_clock_floor_of_its_channel(
    tmp_path: Path, keys: dict[str, Any]
) -> None:
    """A manifest accepted before moves "now" forward for its channel/arch: one created later
    than another expires makes that one expired there, and only there."""
    a = keys["a"]
    now = int(time.time())
    later = sign_document(
        fresh_document(sequence=2, created_at=now + 7200, expires_at=now + 9000), a
    )
    short = sign_document(fresh_document(sequence=3, created_at=now - 60, expires_at=now + 3600), a)
    other = sign_document(
        fresh_document(sequence=1, channel="testing", created_at=now - 60, expires_at=now + 3600),
        a,
    )
    state = tmp_path / "state"
    base = ["--key", keys["a_pub"], "--state-dir", str(state)]
    accepted = run_tool("verify", write(tmp_path, later, "l.json"), *base, "--update-state")
    assert accepted.returncode == 0, accepted.stderr
    result = run_tool("verify", write(tmp_path, short, "s.json"), *base)
    assert result.returncode == 1
    assert "FAILED: expired" in result.stderr.decode()
    # Another channel keeps its own floor: a manifest dated ahead on stable does not expire it.
    assert run_tool("verify", write(tmp_path, other, "o.json"), *base).returncode == 0


def test_a_manifest_dated_years_ahead_does_not_expire_the_next_ones(
    tmp_path: Path, keys: dict[str, Any]
) -> None:
    a = keys["a"]
    now = int(time.time())
    year_2030 = max(now + 10 * 86400, 1_900_000_000)
    future = sign_document(
        fresh_document(sequence=5, created_at=year_2030, expires_at=year_2030 + 86400), a
    )
    normal = sign_document(
        fresh_document(sequence=6, created_at=now - 60, expires_at=now + 3 * 86400), a
    )
    state = tmp_path / "state"
    base = ["--key", keys["a_pub"], "--state-dir", str(state), "--update-state"]
    for document, name in ((future, "f.json"), (normal, "n.json")):
        result = run_tool("verify", write(tmp_path, document, name), *base)
        assert result.returncode == 0, result.stderr


def test_keygen_generate_sign(tmp_path: Path) -> None:
    keyfile = tmp_path / "release.key"
    result = run_tool("plasmd", "keygen", "--out", str(keyfile), "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["peer_id"].startswith("12D3KooW")
    assert stat.S_IMODE(os.stat(keyfile).st_mode) == 0o600
    assert (tmp_path / "release.key.pub").read_text().strip() == info["keyid"]
    # Refuses to overwrite an existing key.
    again = run_tool("plasmd", "keygen", "--out", str(keyfile))
    assert again.returncode == 2 and b"refusing to overwrite" in again.stderr

    combo = tmp_path / "art" / "stable" / "x86_64"
    combo.mkdir(parents=True)
    (combo / "vmlinuz").write_bytes(b"kernel bytes")
    (combo / "initramfs.img").write_bytes(b"initramfs bytes")
    (combo / "cmdline").write_text("console=ttyS0\n  quiet\n")
    out = tmp_path / "manifest.json"
    gen = [
        "plasmd",
        "manifest",
        "generate",
        "--artifacts",
        str(tmp_path / "art"),
        "--channel",
        "stable",
        "--arch",
        "amd64",
        "--key",
        str(keyfile),
        "--output",
        str(out),
    ]
    result = run_tool(*gen, "--json")
    assert result.returncode == 0, result.stderr
    first = json.loads(out.read_text())
    assert first["arch"] == "x86_64"
    assert first["cmdline"] == "console=ttyS0 quiet"
    assert first["artifacts"]["initramfs"]["size"] == len(b"initramfs bytes")
    # Regenerating never lowers the sequence, even with the same clock second.
    assert run_tool(*gen).returncode == 0
    assert json.loads(out.read_text())["sequence"] > first["sequence"]
    pub = str(tmp_path / "release.key.pub")
    assert run_tool("verify", str(out), "--key", pub).returncode == 0

    second = tmp_path / "second.key"
    assert run_tool("plasmd", "keygen", "--out", str(second)).returncode == 0
    assert run_tool("plasmd", "manifest", "sign", str(out), "--key", str(second)).returncode == 0
    two = ["--key", pub, "--key", f"{second}.pub", "--threshold", "2"]
    assert run_tool("verify", str(out), *two).returncode == 0


def test_generate_without_kernel_is_usage_error(tmp_path: Path) -> None:
    keyfile = tmp_path / "k"
    keyfile.write_bytes(SigningKey.generate().file_bytes())
    (tmp_path / "art" / "stable" / "arm64").mkdir(parents=True)
    result = run_tool(
        "plasmd",
        "manifest",
        "generate",
        "--artifacts",
        str(tmp_path / "art"),
        "--channel",
        "stable",
        "--arch",
        "arm64",
        "--key",
        str(keyfile),
        "--output",
        str(tmp_path / "m.json"),
    )
    assert result.returncode == 2
    assert b"no vmlinuz" in result.stderr
    assert not (tmp_path / "m.json").exists()


def test_dispatcher() -> None:
    assert run_tool("--help").returncode == 0
    unknown = run_tool("frobnicate")
    assert unknown.returncode == 2 and b"unknown tool" in unknown.stderr
    assert run_tool("verify", "--help").returncode == 0
    assert b"exit codes" in run_tool("verify", "--help").stdout
