"""The cyclic garbage collector is off while a tool is imported, and while phase-boot imports
what the boot needs, and is put back as it was afterwards, whatever happens (cli.run_tool)."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from phase_client import cli
from phase_client.boot import orchestrate
from phase_client.cli import boot


@pytest.fixture(autouse=True)
def collector_restored() -> Iterator[None]:
    was = gc.isenabled()
    yield
    if was:
        gc.enable()


def test_a_tool_is_imported_with_the_collector_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "gc_probe_tool.py").write_text(
        "import gc\n"
        "AT_IMPORT = gc.isenabled()\n"
        "SEEN = []\n"
        "def main(argv):\n"
        "    SEEN.append(gc.isenabled())\n"
        "    return 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.TOOLS, "gc-probe", "gc_probe_tool")
    monkeypatch.setitem(sys.modules, "gc_probe_tool", None)  # restored (absent) afterwards
    del sys.modules["gc_probe_tool"]
    gc.enable()
    assert cli.run_tool("gc-probe", []) == 3
    module = sys.modules["gc_probe_tool"]
    assert module.AT_IMPORT is False
    assert module.SEEN == [True]  # on again for the tool's own work
    assert gc.isenabled()
    gc.disable()  # a caller that had it off keeps it off
    assert cli.run_tool("gc-probe", []) == 3
    assert module.SEEN == [True, False]
    assert not gc.isenabled()


def test_phase_boot_imports_with_the_collector_off_and_puts_it_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []

    def preload(modules: Sequence[str]) -> None:
        seen.append(gc.isenabled())

    monkeypatch.setattr(orchestrate, "preload", preload)
    ready = tmp_path / "ready"
    ready.write_text("stop\n")
    common = ["--keys-dir", str(tmp_path), "--stage-only", "--start-when", str(ready)]
    gc.enable()
    assert boot.main(common) == 0  # 'stop': nothing to boot, after discovery's imports
    assert seen == [False]
    assert gc.isenabled()
    # A failure after the collector went off puts it back too.
    assert boot.main(["--keys-dir", str(tmp_path), "--link-first"]) == 2
    assert gc.isenabled()
