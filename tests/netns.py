"""A throw-away LAN of Linux network namespaces for integration tests (needs root).

    with Lan() as lan:                       # hub namespace with a bridge, random suffix
        a = lan.add_node("prov1")            # namespace + veth on the bridge + 10.213.X.2/24
        b = lan.add_node("client")
        proc = a.popen([sys.executable, "-m", "phase_client", "plasmd", ...])
        result = b.run(["dig", "-p", "5353", f"@{a.address}", ...], timeout=30)

Layout: every name carries a random suffix so parallel runs never collide. The bridge lives in
its own "hub" namespace, and each node is a namespace joined to it by a veth pair whose inside end
is called ``eth0``. The test subnet (10.213.X.0/24, X random) exists only inside these
namespaces; nothing is added to the host's own network. Each node also gets its own UTS
namespace per process (``hostname`` = node name), so two nodes look like two machines.

Nodes have no default route, which is exactly the situation of a freshly booted client before
it learns a gateway: there is no route for multicast either, so mDNS code must pick interfaces.

``close()`` (or leaving the ``with`` block) kills every process started through the LAN and
deletes every namespace, which also deletes the veth pairs and the bridge.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
IP_TIMEOUT = 30


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=IP_TIMEOUT)


def require_root() -> None:
    """Fail (never skip) with a clear message: CI runs as root, so these tests must run."""
    if os.geteuid() != 0:
        raise RuntimeError("network-namespace tests need root (ip netns); run them as root")


@dataclass
class Node:
    """One namespace on the LAN: a machine with ``eth0`` at ``address``."""

    lan: Lan
    netns: str
    hostname: str
    address: str | None  # None for a node without a LAN interface (only loopback)
    interface: str | None = "eth0"

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside this namespace, with this node's host name."""
        script = 'hostname "$0" && exec "$@"'
        return [
            "ip",
            "netns",
            "exec",
            self.netns,
            "unshare",
            "--uts",
            "sh",
            "-c",
            script,
            self.hostname,
            *argv,
        ]

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a process in this namespace; the LAN kills it at teardown if still running."""
        kwargs.setdefault("cwd", REPO)
        kwargs.setdefault("env", child_env())
        kwargs.setdefault("start_new_session", True)
        proc = subprocess.Popen(self.command(argv), **kwargs)
        self.lan.processes.append(proc)
        return proc

    def run(
        self, argv: Sequence[str], timeout: float = 60, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run to completion in this namespace; text output captured."""
        kwargs.setdefault("cwd", REPO)
        kwargs.setdefault("env", child_env())
        return subprocess.run(
            self.command(argv), capture_output=True, text=True, timeout=timeout, **kwargs
        )

    def python(self, *args: str) -> list[str]:
        """``python3 -m phase_client ARGS`` as an argv list."""
        return [sys.executable, "-m", "phase_client", *args]


@dataclass
class Lan:
    """A bridge in its own namespace plus nodes attached to it. Tear down with ``close()``."""

    prefix: str = "ph"
    suffix: str = field(default_factory=lambda: secrets.token_hex(3))
    third_octet: int = field(default_factory=lambda: 1 + secrets.randbelow(254))
    nodes: list[Node] = field(default_factory=list)
    processes: list[subprocess.Popen[Any]] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        require_root()
        self.hub = self._add_netns("hub")
        self.bridge = f"br{self.suffix}"
        try:
            _ip("-n", self.hub, "link", "add", self.bridge, "type", "bridge")
            # Link-local multicast (224.0.0.251) is flooded anyway; no snooping = no surprises.
            _ip("-n", self.hub, "link", "set", self.bridge, "type", "bridge", "mcast_snooping", "0")
            _ip("-n", self.hub, "link", "set", self.bridge, "up")
        except BaseException:
            self.close()
            raise

    @property
    def subnet(self) -> str:
        return f"10.213.{self.third_octet}.0/24"

    def _add_netns(self, name: str) -> str:
        netns = f"{self.prefix}-{self.suffix}-{name}"
        _ip("netns", "add", netns)
        self.namespaces.append(netns)
        _ip("-n", netns, "link", "set", "lo", "up")
        return netns

    def add_node(self, name: str) -> Node:
        """A namespace with ``eth0`` on the bridge and the next free address of the subnet."""
        index = len(self.nodes) + 2  # .1 stays free (a gateway, in tests that want one)
        if index > 254:
            raise ValueError("a test LAN holds at most 253 nodes")
        netns = self._add_netns(name)
        outside, inside = f"v{self.suffix}{index:02x}h", f"v{self.suffix}{index:02x}n"
        address = f"10.213.{self.third_octet}.{index}"
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        try:
            _ip("link", "set", outside, "netns", self.hub)
            _ip("link", "set", inside, "netns", netns)
        except BaseException:
            subprocess.run(["ip", "link", "del", outside], capture_output=True, timeout=IP_TIMEOUT)
            raise
        _ip("-n", self.hub, "link", "set", outside, "master", self.bridge)
        _ip("-n", self.hub, "link", "set", outside, "up")
        _ip("-n", netns, "link", "set", inside, "name", "eth0")
        _ip("-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        node = Node(self, netns, hostname=name, address=address)
        self.nodes.append(node)
        return node

    def add_isolated(self, name: str) -> Node:
        """A namespace with only loopback: a machine whose network is not up."""
        node = Node(self, self._add_netns(name), hostname=name, address=None, interface=None)
        self.nodes.append(node)
        return node

    def close(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        for proc in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for netns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", netns], capture_output=True, timeout=IP_TIMEOUT)
        self.namespaces.clear()

    def __enter__(self) -> Lan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def child_env() -> dict[str, str]:
    """The environment for processes in a namespace: this checkout first on the import path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def describe(proc: subprocess.CompletedProcess[str]) -> str:
    """A failed command's argv, exit code and output, for assertion messages."""
    argv = proc.args if isinstance(proc.args, str) else shlex.join(map(str, proc.args))
    return f"$ {argv}\nexit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
