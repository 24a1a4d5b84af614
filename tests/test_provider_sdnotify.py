"""plasmd serve speaks systemd's readiness protocol (packaging/plasmd.service is Type=notify):
READY=1 once it serves, STOPPING=1 when it shuts down; a real process, a real unix socket."""

from __future__ import annotations

import os
import signal
import socket
import urllib.request
from pathlib import Path

from phase_client.provider.sdnotify import notify

from .provider_helpers import START_TIMEOUT, ServerProcess, make_tree, serve_args


def test_ready_when_serving_and_stopping_on_sigterm(tmp_path: Path) -> None:
    make_tree(tmp_path / "art", {"stable/x86_64": 4096})
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(str(path))
        manager.settimeout(START_TIMEOUT)
        env = {**os.environ, "NOTIFY_SOCKET": str(path)}
        server = ServerProcess(serve_args(tmp_path / "art", tmp_path / "state"), env=env)
        try:
            ready = manager.recv(4096).decode()
            assert ready.split("\n")[0] == "READY=1", ready
            # Ready means serving: the catalog is loaded and HTTP answers now.
            port = int(server.wait_for(r"^INFO Listening on http://\S+:(\d+)/$").group(1))
            url = f"http://127.0.0.1:{port}/stable/x86_64/manifest.json"
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(url, timeout=30) as response:
                assert response.status == 200
            server.proc.send_signal(signal.SIGTERM)
            assert manager.recv(4096) == b"STOPPING=1"
        finally:
            assert server.stop() == 0


def test_abstract_socket_and_no_manager(tmp_path: Path) -> None:
    name = f"phase-test-{os.getpid()}-{tmp_path.name}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind("\0" + name)
        manager.settimeout(10)
        assert notify("READY=1", {"NOTIFY_SOCKET": "@" + name})
        assert manager.recv(100) == b"READY=1"
    assert not notify("READY=1", {})
    assert not notify("READY=1", {"NOTIFY_SOCKET": "relative/path"})
    # A manager that went away: logged, not raised (the daemon keeps serving).
    assert not notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
