"""phase-boot's start-up plan (--start-when): what it imports before the network's go, and
what only while it still waits (phase_client/boot/orchestrate.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from phase_client.boot.orchestrate import (
    DHT_MODULES,
    DHT_STEPS,
    DISCOVERY_MODULES,
    FETCH_MODULES,
    STAGE_MODULES,
    preload_plan,
    wait_for_go,
)

BOOT = [*FETCH_MODULES, *STAGE_MODULES]


def test_auto_imports_the_lan_path_first_and_the_dht_only_in_idle_time() -> None:
    needed, idle = preload_plan(discover=True, source="auto")
    assert needed == [*DISCOVERY_MODULES, *BOOT]
    assert idle == list(DHT_STEPS) and set(DHT_MODULES) <= set(idle)
    assert not set(DHT_STEPS) & set(needed)


def test_each_source_imports_what_it_asks_first() -> None:
    assert preload_plan(discover=True, source="mdns") == ([*DISCOVERY_MODULES, *BOOT], [])
    needed, idle = preload_plan(discover=True, source="dht")
    assert needed == ["phase_client.discovery.orchestrate", *DHT_MODULES, *BOOT] and idle == []
    # With --manifest there is no discovery at all.
    assert preload_plan(discover=False, source="auto") == (BOOT, [])


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
    assert wait_for_go(go, timeout=5, idle=["idle_probe_a"]) is True
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
    assert wait_for_go(go, timeout=5, idle=["idle_probe_b", "idle_probe_c"]) is True
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
        wait_for_go(go_later, timeout=0.2, poll=0.01, idle=["idle_probe_d", "idle_probe_e"])
    assert "idle_probe_e" not in sys.modules  # the warm-up stopped at the failure
    go.write_text("stop")
    assert wait_for_go(go, timeout=5) is False
