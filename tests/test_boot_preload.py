"""phase-boot's start-up plan (--start-when): what it imports before the network's go, and
what only while it still waits (phase_client/boot/orchestrate.py)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from phase_client.boot.orchestrate import (
    AFTER_DISCOVERY,
    DHT_MODULES,
    DHT_STEPS,
    DISCOVERY_MODULES,
    Discovery,
    preload_plan,
    wait_for_network,
)
from phase_client.mdns.interfaces import usable_link_local

BOOT = list(AFTER_DISCOVERY)


def test_auto_imports_the_lan_path_first_then_the_fetch_side_then_the_dht_in_idle_time() -> None:
    needed, idle = preload_plan(discover=True, source="auto")
    assert needed == list(DISCOVERY_MODULES)
    assert idle == [*BOOT, *DHT_STEPS] and set(DHT_MODULES) <= set(idle)
    assert not set(idle) & set(needed)


def test_each_source_imports_what_it_asks_first() -> None:
    assert preload_plan(discover=True, source="mdns") == (list(DISCOVERY_MODULES), BOOT)
    needed, idle = preload_plan(discover=True, source="dht")
    assert needed == ["phase_client.discovery.orchestrate", *DHT_MODULES] and idle == BOOT
    # With --manifest there is no discovery at all: the fetch side is needed at the go.
    assert preload_plan(discover=False, source="auto") == (BOOT, [])


def test_the_fetch_side_covers_what_the_fetch_and_staging_import() -> None:
    """Every module the trust root, the fetch (urllib3 included) and the staging import is
    reached by the plan's steps: nothing of it is left to be imported on the boot's path."""
    code = (
        "import sys, importlib\n"
        "import phase_client.cli.boot, phase_client.discovery.orchestrate\n"
        "import phase_client.discovery.mdns\n"
        "before = set(sys.modules)\n"
        "from phase_client.boot.orchestrate import AFTER_DISCOVERY\n"
        "for name in AFTER_DISCOVERY: importlib.import_module(name)\n"
        "planned = set(sys.modules)\n"
        "import phase_client.cli._trust as t, phase_client.fetch.download as d\n"
        "d.Http(d.Settings()).clear()\n"
        "import phase_client.fetch.fetcher, phase_client.fetch.rootchain, phase_client.root\n"
        "import phase_client.boot.stage, phase_client.state\n"
        "late = sorted(set(sys.modules) - planned)\n"
        "print(' '.join(late))\n"
    )
    assert printed_by(code) == []


def printed_by(code: str) -> list[str]:
    """The words a fresh interpreter prints running ``code`` (its own sys.modules)."""
    import subprocess

    run = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return run.stdout.split()


def test_no_dataclass_on_the_client_tools_paths() -> None:
    """Every module phase-boot, phase-fetch, phase-discover and phase-verify import on their way
    (the boot's whole plan, the DHT's steps included) defines its records without dataclasses:
    each costs milliseconds of start-up under emulation, and the module itself imports
    ``inspect`` and ``ast`` (docs/architecture.md)."""
    code = (
        "import sys, importlib\n"
        "import phase_client.cli.boot, phase_client.cli.fetch, phase_client.cli.discover\n"
        "import phase_client.cli.verify, phase_client.cli._trust, phase_client.verification\n"
        "from phase_client.boot import orchestrate as o\n"
        "for name in (*o.DISCOVERY_MODULES, *o.AFTER_DISCOVERY, *o.DHT_STEPS):\n"
        "    importlib.import_module(name)\n"
        "import phase_client.discovery.probe, phase_client.discovery.rank\n"
        "print(' '.join(m for m in ('dataclasses',) if m in sys.modules))\n"
    )
    assert printed_by(code) == []


def test_the_tools_flags_import_no_signature_code() -> None:
    """phase-boot's module and the trust flags import neither PyNaCl nor the manifest's parser:
    --start-when loads them only while it waits (or while discovery runs)."""
    code = (
        "import sys\n"
        "import phase_client.cli.boot as b, phase_client.cli.fetch\n"
        "b.build_parser()\n"
        "print(' '.join(m for m in sys.modules if m.startswith(('nacl', 'urllib3')) or m in "
        "('phase_client.keys', 'phase_client.manifest', 'phase_client.root')))\n"
    )
    assert printed_by(code) == []


def test_a_discovery_in_the_background_gives_its_answer_or_its_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    from phase_client.discovery import orchestrate
    from phase_client.discovery.model import Candidate, Query

    release = threading.Event()
    seen: list[tuple[str, str, float]] = []

    def find(query, **kwargs):  # type: ignore[no-untyped-def]
        seen.append((query.channel, query.arch, query.timeout))
        assert release.wait(5)
        if query.channel == "broken":
            raise RuntimeError("no sockets")
        return [Candidate("mdns", "http://192.0.2.1:8080/m.json", query.channel, query.arch)]

    monkeypatch.setattr(orchestrate, "find_providers", find)
    # start() returns while the lookup is still blocked: the caller goes on meanwhile.
    running = Discovery(Query("stable", "x86_64", timeout=3.0)).start()
    release.set()
    assert [c.url for c in running.result()] == ["http://192.0.2.1:8080/m.json"]
    assert seen == [("stable", "x86_64", 3.0)]
    failing = Discovery(Query("broken", "x86_64")).start()
    with pytest.raises(RuntimeError, match="no sockets"):
        failing.result()


def test_every_planned_module_exists() -> None:
    import importlib.util

    for source in ("auto", "mdns", "dht"):
        needed, idle = preload_plan(discover=True, source=source)
        for name in (*needed, *idle):
            assert importlib.util.find_spec(name) is not None, name


def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bodies: dict[str, str]) -> None:
    """Importable modules ``name: source`` (each forgotten again after the test)."""
    for name, body in bodies.items():
        (tmp_path / f"{name}.py").write_text(body)
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))


def test_go_already_there_imports_nothing_idle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    modules(tmp_path, monkeypatch, {"idle_probe_a": ""})
    go = tmp_path / "ready"
    go.write_text("go\n")
    assert wait_for_network(go, timeout=5, idle=["idle_probe_a"]) == "go"
    assert "idle_probe_a" not in sys.modules


def test_idle_modules_are_imported_one_by_one_until_go_comes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first idle module's import brings the network up (writes the go file): the second
    is left for later, where it is needed."""
    go = tmp_path / "ready"
    modules(
        tmp_path,
        monkeypatch,
        {"idle_probe_b": f"open({str(go)!r}, 'w').write('go')\n", "idle_probe_c": ""},
    )
    assert wait_for_network(go, timeout=5, idle=["idle_probe_b", "idle_probe_c"]) == "go"
    assert "idle_probe_b" in sys.modules and "idle_probe_c" not in sys.modules


