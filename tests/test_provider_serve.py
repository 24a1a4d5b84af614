"""plasmd serve as a whole: seed log lines, live re-scan, restart, keys, mirror mode,
configuration through the command, signals, and the advertiser interface."""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from phase_client.keys import SigningKey
from phase_client.manifest import dump_document, parse_manifest
from phase_client.provider.advertise import Offer
from phase_client.provider.config import resolve
from phase_client.provider.server import Provider, build_advertisers
from phase_client.provider.signer import generate
from phase_client.provider.statedir import StateDir
from tests.conftest import key_from_byte, run_tool
from tests.provider_helpers import (
    ServerProcess,
    make_tree,
    poll,
    running_server,
    serve_args,
    write_random,
)

SEED_LINES = [
    "INFO Found 2 channel/arch combinations",
    "INFO Advertising stable/arm64",
    "INFO Advertising testing/arm64",
    "WARN Missing artifacts for stable/x86_64",
    "WARN Missing artifacts for testing/x86_64",
]


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def status(server: ServerProcess) -> dict[str, Any]:
    code, body = get(server.port, "/status")
    assert code == 200
    return dict(json.loads(body))


def offered(server: ServerProcess) -> dict[str, dict[str, Any]]:
    return {f"{o['channel']}/{o['arch']}": o for o in status(server)["offered"]}


def seed_tree(root: Path) -> None:
    """The seed's task 4.5 set-up, smaller: two kernels, two empty x86_64 directories."""
    make_tree(root, {"stable/arm64": 100_000, "testing/arm64": 100_000})
    (root / "stable/x86_64").mkdir()
    (root / "testing/x86_64").mkdir()


def test_seed_log_lines_exactly(tmp_path: Path) -> None:
    seed_tree(tmp_path / "art")
    with running_server(serve_args(tmp_path / "art", tmp_path / "state")) as server:
        server.wait_for("^WARN Missing artifacts for testing/x86_64$")
        start = server.lines.index(SEED_LINES[0])
        assert server.lines[start : start + 5] == SEED_LINES
        keyid = status(server)["keyid"]
        assert f"INFO Signing keyid {keyid}" in server.lines
        assert any(line.startswith("INFO Peer id 12D3KooW") for line in server.lines)
        assert offered(server).keys() == {"stable/arm64", "testing/arm64"}
        assert get(server.port, "/stable/x86_64/manifest.json")[0] == 404


def test_seed_config_file_through_the_command(tmp_path: Path) -> None:
    seed_tree(tmp_path / "art")
    make_tree(tmp_path / "elsewhere", {"arm64": 10})  # not named in the config: not served
    config = tmp_path / "plasmd.toml"
    config.write_text(
        "[provider]\n"
        'channels = ["stable", "testing"]\n'
        'architectures = ["arm64", "x86_64", "riscv64"]\n'
        'name = "from-file"\n'
        "port = 1\n"  # the --port flag below wins
        "[provider.channels.stable]\n"
        f'artifacts_dir = "{tmp_path}/art/stable"\n'
        "[provider.channels.testing]\n"
        f'artifacts_dir = "{tmp_path}/art/testing"\n'
    )
    args = serve_args(tmp_path / "art", tmp_path / "state", "--config", str(config))
    args = args[2:]  # no --artifacts: the config's channel tables say where
    with running_server(args) as server:
        server.wait_for("^WARN Missing artifacts for testing/riscv64$")
        assert status(server)["name"] == "from-file"
        assert offered(server).keys() == {"stable/arm64", "testing/arm64"}
        assert set(status(server)["missing"]) == {
            "stable/x86_64",
            "testing/x86_64",
            "stable/riscv64",
            "testing/riscv64",
        }
    with running_server([*args, "--name", "from-flag"]) as server:
        assert status(server)["name"] == "from-flag"


