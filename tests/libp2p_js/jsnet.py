"""``JsNet``: start ``testnet.mjs`` (N js-libp2p Kademlia nodes on 127.0.0.1) and talk to it
with one JSON line per request. Installs the pinned js dependencies (``npm ci``) when
``node_modules`` is missing. Every wait is bounded; ``close`` stops the nodes.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
NODE = shutil.which("node") or "/usr/bin/node"
NPM = shutil.which("npm") or "/usr/bin/npm"


class JsNetError(RuntimeError):
    pass


def node_available() -> str | None:
    """None when node and npm are usable, else why not."""
    if not (os.path.exists(NODE) and os.path.exists(NPM)):
        return "node/npm not installed"
    try:
        out = subprocess.run([NODE, "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"node does not run: {exc}"
    major = out.stdout.strip().lstrip("v").split(".")[0]
    if not major.isdigit() or int(major) < 20:
        return f"node {out.stdout.strip()} is older than 20"
    return None


def ensure_installed(timeout: float = 600) -> None:
    """``npm ci`` (the lockfile's exact versions) unless node_modules is already complete."""
    if (HERE / "node_modules" / ".package-lock.json").exists():
        return
    result = subprocess.run(
        [NPM, "ci", "--no-audit", "--no-fund"],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise JsNetError(f"npm ci failed: {result.stderr.strip()[-2000:]}")


class JsNet:
    def __init__(self, nodes: int = 5, timeout: float = 60, extra: Sequence[str] = ()) -> None:
        ensure_installed()
        self.proc = subprocess.Popen(
            [NODE, "--import", "./polyfill.mjs", "testnet.mjs", "--nodes", str(nodes), *extra],
            cwd=HERE,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._next_id = 0
        try:
            ready = self._read_line(timeout)
        except BaseException:
            self.close()
            raise
        if not ready.get("ready"):
            self.close()
            raise JsNetError(f"testnet did not start: {ready}")
        self.nodes: list[dict[str, Any]] = ready["nodes"]

    def _read_line(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise JsNetError(f"testnet: no answer within {timeout} s")
            readable, _, _ = select.select([self.proc.stdout], [], [], left)
            if not readable:
                continue
            line = self.proc.stdout.readline()
            if not line:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise JsNetError(f"testnet exited: {err.strip()[-2000:]}")
            try:
                parsed: dict[str, Any] = json.loads(line)
            except json.JSONDecodeError:
                continue
            return parsed

    def request(self, cmd: str, timeout: float = 60, **fields: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self._next_id += 1
        ident = self._next_id
        self.proc.stdin.write(json.dumps({"cmd": cmd, "id": ident, **fields}) + "\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read_line(max(0.1, deadline - time.monotonic()))
            if answer.get("id") == ident:
                if not answer.get("ok"):
                    raise JsNetError(f"testnet {cmd}: {answer.get('error')}")
                return answer

    def bootstrap(self, index: int = 0) -> str:
        """Node ``index``'s TCP multiaddr with its /p2p/ id."""
        return str(self.nodes[index]["addrs"][0])

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> JsNet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
