"""mDNS across real network namespaces on a bridge: real multicast, real zeroconf, no mocks.

Providers are ``tests/mdns_provider_proc.py`` (the real ``MdnsAdvertiser`` driven over stdin)
or a real ``plasmd serve``; the client is ``python3 -m phase_client discover --source mdns``
in another namespace, and ``dig`` (legacy unicast DNS) is the tool we did not write.
"""

from __future__ import annotations

import json
import re
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.netns import REPO, Lan, Node, describe

pytestmark = pytest.mark.netns

PROVIDER = str(REPO / "tests" / "mdns_provider_proc.py")
REPLY_TIMEOUT = 60.0  # registering probes for ~1.2 s; generous for a loaded machine
# Rescan interfaces / look for tied names every second instead of every 5 s: same code, less wait.
FAST_WATCH = ("--watch-interval", "1")
STABLE_ARM64 = [{"channel": "stable", "arch": "arm64", "version": "2025.11.26"}]


class Provider:
    """A provider process in a namespace, driven by JSON commands (see mdns_provider_proc.py)."""

    def __init__(self, node: Node, *extra: str) -> None:
        self.node = node
        self.proc = node.popen(
            [sys.executable, PROVIDER, *extra],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def send(self, op: str, offers: list[dict[str, Any]] | None = None) -> None:
        assert self.proc.stdin is not None
        command: dict[str, Any] = {"op": op}
        if offers is not None:
            command["offers"] = offers
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def reply(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            if not selector.select(REPLY_TIMEOUT):
                raise AssertionError(f"provider in {self.node.netns} did not answer")
        line = self.proc.stdout.readline()
        assert line, f"provider exited: {self.stderr()}"
        reply: dict[str, Any] = json.loads(line)
        assert reply["ok"], reply
        return reply

    def command(self, op: str, offers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        self.send(op, offers)
        return self.reply()

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read()


DISCOVER = ("discover", "--source", "mdns", "--no-probe")


def discover(node: Node, *args: str, timeout: float = 4.0) -> subprocess.CompletedProcess[str]:
    """phase-discover --source mdns in ``node``; --no-probe: these providers serve no HTTP."""
    argv = node.python(*DISCOVER, "--timeout", str(timeout), *args)
    return node.run(argv, timeout=timeout + 60)


def discover_json(node: Node, *args: str, timeout: float = 4.0) -> list[dict[str, Any]]:
    result = discover(node, "--json", *args, timeout=timeout)
    assert result.returncode == 0, describe(result)
    found: list[dict[str, Any]] = json.loads(result.stdout)["providers"]
    return found


def dig(node: Node, server: str, name: str, rtype: str) -> str:
    argv = ["dig", "+time=5", "+tries=2", "-p", "5353", f"@{server}", name, rtype]
    result = node.run(argv, timeout=60)
    assert result.returncode == 0, describe(result)
    return result.stdout


@pytest.fixture
def lan() -> Iterator[Lan]:
    with Lan() as network:
        yield network


def test_two_providers_of_one_combination_get_seed_names(lan: Lan) -> None:
    prov1, prov2, client = lan.add_node("prov1"), lan.add_node("prov2"), lan.add_node("client")
    providers = [Provider(prov1), Provider(prov2)]
    for provider in providers:  # at the same instant: the case where both may win the probe
        provider.send("start", STABLE_ARM64)
    names = {p.node.address: p.reply()["names"]["stable/arm64"] for p in providers}
    assert sorted(names.values()) == ["phase-stable-arm64", "phase-stable-arm64-2"]

    found = discover_json(client, "--arch", "aarch64", "--all", timeout=1.5)
    assert len(found) == 2, found
    by_name = {c["name"]: c for c in found}
    assert set(by_name) == set(names.values())
    for node in (prov1, prov2):
        candidate = by_name[names[node.address]]
        assert candidate["url"] == f"http://{node.address}:8080/stable/arm64/manifest.json"
        assert candidate["version"] == "2025.11.26"
        assert (candidate["channel"], candidate["arch"], candidate["source"]) == (
            "stable",
            "arm64",
            "mdns",
        )
        assert candidate["host"] == f"{node.hostname}.local"
        # its A record, then its AAAA (link-local, with the client's interface as the zone)
        assert candidate["addresses"] == [node.address, f"{node.link_local()}%eth0"]
        assert candidate["port"] == 8080

    # Without --all: one URL line, exit 0, as soon as one answered.
    result = discover(client, "--arch", "arm64", "--quiet")
    assert result.returncode == 0, describe(result)
    assert result.stdout.strip() in {c["url"] for c in found}
    assert result.stderr == ""


def test_each_channel_and_arch_is_advertised_separately(lan: Lan) -> None:
    provider_node, client = lan.add_node("prov"), lan.add_node("client")
    offers = [
        {"channel": "stable", "arch": "arm64", "version": "s-arm"},
        {"channel": "stable", "arch": "x86_64", "version": "s-x86"},
        {"channel": "testing", "arch": "arm64", "version": "t-arm"},
    ]
    names = Provider(provider_node).command("start", offers)["names"]
    assert names == {
        "stable/arm64": "phase-stable-arm64",
        "stable/x86_64": "phase-stable-x86_64",
        "testing/arm64": "phase-testing-arm64",
    }
    for channel, arch, version in [
        ("testing", "aarch64", "t-arm"),
        ("stable", "amd64", "s-x86"),
        ("stable", "arm64", "s-arm"),
    ]:
        found = discover_json(client, "--channel", channel, "--arch", arch, "--all", timeout=1)
        assert [c["version"] for c in found] == [version], found
        assert found[0]["url"].endswith(f"/{channel}/{found[0]['arch']}/manifest.json")

    result = discover(client, "--channel", "testing", "--arch", "x86_64", timeout=1)
    assert result.returncode == 3, describe(result)
    assert result.stdout == ""
    last = result.stderr.strip().splitlines()[-1]
    assert last == "phase-discover: no provider of testing/x86_64 found within 1 s"
    assert "Traceback" not in result.stderr


def test_a_stopping_provider_leaves_a_running_clients_view(lan: Lan) -> None:
    prov1, prov2, client = lan.add_node("prov1"), lan.add_node("prov2"), lan.add_node("client")
    leaving, staying = Provider(prov1), Provider(prov2)
    for provider in (leaving, staying):
        provider.send("start", STABLE_ARM64)
    for provider in (leaving, staying):
        provider.reply()
    browse = client.popen(
        client.python(*DISCOVER, "--all", "--json", "--timeout", "5", "--arch", "arm64"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert browse.stderr is not None
    seen = 0
    deadline = time.monotonic() + 10
    while seen < 2 and time.monotonic() < deadline:  # both found: the client's view has both
        line = browse.stderr.readline()
        seen += "mDNS: found" in line
    assert seen == 2
    stopped_at = time.monotonic()
    leaving.command("stop")
    out, err = browse.communicate(timeout=60)
    assert browse.returncode == 0, err
    assert [c["url"] for c in json.loads(out)["providers"]] == [
        f"http://{prov2.address}:8080/stable/arm64/manifest.json"
    ]
    match = re.search(r"mDNS: \S+ left", err)
    assert match, err
    assert time.monotonic() - stopped_at < 60


def test_withdrawn_combination_and_new_version(lan: Lan) -> None:
    provider_node, client = lan.add_node("prov"), lan.add_node("client")
    provider = Provider(provider_node)
    provider.command("start", [*STABLE_ARM64, {"channel": "testing", "arch": "arm64"}])
    assert len(discover_json(client, "--channel", "testing", "--arch", "arm64", timeout=1)) == 1

    # testing/arm64 disappears; stable/arm64 gets a new version (TXT updated in place).
    reply = provider.command("update", [{"channel": "stable", "arch": "arm64", "version": "v2"}])
    assert reply["names"] == {"stable/arm64": "phase-stable-arm64"}
    result = discover(client, "--channel", "testing", "--arch", "arm64", timeout=1)
    assert result.returncode == 3, describe(result)
    found = discover_json(client, "--arch", "arm64", "--all", timeout=1)
    assert [(c["name"], c["version"]) for c in found] == [("phase-stable-arm64", "v2")]
    txt = dig(
        client, provider_node.address or "", "phase-stable-arm64._phase-image._tcp.local", "TXT"
    )
    assert '"version=v2"' in txt


def test_dig_legacy_unicast_lists_instance_and_txt_keys(lan: Lan) -> None:
    provider_node, client = lan.add_node("prov"), lan.add_node("client")
    Provider(provider_node).command("start", STABLE_ARM64)
    address = provider_node.address or ""
    ptr = dig(client, address, "_phase-image._tcp.local", "PTR")
    assert re.search(
        r"_phase-image\._tcp\.local\.\s+\d+\s+IN\s+PTR\s+phase-stable-arm64\._phase-image", ptr
    ), ptr
    txt = dig(client, address, "phase-stable-arm64._phase-image._tcp.local", "TXT")
    url = f"http://{address}:8080/stable/arm64/manifest.json"
    for entry in ["txtvers=1", "channel=stable", "arch=arm64", f"manifest={url}", "version="]:
        assert f'"{entry}' in txt, txt
    srv = dig(client, address, "phase-stable-arm64._phase-image._tcp.local", "SRV")
    assert re.search(r"IN\s+SRV\s+0 0 8080 prov\.local\.", srv), srv


def test_tie_after_a_partition_heals_is_resolved(lan: Lan) -> None:
    """Both providers register the same name while they cannot hear each other."""
    prov1, prov2, client = lan.add_node("prov1"), lan.add_node("prov2"), lan.add_node("client")
    subprocess.run(["ip", "-n", prov2.netns, "link", "set", "eth0", "down"], check=True)
    providers = [Provider(prov1, *FAST_WATCH), Provider(prov2, *FAST_WATCH)]
    for provider in providers:
        provider.send("start", STABLE_ARM64)
    for provider in providers:
        assert provider.reply()["names"] == {"stable/arm64": "phase-stable-arm64"}
    subprocess.run(["ip", "-n", prov2.netns, "link", "set", "eth0", "up"], check=True)

    deadline = time.monotonic() + 45
    names: list[str] = []
    while time.monotonic() < deadline:
        # A browsing client makes both answer; each then sees the other under its name.
        discover(client, "--all", "--arch", "arm64", timeout=1)
        # A renaming provider briefly holds no name at all.
        names = sorted(p.command("names")["names"].get("stable/arm64", "-") for p in providers)
        if names == ["phase-stable-arm64", "phase-stable-arm64-2"]:
            break
    assert names == ["phase-stable-arm64", "phase-stable-arm64-2"]
    found = discover_json(client, "--all", "--arch", "arm64", timeout=3)
    assert sorted(c["name"] for c in found) == names


def test_no_network_is_a_clear_error(lan: Lan) -> None:
    node = lan.add_isolated("offline")
    result = discover(node, "--arch", "arm64", timeout=1)
    assert result.returncode == 3, describe(result)
    assert "Traceback" not in result.stderr
    assert "mDNS: no network interface with an IPv4 or IPv6 address" in result.stderr
    code = (
        "from phase_client.discovery.mdns import discover_mdns\n"
        "from phase_client.discovery.model import Query\n"
        "from phase_client.errors import NoSourceError\n"
        "try:\n"
        "    discover_mdns(Query(timeout=1))\n"
        "except NoSourceError as exc:\n"
        "    print(exc)\n"
    )
    direct = node.run([sys.executable, "-c", code], timeout=60)
    assert direct.stdout.strip() == (
        "mDNS: no network interface with an IPv4 or IPv6 address (is the network up?)"
    ), describe(direct)


def test_plasmd_serve_is_discovered_and_probed(lan: Lan, tmp_path: Path) -> None:
    provider_node, client = lan.add_node("plasm"), lan.add_node("client")
    artifacts = tmp_path / "artifacts" / "stable" / "arm64"
    artifacts.mkdir(parents=True)
    (artifacts / "vmlinuz").write_bytes(b"kernel" * 1000)
    (artifacts / "version").write_text("2026.11.24\n")
    serve = provider_node.popen(
        provider_node.python(
            "plasmd",
            "serve",
            "--artifacts",
            str(tmp_path / "artifacts"),
            "--state-dir",
            str(tmp_path / "state"),
            "--port",
            "0",
            "--no-dht",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert serve.stderr is not None
    deadline = time.monotonic() + 60
    log: list[str] = []
    while time.monotonic() < deadline and serve.poll() is None:
        log.append(serve.stderr.readline())
        if "mDNS: advertising stable/arm64" in log[-1]:
            break
    assert "mDNS: advertising stable/arm64" in log[-1], "".join(log)

    # With the liveness probe (a HEAD of the manifest URL over real HTTP).
    result = client.run(
        client.python(
            "discover", "--source", "mdns", "--arch", "arm64", "--json", "--timeout", "5"
        ),
        timeout=60,
    )
    assert result.returncode == 0, describe(result)
    (candidate,) = json.loads(result.stdout)["providers"]
    assert candidate["name"] == "phase-stable-arm64"
    assert candidate["version"] == "2026.11.24"
    assert candidate["url"].startswith(f"http://{provider_node.address}:")
    assert candidate["url"].endswith("/stable/arm64/manifest.json")
    assert candidate["rtt_ms"] is not None
    serve.terminate()
    serve.wait(timeout=60)


ROGUE = """
import sys
from zeroconf import IPVersion, ServiceInfo, Zeroconf
zc = Zeroconf(interfaces=[sys.argv[1]], ip_version=IPVersion.V4Only)
bad = {
    "phase-no-url": {"txtvers": "1", "channel": "stable", "arch": "arm64", "manifest": "nope"},
    "phase-future": {"txtvers": "9", "channel": "stable", "arch": "arm64",
                     "manifest": "http://10.0.0.1:1/x"},
    "phase-huge": {"txtvers": "1", "channel": "stable", "arch": "arm64",
                   "manifest": "http://10.0.0.1:1/x", "pad1": "p" * 200, "pad2": "q" * 200},
    "phase-binary": {b"txtvers": b"1", b"channel": b"\\xff\\xfe", b"arch": b"arm64",
                     b"manifest": b"http://10.0.0.1:1/x"},
}
infos = [
    ServiceInfo("_phase-image._tcp.local.", f"{name}._phase-image._tcp.local.", port=1,
                properties=props, server="rogue.local.", parsed_addresses=[sys.argv[1]])
    for name, props in bad.items()
]
for info in infos:
    zc.register_service(info, cooperating_responders=True)
print("ready", flush=True)
sys.stdin.read()
zc.close()
"""


def test_malformed_and_oversized_txt_is_ignored(lan: Lan) -> None:
    rogue_node, good_node, client = (
        lan.add_node("rogue"),
        lan.add_node("good"),
        lan.add_node("client"),
    )
    rogue = rogue_node.popen(
        [sys.executable, "-c", ROGUE, rogue_node.address or ""],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert rogue.stdout is not None
    assert rogue.stdout.readline().strip() == "ready", rogue.stderr
    Provider(good_node).command("start", STABLE_ARM64)
    result = discover(client, "--all", "--json", "--arch", "arm64", "-v", timeout=2)
    assert result.returncode == 0, describe(result)
    assert [c["name"] for c in json.loads(result.stdout)["providers"]] == ["phase-stable-arm64"]
    for name in ("phase-no-url", "phase-future", "phase-huge", "phase-binary"):
        assert re.search(rf"DEBUG mDNS: ignoring {name}\._phase-image", result.stderr), (
            result.stderr
        )
    assert "Traceback" not in result.stderr


def wait_for_names(provider: Provider, expected: dict[str, str], timeout: float = 45) -> None:
    deadline = time.monotonic() + timeout
    names: dict[str, str] = {}
    while time.monotonic() < deadline:
        names = provider.command("names")["names"]
        if names == expected:
            return
        time.sleep(0.5)
    raise AssertionError(f"names {names}, expected {expected}")


def test_provider_follows_its_addresses(lan: Lan) -> None:
    """The network comes up after the provider started (DHCP), then the address changes."""
    provider_node, client = lan.add_node("prov"), lan.add_node("client")
    first = provider_node.address or ""
    subprocess.run(["ip", "-n", provider_node.netns, "addr", "flush", "dev", "eth0"], check=True)
    provider = Provider(provider_node, *FAST_WATCH)
    assert provider.command("start", STABLE_ARM64)["names"] == {}

    subprocess.run(
        ["ip", "-n", provider_node.netns, "addr", "add", f"{first}/24", "dev", "eth0"], check=True
    )
    wait_for_names(provider, {"stable/arm64": "phase-stable-arm64"})
    found = discover_json(client, "--arch", "arm64", "--all", timeout=1.5)
    assert [c["url"] for c in found] == [f"http://{first}:8080/stable/arm64/manifest.json"]

    second = first.rsplit(".", 1)[0] + ".200"
    for command in (["del", f"{first}/24"], ["add", f"{second}/24"]):  # a new DHCP lease
        subprocess.run(
            ["ip", "-n", provider_node.netns, "addr", *command, "dev", "eth0"], check=True
        )
    deadline = time.monotonic() + 45
    urls: list[str] = []
    while time.monotonic() < deadline:  # nothing at all is found while it re-registers
        result = discover(client, "--arch", "arm64", "--all", "--json", timeout=1)
        urls = [c["url"] for c in json.loads(result.stdout or "{}").get("providers", [])]
        if urls == [f"http://{second}:8080/stable/arm64/manifest.json"]:
            break
    assert urls == [f"http://{second}:8080/stable/arm64/manifest.json"]
    assert provider.command("names")["names"] == {"stable/arm64": "phase-stable-arm64"}


CHOOSE = """
import sys
from phase_client.discovery.mdns import discover_mdns
from phase_client.discovery.model import Query
from phase_client.errors import PhaseError
try:
    found = discover_mdns(Query(arch="arm64", timeout=3), interfaces=sys.argv[1:])
except PhaseError as exc:
    print(f"{type(exc).__name__} {exc.exit_code}: {exc}")
else:
    print(" ".join(c.url for c in found))
"""


def test_interfaces_chosen_by_name_or_address(lan: Lan) -> None:
    provider_node, client = lan.add_node("prov"), lan.add_node("client")
    Provider(provider_node, "--interface", "eth0").command("start", STABLE_ARM64)
    url = f"http://{provider_node.address}:8080/stable/arm64/manifest.json"
    for wanted in (["eth0"], [client.address or ""]):
        result = client.run([sys.executable, "-c", CHOOSE, *wanted], timeout=60)
        assert result.stdout.strip() == url, describe(result)
    result = client.run([sys.executable, "-c", CHOOSE, "nope0"], timeout=60)
    assert result.stdout.strip() == (
        "UsageError 2: mDNS: no interface or address 'nope0' on this machine"
    ), describe(result)
    # Loopback only, chosen explicitly: mDNS runs but the provider is not on that link.
    result = client.run([sys.executable, "-c", CHOOSE, "lo"], timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "", describe(result)


def test_multi_homed_provider_gives_each_network_its_own_address(lan: Lan) -> None:
    """One TXT record goes out on both networks; each client gets a URL it can reach."""
    provider_node = lan.add_node("prov")
    other = lan.add_segment()
    second_address = lan.connect(provider_node, other)
    near, far = lan.add_node("near"), lan.add_node("far", segment=other)
    names = Provider(provider_node).command("start", STABLE_ARM64)
    assert sorted(names["addresses"]) == sorted(
        [
            provider_node.address,
            second_address,
            f"{provider_node.link_local('eth0')}%eth0",
            f"{provider_node.link_local('eth1')}%eth1",
        ]
    )
    for client, address in ((near, provider_node.address), (far, second_address)):
        found = discover_json(client, "--arch", "arm64", "--all", timeout=1.5)
        assert [c["url"] for c in found] == [f"http://{address}:8080/stable/arm64/manifest.json"]
        ipv4 = [a for a in found[0]["addresses"] if ":" not in a]
        assert sorted(ipv4) == sorted([provider_node.address, second_address])


QUIET_PROBE = """
import json, threading, time
from phase_client.discovery.mdns import discover_mdns
from phase_client.discovery.model import Query
quiet = threading.Event()
started = time.monotonic()
watch = {}
def note():
    if quiet.wait(10):
        watch["quiet_ms"] = (time.monotonic() - started) * 1000
threading.Thread(target=note, daemon=True).start()
query = Query(channel="stable", arch="arm64", timeout=3.0, want_all=True)
found = discover_mdns(query, quiet=quiet)
print(json.dumps({"found": [c.version for c in found], "quiet": quiet.is_set(), **watch}))
"""


def mdns_quiet(node: Node) -> dict[str, Any]:
    """discover_mdns with a quiet event, listening 3 s: what it found and whether (and when)
    it said the LAN answered nothing."""
    result = node.run([sys.executable, "-c", QUIET_PROBE], timeout=60)
    assert result.returncode == 0, describe(result)
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def test_the_lan_says_quiet_only_when_nothing_it_answered_fits(lan: Lan) -> None:
    provider_node, client = lan.add_node("prov"), lan.add_node("client")
    # Nothing on the LAN: quiet soon after the question, long before the 3 s are over.
    empty = mdns_quiet(client)
    assert empty["found"] == [] and empty["quiet"], empty
    assert empty["quiet_ms"] < 2500, empty  # it came from the quiet rule, not from the end
    # A provider of another arch answers and is resolved, then refused: still quiet.
    provider = Provider(provider_node)
    provider.command("start", [{"channel": "stable", "arch": "x86_64", "version": "x"}])
    other = mdns_quiet(client)
    assert other["found"] == [] and other["quiet"], other
    # A provider that fits: never quiet.
    provider.command("update", STABLE_ARM64)
    fits = mdns_quiet(client)
    assert fits["found"] == ["2025.11.26"] and not fits["quiet"], fits
