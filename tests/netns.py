"""A throw-away LAN of Linux network namespaces for integration tests (needs root).

    with Lan() as lan:                       # hub namespace with a bridge, random suffix
        a = lan.add_node("prov1")            # namespace + veth on the bridge + 10.213.X.2/24
        b = lan.add_node("client")
        lan.connect(a, lan.add_segment())    # a second interface, eth1, on another bridge
        proc = a.popen([sys.executable, "-m", "phase_client", "plasmd", ...])
        result = b.run(["dig", "-p", "5353", f"@{a.address}", ...], timeout=30)

Layout: every name carries a random suffix so parallel runs never collide. The bridges live in
their own "hub" namespace, and each node is a namespace joined to a bridge by a veth pair whose
inside end is called ``eth0`` (``eth1``... for more links). Segment N's subnet,
10.213.(X+N).0/24 with X random, exists only inside these namespaces; nothing is added to the
host's own network. Each node also gets its own UTS
namespace per process (``hostname`` = node name), so two nodes look like two machines.

Nodes have no default route, which is exactly the situation of a freshly booted client before
it learns a gateway: there is no route for multicast either, so mDNS code must pick interfaces.

IPv6 (opt-in, per link; the defaults are unchanged): ``add_node(name, ipv6=True)`` also gives
the link a unique-local address in the segment's prefix ``fd00:213:<X+N>::/64`` (same host
number as the IPv4 one), ``ipv4=False`` leaves IPv4 out entirely, so
``lan.add_node("p", ipv4=False, ipv6=True)`` is a machine on an IPv6-only LAN and
``ipv4=False, ipv6=False`` one with nothing but its kernel's link-local ``fe80::`` address.
``lan.advertise_prefix(router)`` sends router advertisements for segment 0's prefix from a
node, so the others configure their own address in it (SLAAC), as with radvd.
Every link skips IPv6 duplicate address detection, so its IPv6 addresses (the link-local one
too) are usable at once instead of "tentative" for about a second.

``close()`` (or leaving the ``with`` block) kills every process started through the LAN and
deletes every namespace, which also deletes the veth pairs and the bridge.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import time
import urllib.parse
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
    address: str | None  # eth0's address; None for a node with only loopback
    addresses: dict[str, str] = field(default_factory=dict)  # interface -> IPv4 address
    addresses6: dict[str, str] = field(default_factory=dict)  # interface -> ULA (ipv6=True)
    links: list[str] = field(default_factory=list)  # every interface, eth0 first

    @property
    def address6(self) -> str | None:
        """eth0's unique-local IPv6 address, if it has one."""
        return self.addresses6.get("eth0")

    def link_local(self, interface: str = "eth0") -> str:
        """The kernel's ``fe80::`` address of ``interface`` (without zone)."""
        out = subprocess.run(
            ["ip", "-n", self.netns, "-6", "-o", "addr", "show", "dev", interface, "scope", "link"],
            check=True,
            capture_output=True,
            text=True,
            timeout=IP_TIMEOUT,
        ).stdout.split()
        return out[out.index("inet6") + 1].split("/", 1)[0]

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
class Segment:
    """One bridge (one broadcast domain) and its subnet 10.213.<third_octet>.0/24."""

    bridge: str
    third_octet: int
    next_host: int = 2  # .1 stays free (a gateway, in tests that want one)

    @property
    def subnet(self) -> str:
        return f"10.213.{self.third_octet}.0/24"

    @property
    def prefix6(self) -> str:
        """The segment's unique-local IPv6 prefix (used by links made with ``ipv6=True``)."""
        return f"fd00:213:{self.third_octet:x}::/64"

    def take_address(self) -> str:
        if self.next_host > 254:
            raise ValueError("a test segment holds at most 253 addresses")
        self.next_host += 1
        return f"10.213.{self.third_octet}.{self.next_host - 1}"

    def address6(self, address: str) -> str:
        """The IPv6 address with the host number of IPv4 ``address`` in this segment."""
        return f"fd00:213:{self.third_octet:x}::{int(address.rsplit('.', 1)[1]):x}"