def test_a_failing_idle_import_ends_the_warm_up_not_the_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    go = tmp_path / "ready"
    modules(
        tmp_path,
        monkeypatch,
        {
            "idle_probe_d": "raise ImportError('broken')\n",
            "idle_probe_e": f"open({str(go)!r}, 'w').write('stop')\n",
        },
    )
    go_later = tmp_path / "never"
    with pytest.raises(TimeoutError):
        wait_for_network(go_later, timeout=0.2, poll=0.01, idle=["idle_probe_d", "idle_probe_e"])
    assert "idle_probe_e" not in sys.modules  # the warm-up stopped at the failure
    go.write_text("stop")
    assert wait_for_network(go, timeout=5) == "stop"


def test_a_usable_link_ends_the_wait_before_the_go_only_when_asked_for(tmp_path: Path) -> None:
    """``link`` (phase-boot --link-first: a usable link-local address) ends the wait before the
    go; without it, or while the link is not usable, the wait goes on to the go or stop."""
    ready = tmp_path / "ready"
    assert wait_for_network(ready, timeout=5, link=lambda: True) == "link"
    with pytest.raises(TimeoutError):
        wait_for_network(ready, timeout=0.2, poll=0.01, link=lambda: False)
    usable = threading.Event()
    later = threading.Timer(0.1, usable.set)
    later.start()
    try:
        assert wait_for_network(ready, timeout=5, poll=0.01, link=usable.is_set) == "link"
    finally:
        later.join()
    ready.write_text("go\n")  # the go or stop, once there, comes first
    assert wait_for_network(ready, timeout=5, link=lambda: True) == "go"
    ready.write_text("anything else\n")
    assert wait_for_network(ready, timeout=5, link=lambda: True) == "stop"


def test_usable_link_local_addresses_are_read_from_the_kernels_table() -> None:
    """/proc/net/if_inet6: link scope (0x20) only, not while tentative (0x40) or after a failed
    duplicate address detection (0x08), never loopback; malformed lines skipped."""
    table = (
        "fe80000000000000505400fffe123456 02 40 20 80 eth0\n"  # usable (permanent)
        "fe80000000000000505400fffe123457 03 40 20 c0 eth1\n"  # tentative: DAD runs
        "fe80000000000000505400fffe123458 04 40 20 88 eth2\n"  # DAD failed
        "fd000213000000010000000000000005 02 40 00 80 eth0\n"  # global scope
        "00000000000000000000000000000001 01 80 10 80 lo\n"
        "fe80000000000000000000000000000a 05 40 20 80\n"  # malformed
        "zz80000000000000505400fffe123459 06 40 20 80 eth3\n"
    )
    assert usable_link_local(table) == [("eth0", "fe80::5054:ff:fe12:3456")]
    assert usable_link_local("") == []
