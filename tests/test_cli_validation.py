"""Bad input is refused before any network work, in one line of plain words and the right exit
code: malformed URLs, ports and schemes (exit 2, no library class names, an unknown scheme never
read as a file), an --output that cannot be a directory, a missing keys directory (exit 2 in
phase-fetch, phase-verify and kexec-boot alike); and 'no valid signature' names the keyids that
signed and the keyids trusted."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from phase_client.cli import run_tool
from phase_client.keys import SigningKey
from phase_client.manifest import dump_document, sign_document

from .conftest import REPO, key_from_byte
from .test_cli_verify import fresh_document

KEXEC_BOOT = REPO / "initramfs" / "kexec-boot"


@pytest.fixture
def listener() -> Iterator[tuple[str, socket.socket]]:
    """A loopback port that accepts connections and never answers: any network work by the
    command under test shows as a connection waiting in its backlog."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.setblocking(False)
        yield f"http://127.0.0.1:{server.getsockname()[1]}/stable/x86_64/manifest.json", server


def no_connection(server: socket.socket) -> bool:
    try:
        conn, _ = server.accept()
    except BlockingIOError:
        return True
    conn.close()
    return False


@pytest.fixture
def pub(tmp_path: Path) -> str:
    path = tmp_path / "release.key.pub"
    path.write_text(key_from_byte(31).public.keyid + "\n")
    return str(path)


def fetch(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = run_tool("fetch", list(argv))
    out, err = capsys.readouterr()
    return code, out, err


BAD_LOCATIONS = [
    ("ftp://host/m.json", "unsupported scheme 'ftp' (http://, https:// or a file path)"),
    ("htp://127.0.0.1/m.json", "unsupported scheme 'htp' (http://, https:// or a file path)"),
    ("http://host:99999/m.json", "the port must be a number from 1 to 65535"),
    ("http://host:abc/m.json", "the port must be a number from 1 to 65535"),
    ("http://host:0/m.json", "the port must be a number from 1 to 65535"),
    ("http://[::1/m.json", "bad host (an IPv6 address goes in [ ])"),
    ("http:///m.json", "no host (want http://HOST[:PORT]/PATH)"),
    ("http:/host/m.json", "not a URL (want http://HOST[:PORT]/PATH)"),
    ("http://host /m.json", "a URL has no spaces or control characters"),
]


@pytest.mark.parametrize(("location", "why"), BAD_LOCATIONS)
@pytest.mark.parametrize("flag", ["--manifest", "--mirror"])
def test_bad_url_is_a_usage_error_before_any_request(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    listener: tuple[str, socket.socket],
    pub: str,
    flag: str,
    location: str,
    why: str,
) -> None:
    good, server = listener
    argv = ["--manifest", good, "--mirror", location] if flag == "--mirror" else [flag, location]
    code, out, err = fetch(capsys, *argv, "--key", pub, "--output", str(tmp_path / "out"))
    assert code == 2
    assert err == f"phase-fetch: {flag} {location!r}: {why}\n"
    assert out == ""
    assert no_connection(server)
    assert not (tmp_path / "out").exists()


def test_unknown_scheme_is_not_read_as_a_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pub: str
) -> None:
    # A file that the URL names when read as a path: it must not be opened.
    (tmp_path / "gopher:").mkdir()
    (tmp_path / "gopher:" / "m.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    code, _, err = fetch(capsys, "--manifest", "gopher://m.json", "--key", pub, "-o", "out")
    assert code == 2
    assert err == (
        "phase-fetch: --manifest 'gopher://m.json': unsupported scheme 'gopher' "
        "(http://, https:// or a file path)\n"
    )
    assert "cannot read" not in err


def test_a_scheme_is_case_insensitive(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, listener: tuple[str, socket.socket]
) -> None:
    """HTTP:// is a URL (never a file called 'HTTP:'), fetched as http://."""
    good, server = listener
    argv = ["--manifest", good.replace("http://", "HTTP://"), "--key", f"ed25519:{'ab' * 32}"]
    argv += ["--output", str(tmp_path / "out"), "--timeout", "0.5", "--retries", "0"]
    code, _, err = fetch(capsys, *argv)
    assert code == 3  # the listener never answers
    assert not no_connection(server)
    assert f"{good}: " in err


def test_url_error_prints_the_json_envelope(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, pub: str
) -> None:
    argv = ["--manifest", "ftp://h/m.json", "--key", pub, "-o", str(tmp_path / "o"), "--json"]
    code, out, err = fetch(capsys, *argv)
    assert code == 2
    message = (
        "--manifest 'ftp://h/m.json': unsupported scheme 'ftp' (http://, https:// or a file path)"
    )
    assert json.loads(out) == {
        "ok": False,
        "error": {"exit_code": 2, "reason": "usage", "message": message},
    }
    assert err == f"phase-fetch: {message}\n"


@pytest.mark.parametrize(
    ("output", "why"),
    [
        ("file", "--output {t}/file: exists and is not a directory"),
        ("file/sub", "--output {t}/file/sub: {t}/file is not a directory"),
        ("file/sub/deeper", "--output {t}/file/sub/deeper: {t}/file is not a directory"),
    ],
)
def test_output_is_checked_before_the_download(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    listener: tuple[str, socket.socket],
    pub: str,
    output: str,
    why: str,
) -> None:
    good, server = listener
    (tmp_path / "file").write_text("not a directory\n")
    argv = ["--manifest", good, "--key", pub, "--output", str(tmp_path / output)]
    code, out, err = fetch(capsys, *argv)
    assert (code, out) == (2, "")
    assert err == "phase-fetch: " + why.format(t=tmp_path) + "\n"
    assert no_connection(server)


def test_output_in_a_directory_that_cannot_be_written(
    capsys: pytest.CaptureFixture[str], listener: tuple[str, socket.socket]
) -> None:
    """A 0555 directory (searchable, not writable), and a 0500 one (not even searchable): as
    root (CI) the command runs as ``nobody``, for whom they are so (root may write anywhere)."""
    good, server = listener
    base = Path(tempfile.mkdtemp(prefix="phase-validation-"))
    try:
        os.chmod(base, 0o755)
        locked, closed = base / "locked", base / "closed"
        locked.mkdir(mode=0o555)
        closed.mkdir(mode=0o500)
        pub = base / "release.key.pub"
        pub.write_text(key_from_byte(31).public.keyid + "\n")
        pub.chmod(0o644)

        def fetch_into(output: Path) -> tuple[int, str]:
            argv = ["--manifest", good, "--key", str(pub), "-o", str(output)]
            if os.geteuid() != 0:
                code, _, err = fetch(capsys, *argv)
                return code, err
            as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]
            result = subprocess.run(
                [*as_nobody, sys.executable, "-m", "phase_client", "fetch", *argv],
                capture_output=True, text=True, timeout=120, cwd="/",
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )  # fmt: skip
            return result.returncode, result.stderr

        assert fetch_into(locked / "out") == (
            2,
            f"phase-fetch: --output {locked}/out: {locked} is not writable "
            f"({locked}/out cannot be made there)\n",
        )
        assert fetch_into(closed / "out") == (
            2,
            f"phase-fetch: --output {closed}/out: {closed} cannot be searched "
            "(permission denied)\n",
        )
        assert no_connection(server)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_missing_keys_dir_is_a_usage_error_in_fetch_and_verify(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, listener: tuple[str, socket.socket]
) -> None:
    good, server = listener
    missing = tmp_path / "no-keys"
    line = f"keys directory {missing} does not exist or is not a directory"
    code, _, err = fetch(
        capsys, "--manifest", good, "--keys-dir", str(missing), "-o", str(tmp_path / "o")
    )
    assert (code, err) == (2, f"phase-fetch: {line}\n")
    assert no_connection(server)
    manifest = tmp_path / "m.json"
    manifest.write_text("{}")
    assert run_tool("verify", [str(manifest), "--keys-dir", str(missing)]) == 2
    assert capsys.readouterr().err == f"phase-verify: {line}\n"


