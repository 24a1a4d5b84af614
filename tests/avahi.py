"""Avahi, the mDNS stack of most Linux desktops, as a peer in a test LAN's node (needs root).

Nothing is installed on the machine and nothing runs in its own network: Debian's avahi-daemon
and avahi-utils packages are fetched with ``apt-get download`` into ``build/avahi/debs`` (once
per package version) and unpacked into ``build/avahi/root``; each node then runs its own
``dbus-daemon`` (a private bus, on a socket in the test's directory) and ``avahi-daemon`` on it,
inside the node's network namespace and a private mount namespace of its own (a tmpfs on /run
for avahi's runtime directory, and /etc/passwd and /etc/group with the ``avahi`` user the daemon
looks up, bound over the machine's only there). ``avahi-browse`` and ``avahi-publish-service``
talk to that node's daemon over its bus.

    root = avahi_root()                      # fetch + unpack, cached
    with Avahi(node, root, tmp_path) as avahi:
        avahi.run(["avahi-browse", "-rpt", "_phase-image._tcp"])
"""

from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

from .netns import REPO, Node
from .test_e2e_qemu import terminate

PACKAGES = (
    "avahi-daemon",
    "avahi-utils",
    "libavahi-core7",
    "libavahi-common3",
    "libavahi-common-data",
    "libavahi-client3",
    "libdaemon0",
    "libgdbm6",
)
BUILD = REPO / "build" / "avahi"
START_TIMEOUT = 30.0

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""

# avahi's defaults, but for the D-Bus API on (the tools use it) and no HINFO or workstation
# records (not ours to test).
DAEMON_CONFIG = """[server]
use-ipv4=yes
use-ipv6=yes
enable-dbus=yes
[publish]
publish-hinfo=no
publish-workstation=no
"""


def avahi_root() -> Path:
    """Debian's avahi packages unpacked into build/avahi/root (fetched once per version)."""
    debs = BUILD / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    missing = [p for p in PACKAGES if not list(debs.glob(f"{p}_*.deb"))]
    if missing:
        result = subprocess.run(
            ["apt-get", "download", *missing],
            cwd=debs,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"apt-get download {missing}: {result.stderr}"
    root = BUILD / "root"
    stamp = root / ".debs"
    names = "\n".join(sorted(path.name for path in debs.glob("*.deb")))
    if not stamp.exists() or stamp.read_text() != names:
        scratch = BUILD / "root.new"
        subprocess.run(["rm", "-rf", str(scratch)], check=True, timeout=60)
        for deb in sorted(debs.glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(scratch)], check=True, timeout=120)
        (scratch / ".debs").write_text(names)
        subprocess.run(["rm", "-rf", str(root)], check=True, timeout=60)
        scratch.rename(root)
    return root


class Avahi:
    """A node's own D-Bus system bus and avahi-daemon; ``close()`` (or ``with``) stops both."""

    def __init__(self, node: Node, root: Path, work: Path) -> None:
        self.node = node
        self.root = root
        self.work = work / f"avahi-{node.hostname}"
        self.work.mkdir(parents=True)
        self.socket = self.work / "bus.sock"
        (self.work / "bus.conf").write_text(BUS_CONFIG.format(socket=self.socket))
        (self.work / "avahi-daemon.conf").write_text(DAEMON_CONFIG)
        for name, line in (("passwd", "avahi:x:0:0::/run/avahi-daemon:/bin/false\n"),
                           ("group", "avahi:x:0:\n")):  # fmt: skip
            (self.work / name).write_text(Path(f"/etc/{name}").read_text() + line)
        self.log = self.work / "avahi-daemon.log"
        self.processes: list[subprocess.Popen[Any]] = []

    def env(self) -> dict[str, str]:
        return {
            "PATH": f"{self.root}/usr/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            # the packages' libraries, under usr/lib/<multiarch triplet>
            "LD_LIBRARY_PATH": ":".join(str(p) for p in (self.root / "usr/lib").glob("*-linux-*")),
            "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={self.socket}",
        }

    def start(self) -> Avahi:
        bus = self.node.popen(
            ["dbus-daemon", f"--config-file={self.work / 'bus.conf'}", "--nofork"],
            env=self.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.processes.append(bus)
        deadline = time.monotonic() + START_TIMEOUT
        while not self.socket.exists():
            assert bus.poll() is None, "dbus-daemon exited"
            assert time.monotonic() < deadline, "dbus-daemon did not start"
            time.sleep(0.05)
        daemon = self.root / "usr/sbin/avahi-daemon"
        script = " && ".join(
            [
                "mount -t tmpfs tmpfs /run",
                f"mount --bind {shlex.quote(str(self.work / 'passwd'))} /etc/passwd",
                f"mount --bind {shlex.quote(str(self.work / 'group'))} /etc/group",
                f"exec {shlex.quote(str(daemon))} -f "
                f"{shlex.quote(str(self.work / 'avahi-daemon.conf'))} "
                "--no-drop-root --no-chroot --no-rlimits --no-proc-title",
            ]
        )
        with self.log.open("wb") as out:
            self.processes.append(
                self.node.popen(
                    ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                    env=self.env(),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        while "Server startup complete" not in self.log.read_text(errors="replace"):
            assert self.processes[-1].poll() is None, self.log.read_text(errors="replace")
            assert time.monotonic() < deadline, self.log.read_text(errors="replace")
            time.sleep(0.05)
        return self

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """An avahi tool (or any command) in the node, talking to this daemon."""
        proc = self.node.popen(argv, env=self.env(), **kwargs)
        self.processes.append(proc)
        return proc

    def run(self, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.node.run(argv, timeout=timeout, env=self.env())

    def close(self) -> None:
        for proc in reversed(self.processes):  # the tools, the daemon, then its bus
            terminate(proc)

    def __enter__(self) -> Avahi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