def test_live_rescan(tmp_path: Path) -> None:
    root = tmp_path / "art"
    make_tree(root, {"stable/arm64": 5000})
    args = serve_args(root, tmp_path / "state", "--scan-interval", "0.2")
    with running_server(args) as server:
        before = offered(server)["stable/arm64"]
        # A new combination appears.
        make_tree(root, {"testing/x86_64": 3000})
        assert poll(lambda: "testing/x86_64" in offered(server))
        server.wait_for("^INFO Advertising testing/x86_64$")
        assert get(server.port, "/testing/x86_64/vmlinuz")[0] == 200
        # A changed kernel: a new manifest, a higher sequence, the new hash.
        new = write_random(root / "stable/arm64/vmlinuz", 7000, seed=42)
        assert poll(lambda: offered(server)["stable/arm64"]["sequence"] > before["sequence"])
        code, body = get(server.port, "/stable/arm64/manifest.json")
        assert code == 200
        kernel = parse_manifest(body).artifacts["kernel"]
        assert kernel.sha256 == hashlib.sha256(new).hexdigest()
        assert get(server.port, "/stable/arm64/vmlinuz") == (200, new)
        server.wait_for("^INFO Updated stable/arm64: version ")
        # A removed combination is withdrawn.
        (root / "testing/x86_64/vmlinuz").unlink()
        assert poll(lambda: "testing/x86_64" not in offered(server))
        server.wait_for("^INFO Withdrawing testing/x86_64$")
        assert get(server.port, "/testing/x86_64/vmlinuz")[0] == 404


def test_restart_keeps_the_identity_and_the_sequence_grows(tmp_path: Path) -> None:
    make_tree(tmp_path / "art", {"stable/arm64": 1000})
    args = serve_args(tmp_path / "art", tmp_path / "state")
    runs = []
    for _ in range(2):
        server = ServerProcess(args).started()
        try:
            runs.append((status(server), offered(server)["stable/arm64"]["sequence"]))
        finally:
            assert server.stop() == 0
    (first, seq1), (second, seq2) = runs
    assert first["peer_id"] == second["peer_id"]
    assert first["keyid"] == second["keyid"]  # self-signed: the identity signs
    assert seq2 > seq1
    assert (tmp_path / "state/identity.key").stat().st_mode & 0o777 == 0o600
    state = json.loads((tmp_path / "state/sequences.json").read_text())
    assert state == {"stable/arm64": seq2}


def test_two_providers_never_share_a_state_dir(tmp_path: Path) -> None:
    make_tree(tmp_path / "art", {"stable/arm64": 1000})
    args = serve_args(tmp_path / "art", tmp_path / "state")
    with running_server(args):
        result = run_tool("plasmd", "serve", *args)
    assert result.returncode == 2
    assert result.stderr.decode().strip().endswith("is in use by another plasmd")


def test_release_key_signs_and_identity_names(tmp_path: Path) -> None:
    make_tree(tmp_path / "art", {"stable/arm64": 1000})
    release = key_from_byte(9)
    key_file = tmp_path / "release.key"
    key_file.write_bytes(release.file_bytes())
    args = serve_args(tmp_path / "art", tmp_path / "state", "--key", str(key_file))
    with running_server(args) as server:
        info = status(server)
        assert info["keyid"] == release.public.keyid
        identity = StateDir(tmp_path / "state").identity()
        assert info["peer_id"] == identity.public.peer_id != release.public.peer_id
        _, body = get(server.port, "/stable/arm64/manifest.json")
        assert [s.keyid for s in parse_manifest(body).signatures] == [release.public.keyid]


def test_mirror_mode_over_http(tmp_path: Path) -> None:
    root = tmp_path / "art"
    make_tree(root, {"stable/arm64": 4000, "testing/arm64": 4000})
    release = key_from_byte(5)
    good = dump_document(generate(artifacts_dir=root, channel="stable", arch="arm64", key=release))
    (root / "stable/arm64/manifest.json").write_bytes(good)
    bad = generate(artifacts_dir=root, channel="testing", arch="arm64", key=release)
    (root / "testing/arm64/manifest.json").write_bytes(dump_document(bad))
    write_random(root / "testing/arm64/vmlinuz", 4000, seed=99)  # no longer matches
    with running_server(serve_args(root, tmp_path / "state")) as server:
        server.wait_for(r"^WARN Not offering testing/arm64: vmlinuz does not match")
        assert get(server.port, "/stable/arm64/manifest.json") == (200, good)
        assert get(server.port, "/testing/arm64/manifest.json")[0] == 404
        assert get(server.port, "/testing/arm64/vmlinuz")[0] == 404
        assert offered(server)["stable/arm64"]["mirror"] is True
        assert "testing/arm64" in status(server)["rejected"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_a_transfer_exits_0(tmp_path: Path, sig: signal.Signals) -> None:
    make_tree(tmp_path / "art", {"stable/arm64": 8 * 1024 * 1024})
    server = ServerProcess(serve_args(tmp_path / "art", tmp_path / "state")).started()
    import socket

    stalled = socket.socket()
    try:
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", server.port))
        stalled.sendall(b"GET /stable/arm64/vmlinuz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert poll(lambda: status(server)["active_transfers"] == 1)
        assert server.stop(sig) == 0
    finally:
        stalled.close()
    assert "INFO Shutting down" in server.lines
    assert any(line.startswith("INFO Stopped") for line in server.lines)
    assert not any("Traceback" in line for line in server.lines)


# -- the advertiser interface, in process ----------------------------------------------------


class RecordingAdvertiser:
    """Records the calls plasmd serve makes (the real mDNS/DHT ones have their own tests)."""

    name = "recording"

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[Offer]]] = []
        self.lock = threading.Lock()

    def start(self, offers: Sequence[Offer]) -> None:
        with self.lock:
            self.calls.append(("start", list(offers)))

    def update(self, offers: Sequence[Offer]) -> None:
        with self.lock:
            self.calls.append(("update", list(offers)))

    def stop(self) -> None:
        with self.lock:
            self.calls.append(("stop", []))

    def names(self) -> list[str]:
        with self.lock:
            return [name for name, _ in self.calls]


