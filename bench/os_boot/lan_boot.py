#!/usr/bin/env python3
"""The LAN boot under QEMU/TCG, power-on to ``kexec_core: Starting new kernel``, for two (or
more) source trees in the same run: each tree's own tests/test_boot_lan.py mDNS boot (namespace
LAN, busybox udhcpd, plasmd serve, a 15 MB image, no provider given) builds that tree's zipapp
and initramfs and boots them; the trees take turns, so the machine's load falls on all alike.
The milestones are stage 1's uptime stamps on the serial console (scripts/bench-boot.py).

    sudo python3 bench/os_boot/lan_boot.py --tree /work/old --tree /work/new [--runs 2] [--json]

Each tree needs its build/boot/kernel (a link to a built one will do). Needs root (namespaces).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
TEST = "tests/test_boot_lan.py::test_vm_finds_the_provider_by_mdns_and_boots"


def bench_boot_module() -> object:
    spec = importlib.util.spec_from_file_location("bench_boot", REPO / "scripts" / "bench-boot.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def boot_once(tree: Path, index: int) -> dict[str, float]:
    """One boot of ``tree``'s mDNS LAN test; its timeline (empty if the test failed)."""
    basetemp = tree / "build" / f"pt-lanbench-{index}"
    env = {**os.environ, "PYTHONPATH": str(tree)}
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    result = subprocess.run(
        [*pytest, TEST, f"--basetemp={basetemp}"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if result.returncode != 0:
        sys.stderr.write(f"lan_boot: {tree}: test failed:\n{result.stdout[-2000:]}\n")
        return {}
    logs = sorted(basetemp.rglob("serial*.log"), key=lambda p: p.stat().st_mtime)
    if not logs:
        return {}
    timeline = bench_boot_module().timeline  # type: ignore[attr-defined]
    return dict(timeline(logs[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(prog="lan_boot.py", description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", required=True, help="a source tree")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    trees = [Path(t).resolve() for t in args.tree]
    runs: dict[str, list[dict[str, float]]] = {str(t): [] for t in trees}
    for index in range(args.runs):
        for tree in trees:
            runs[str(tree)].append(boot_once(tree, index))
    summary: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load": os.getloadavg(),
        "nproc": os.cpu_count(),
        "runs": runs,
    }
    medians: dict[str, dict[str, float]] = {}
    for tree, timelines in runs.items():
        marks = {name for t in timelines for name in t}
        medians[tree] = {
            name: round(statistics.median(t[name] for t in timelines if name in t), 2)
            for name in sorted(marks)
        }
    summary["medians"] = medians
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for tree, values in medians.items():
            print(tree)
            for name, value in sorted(values.items(), key=lambda item: item[1]):
                print(f"  {value:7.2f}  {name}")
        print(f"load {summary['load']}, {summary['date']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