def signed_manifest(path: Path, *keys: SigningKey) -> Path:
    document = fresh_document()
    for key in keys:
        document = sign_document(document, key)
    path.write_bytes(dump_document(document))
    return path


def test_no_valid_signature_names_signers_and_trusted_keys(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    serve_identity, release, other = key_from_byte(41), key_from_byte(42), key_from_byte(43)
    manifest = signed_manifest(tmp_path / "m.json", serve_identity)
    argv = [str(manifest), "--key", release.public.keyid, "--key", other.public.keyid]
    assert run_tool("verify", argv) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "FAILED: signature: no valid signature by a trusted key "
        f"(signed by {serve_identity.public.keyid}; "
        f"trusted: {release.public.keyid}, {other.public.keyid})\n"
    )
    assert run_tool("verify", [*argv, "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["verified"] is False and serve_identity.public.keyid in data["error"]["message"]


def test_threshold_failure_names_the_keys_that_did_sign(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    a, b = key_from_byte(44), key_from_byte(45)
    manifest = signed_manifest(tmp_path / "m.json", a)
    argv = [str(manifest), "--key", a.public.keyid, "--key", b.public.keyid, "--threshold", "2"]
    assert run_tool("verify", argv) == 1
    assert capsys.readouterr().err == (
        "FAILED: signature: only 1 of the required 2 trusted keys signed the manifest "
        f"({a.public.keyid}; signed by {a.public.keyid}; "
        f"trusted: {a.public.keyid}, {b.public.keyid})\n"
    )


def test_many_trusted_keys_are_counted_not_all_listed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    keys = [key_from_byte(50 + n) for n in range(11)]
    manifest = signed_manifest(tmp_path / "m.json", key_from_byte(49))
    argv = [str(manifest)] + [w for k in keys for w in ("--key", k.public.keyid)]
    assert run_tool("verify", argv) == 1
    err = capsys.readouterr().err
    assert err.endswith(f"trusted: {', '.join(k.public.keyid for k in keys[:8])} and 3 more)\n")


def test_kexec_boot_missing_keys_dir_is_a_usage_error(tmp_path: Path) -> None:
    boot = tmp_path / "boot"
    boot.mkdir()
    signed_manifest(boot / "manifest.json", key_from_byte(46))
    missing = tmp_path / "no-keys"
    done = subprocess.run(
        ["sh", str(KEXEC_BOOT), "--dry-run", "--keys-dir", str(missing), str(boot)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "TMPDIR": str(tmp_path)},
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"kexec-boot: keys directory {missing} does not exist or is not a directory "
        "(--keys-dir DIR, or $PHASE_KEYS_DIR)\n"
    )


def test_verify_given_a_url_says_it_reads_files(
    capsys: pytest.CaptureFixture[str], listener: tuple[str, socket.socket], pub: str
) -> None:
    good, server = listener
    code = run_tool("verify", [good, "--key", pub])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err == (
        f"phase-verify: {good}: phase-verify reads a manifest file (or - for standard input), "
        "not a URL: fetch it with phase-fetch, or name a file that looks like a URL as ./NAME\n"
    )
    assert no_connection(server)