class BrokenAdvertiser(RecordingAdvertiser):
    name = "broken"

    def start(self, offers: Sequence[Offer]) -> None:
        raise RuntimeError("no multicast here")


def test_advertisers_hear_start_update_stop(tmp_path: Path, key: SigningKey) -> None:
    root = tmp_path / "art"
    make_tree(root, {"stable/arm64": 1000})
    config = resolve(
        {
            "artifacts": str(root),
            "port": 0,
            "bind": "127.0.0.1",
            "advertise_host": "192.0.2.10",
            "state_dir": str(tmp_path / "state"),
            "scan_interval": 0.2,
        }
    )
    recorder = RecordingAdvertiser()
    broken = BrokenAdvertiser()
    state = StateDir(config.state_dir)
    provider = Provider(
        config,
        state=state,
        identity=state.identity(),
        signing_key=key,
        advertisers=[broken, recorder],
    )
    provider.bind()
    stop = threading.Event()
    thread = threading.Thread(target=provider.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert poll(lambda: recorder.names() == ["start"])
        (offer,) = recorder.calls[0][1]
        port = provider.port
        assert offer == Offer(
            channel="stable",
            arch="arm64",
            version=offer.version,
            sequence=offer.sequence,
            port=port,
            manifest_path="/stable/arm64/manifest.json",
            manifest_url=f"http://192.0.2.10:{port}/stable/arm64/manifest.json",
        )
        assert get(port, "/health")[0] == 200  # a failing advertiser does not stop serving
        make_tree(root, {"testing/arm64": 1000})
        assert poll(lambda: "update" in recorder.names())
        combos = [o.combination for o in recorder.calls[-1][1]]
        assert combos == ["stable/arm64", "testing/arm64"]
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive()
    assert recorder.names()[-1] == "stop"
    assert broken.names()[-1] == "stop"  # stop is still called on it


def test_nothing_offered(tmp_path: Path) -> None:
    (tmp_path / "art/stable/x86_64").mkdir(parents=True)
    with running_server(serve_args(tmp_path / "art", tmp_path / "state")) as server:
        server.wait_for("^WARN Missing artifacts for stable/x86_64$")
        assert "INFO Found 0 channel/arch combinations" in server.lines
        assert get(server.port, "/health")[0] == 503
        assert get(server.port, "/manifest.json")[0] == 404
        assert status(server)["offered"] == []


def test_missing_advertiser_modules_are_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A module that is not there (yet): importing it raises ImportError.
    monkeypatch.setitem(sys.modules, "phase_client.provider.advertise_mdns", None)
    monkeypatch.setitem(sys.modules, "phase_client.provider.advertise_dht", None)
    config = resolve({"artifacts": str(tmp_path), "state_dir": str(tmp_path / "s")})
    with caplog.at_level(logging.WARNING, logger="phase_client.provider.server"):
        assert build_advertisers(config, key_from_byte(3)) == []
    assert "mdns advertising not available" in caplog.messages
    assert "dht advertising not available" in caplog.messages
    disabled = resolve({"artifacts": str(tmp_path), "no_mdns": True, "no_dht": True})
    caplog.clear()
    assert build_advertisers(disabled, key_from_byte(3)) == []
    assert caplog.messages == []