@dataclass
class Lan:
    """Bridges in their own namespace plus nodes attached to them. Tear down with ``close()``.

    Segment 0 exists from the start; ``add_segment`` makes another, unconnected broadcast
    domain (no routing between segments), for multi-homed machines.
    """

    prefix: str = "ph"
    suffix: str = field(default_factory=lambda: secrets.token_hex(3))
    third_octet: int = field(default_factory=lambda: 1 + secrets.randbelow(200))
    nodes: list[Node] = field(default_factory=list)
    processes: list[subprocess.Popen[Any]] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    links: int = 0

    def __post_init__(self) -> None:
        require_root()
        try:
            self.hub = self._add_netns("hub")
            self.add_segment()
        except BaseException:
            self.close()
            raise

    @property
    def subnet(self) -> str:
        return self.segments[0].subnet

    def add_segment(self) -> int:
        """Another bridge with its own subnet; returns its index for ``add_node``/``connect``."""
        index = len(self.segments)
        bridge = f"br{self.suffix}{index}"
        _ip("-n", self.hub, "link", "add", bridge, "type", "bridge")
        # Link-local multicast (224.0.0.251) is flooded anyway; no snooping = no surprises.
        _ip("-n", self.hub, "link", "set", bridge, "type", "bridge", "mcast_snooping", "0")
        _ip("-n", self.hub, "link", "set", bridge, "up")
        self.segments.append(Segment(bridge, self.third_octet + index))
        return index

    def _add_netns(self, name: str) -> str:
        netns = f"{self.prefix}-{self.suffix}-{name}"
        _ip("netns", "add", netns)
        self.namespaces.append(netns)
        _ip("-n", netns, "link", "set", "lo", "up")
        return netns

    def add_node(
        self, name: str, segment: int = 0, *, ipv4: bool = True, ipv6: bool = False
    ) -> Node:
        """A namespace with ``eth0`` on a segment, at the segment's next free address (IPv4,
        and/or the unique-local IPv6 one with ``ipv6``; ``address`` is None without IPv4)."""
        node = Node(self, self._add_netns(name), hostname=name, address=None)
        address = self.connect(node, segment, ipv4=ipv4, ipv6=ipv6)
        node.address = address if ipv4 else None
        self.nodes.append(node)
        return node

    def connect(self, node: Node, segment: int, *, ipv4: bool = True, ipv6: bool = False) -> str:
        """One more interface (eth0, eth1, ...) for ``node`` on ``segment``; returns its IPv4
        address, or without ``ipv4`` its IPv6 address (``ipv6``) or its link-local one."""
        seg = self.segments[segment]
        interface = f"eth{len(node.links)}"
        self.links += 1
        outside, inside = f"v{self.suffix}{self.links:02x}h", f"v{self.suffix}{self.links:02x}n"
        address = seg.take_address()
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        try:
            _ip("link", "set", outside, "netns", self.hub)
            _ip("link", "set", inside, "netns", node.netns)
        except BaseException:
            subprocess.run(["ip", "link", "del", outside], capture_output=True, timeout=IP_TIMEOUT)
            raise
        _ip("-n", self.hub, "link", "set", outside, "master", seg.bridge)
        _ip("-n", self.hub, "link", "set", outside, "up")
        _ip("-n", node.netns, "link", "set", inside, "name", interface)
        node.links.append(interface)
        # IPv6 addresses (the kernel's link-local one too) usable at once: no duplicate address
        # detection, which would keep them "tentative" (unbindable) for the link's first second.
        sysctl = f"net.ipv6.conf.{interface}.accept_dad=0"
        subprocess.run(
            ["ip", "netns", "exec", node.netns, "sysctl", "-qw", sysctl],
            check=True,
            capture_output=True,
            timeout=IP_TIMEOUT,
        )
        if ipv4:
            _ip("-n", node.netns, "addr", "add", f"{address}/24", "dev", interface)
            node.addresses[interface] = address
        if ipv6:
            address6 = seg.address6(address)
            _ip("-n", node.netns, "addr", "add", f"{address6}/64", "dev", interface, "nodad")
            node.addresses6[interface] = address6
        _ip("-n", node.netns, "link", "set", interface, "up")
        if ipv4:
            return address
        return node.addresses6[interface] if ipv6 else node.link_local(interface)

    def add_isolated(self, name: str) -> Node:
        """A namespace with only loopback: a machine whose network is not up."""
        node = Node(self, self._add_netns(name), hostname=name, address=None)
        self.nodes.append(node)
        return node

    def advertise_prefix(
        self, node: Node, segment: int = 0, interface: str = "eth0"
    ) -> subprocess.Popen[Any]:
        """Send router advertisements for ``segment``'s prefix (``Segment.prefix6``) out of
        ``node``'s ``interface`` (on that segment) every second, as radvd would: hosts on the
        segment configure an address in it by themselves (SLAAC). Router lifetime 0: no default
        route, only the prefix. The process is killed with the LAN."""
        prefix = self.segments[segment].prefix6.split("/", 1)[0]
        return node.popen([sys.executable, "-c", RA_SENDER, interface, prefix])

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


# A router advertisement (RFC 4861 4.2) with one prefix information option (4.6.2: /64, on-link
# and autonomous: SLAAC), to ff02::1 every second. The kernel fills in the ICMPv6 checksum.
RA_SENDER = """
import ipaddress, socket, struct, sys, time
interface, prefix = sys.argv[1], ipaddress.IPv6Address(sys.argv[2])
sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, socket.if_nametoindex(interface))
ra = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 0, 0, 0)
option = struct.pack("!BBBBIII", 3, 4, 64, 0xC0, 86400, 14400, 0) + prefix.packed
while True:
    sock.sendto(ra + option, ("ff02::1", 0, 0, socket.if_nametoindex(interface)))
    time.sleep(1)
"""


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


# What a booting machine's serial console says about a provider it found on such a LAN. Stage 1
# may find it on the link before its DHCP lease comes (docs/boot.md: phase-boot looks at the
# link by mDNS over IPv6 link-local while DHCP waits), then at the provider's fe80:: address
# with the machine's own interface as zone; or after the lease, at the URL the provider
# announces. Which comes first is a race both sides of which are right.


def discovered_url(url: str, link_local: str | None = None) -> str:
    """A regex of ``url`` as a booting machine may report it: as given, or on the link (the
    provider's ``link_local`` address; default: any ``fe80::`` one) with a zone."""
    parts = urllib.parse.urlsplit(url)
    host = re.escape(link_local) if link_local else "fe80::[0-9a-f:]+"
    rest = re.escape(f":{parts.port}{parts.path}")
    return rf"(?:{re.escape(url)}|http://\[{host}%25\w+\]{rest})"


def network_up(address: str = r"10\.213\.\d+\.1\d\d/24") -> str:
    """A regex of stage 1's line for its network: its lease (``address``, a regex; SLAAC's on an
    IPv6-only LAN) or, when the machine booted from the link before it came, its link-local
    address."""
    return rf"phase: (?:network up: \w+ {address}|link up: \w+ fe80::[0-9a-f:]+)\n"
