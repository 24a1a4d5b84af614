"""phase-boot's look at the link before DHCP is done (``--start-when FILE --link-first``, as
stage 1 runs it; docs/boot.md), on a LAN of network namespaces (``tests/netns.py``), against a
real ``plasmd serve``. The booting machine has only its kernel's ``fe80::`` address, as a
machine whose DHCPv4 lease has not come yet (no go in FILE):

- a provider listening on IPv6 too (plasmd's default) is found by mDNS, reached at its
  link-local address with the client's zone, and the image is staged without any go;
- a provider listening on IPv4 only answers mDNS but cannot be reached on the link: phase-boot
  says so and waits for the go, then boots from the provider's IPv4 URL once the lease is in;
- nobody on the link: it waits, and a stop ends it quietly (exit 0).
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from phase_client.keys import SigningKey
from tests.netns import Lan, Node, describe
from tests.provider_helpers import make_tree

pytestmark = pytest.mark.netns

DEADLINE = 90.0  # seconds any one step may take (a loaded CI machine), never waited out
KERNEL_SIZE = 1 << 20
WAITING = "phase: nobody answered on the link yet: waiting for DHCP"


@pytest.fixture
def lan() -> Iterator[Lan]:
    with Lan(prefix="plk") as network:
        yield network


class Lines:
    """A process's output, read line by line in a thread, so that a test waits with a deadline."""

    def __init__(self, proc: subprocess.Popen[str], stream: IO[str] | None) -> None:
        assert stream is not None
        self.proc = proc
        self.seen: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(None)

    def wait_for(self, pattern: str, timeout: float = DEADLINE) -> re.Match[str]:
        """The first line (from the start) matching ``pattern``; AssertionError at the deadline
        or at the end of the output."""
        deadline = time.monotonic() + timeout
        for line in self.seen:
            if match := re.search(pattern, line):
                return match
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if match := re.search(pattern, line):
                return match
        raise AssertionError(f"no {pattern!r} in phase-boot's output:\n{''.join(self.seen)}")


def serve(node: Node, tmp: Path, key: SigningKey, *args: str) -> Lines:
    """``plasmd serve`` of a 1 MiB stable/arm64 image on port 8080, once it advertises."""
    tmp.mkdir()
    (tmp / "release.key").write_bytes(key.file_bytes())
    make_tree(tmp / "art", {"stable/arm64": KERNEL_SIZE})
    argv = node.python(
        "plasmd",
        "serve",
        *("--artifacts", str(tmp / "art"), "--state-dir", str(tmp / "state")),
        *("--key", str(tmp / "release.key"), "--port", "8080", "--no-dht", *args),
    )
    proc = node.popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = Lines(proc, proc.stderr)  # plasmd logs on stderr
    log.wait_for("mDNS: advertising stable/arm64")
    return log


def boot(node: Node, tmp: Path, key: SigningKey, ready: Path) -> Lines:
    """phase-boot as stage 1 runs it (``--start-when``), staging only."""
    argv = node.python(
        "boot",
        # An hour: a look at the link must end when the link has said all it will, not then.
        *("--key", key.public.keyid, "--arch", "arm64", "--discover-timeout", "3600"),
        *("--stage-into", str(tmp / "stage"), "--stage-only", "--init-lines"),
        *("--start-when", str(ready), "--link-first"),
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_proxy")}
    proc = node.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    return Lines(proc, proc.stdout)


def say(ready: Path, word: str) -> None:
    """What stage 1's init writes: the word, then a rename (never half a word)."""
    temporary = ready.with_suffix(".new")
    temporary.write_text(f"{word}\n")
    temporary.rename(ready)


def test_a_provider_on_the_link_boots_the_machine_before_its_lease(
    lan: Lan, tmp_path: Path
) -> None:
    provider = lan.add_node("prov")
    client = lan.add_node("client", ipv4=False, ipv6=False)  # fe80:: only: no lease yet
    key = SigningKey.generate()
    serve(provider, tmp_path / "prov", key)  # the default: IPv4 and IPv6
    ready = tmp_path / "ready"
    run = boot(client, tmp_path, key, ready)
    run.wait_for(rf"\] phase: link up: eth0 {re.escape(client.link_local())}\n")
    link_local = provider.link_local()
    url = f"http://[{link_local}%25eth0]:8080/stable/arm64/manifest.json"
    run.wait_for(rf"phase: discovered {re.escape(url)} via mdns \(version ")
    assert run.proc.wait(timeout=DEADLINE) == 0, "".join(run.seen)
    run.wait_for(re.escape(str(tmp_path / "stage")))
    assert not any(WAITING in line for line in run.seen), run.seen
    assert (tmp_path / "stage" / "kernel").stat().st_size == KERNEL_SIZE
    assert not ready.exists()  # no go was ever needed


def test_a_provider_on_ipv4_only_is_waited_for_until_the_lease(lan: Lan, tmp_path: Path) -> None:
    provider = lan.add_node("prov")
    client = lan.add_node("client")
    address = client.address
    assert address is not None
    dropped = client.run(["ip", "-4", "addr", "del", f"{address}/24", "dev", "eth0"])
    assert dropped.returncode == 0, describe(dropped)
    key = SigningKey.generate()
    serve(provider, tmp_path / "prov", key, "--bind", "0.0.0.0")
    ready = tmp_path / "ready"
    run = boot(client, tmp_path, key, ready)
    run.wait_for(re.escape(WAITING))  # found by mDNS, but nothing listens on its fe80::
    assert not (tmp_path / "stage").exists()
    leased = client.run(["ip", "-4", "addr", "add", f"{address}/24", "dev", "eth0"])
    assert leased.returncode == 0, describe(leased)
    say(ready, "go")
    url = f"http://{provider.address}:8080/stable/arm64/manifest.json"
    run.wait_for(rf"phase: discovered {re.escape(url)} via mdns \(version ")
    assert run.proc.wait(timeout=DEADLINE) == 0, "".join(run.seen)
    assert (tmp_path / "stage" / "kernel").stat().st_size == KERNEL_SIZE


def test_nobody_on_the_link_waits_for_the_go_and_a_stop_ends_it(lan: Lan, tmp_path: Path) -> None:
    client = lan.add_node("client", ipv4=False, ipv6=False)
    ready = tmp_path / "ready"
    run = boot(client, tmp_path, SigningKey.generate(), ready)
    run.wait_for(re.escape(WAITING))
    assert run.proc.poll() is None  # still waiting: the link said nothing, DHCP may yet
    say(ready, "stop")
    assert run.proc.wait(timeout=DEADLINE) == 0, "".join(run.seen)
    assert not (tmp_path / "stage").exists()
