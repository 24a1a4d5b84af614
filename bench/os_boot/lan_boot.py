#!/usr/bin/env python3
"""The LAN boot under QEMU/TCG, power-on to ``kexec_core: Starting new kernel``, for two (or
more) source trees in the same run: each tree's own tests/test_boot_lan.py mDNS boot (namespace
LAN, busybox udhcpd, plasmd serve, a 15 MB image, no provider given) builds that tree's zipapp
and initramfs and boots them; the trees take turns, so the machine's load falls on all alike.
The milestones are stage 1's uptime stamps on the serial console (scripts/bench-boot.py).

Two cases (``--case``): ``new``, a machine the LAN's DHCP server has never seen (udhcpd checks
by ARP, ~2 s, that nobody holds the address it offers); ``known``, the machine booting again on
its LAN (the server has its address for it and offers it at once). A tree older than the
``known`` test boots only in the ``new`` case.

    sudo python3 bench/os_boot/lan_boot.py --tree /work/old --tree /work/new [--runs 2]
        [--case new|known|both] [--json]

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
TESTS = {
    "new": "tests/test_boot_lan.py::test_vm_finds_the_provider_by_mdns_and_boots",
    "known": "tests/test_boot_lan.py::test_vm_the_router_knows_boots_with_its_address",
}


def bench_boot_module() -> object:
    spec = importlib.util.spec_from_file_location("bench_boot", REPO / "scripts" / "bench-boot.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def boot_once(tree: Path, case: str, index: int) -> dict[str, float]:
    """One boot of ``tree``'s mDNS LAN test for ``case``; its timeline (empty if it failed)."""
    basetemp = tree / "build" / f"pt-lanbench-{case}-{index}"
    env = {**os.environ, "PYTHONPATH": str(tree)}
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    result = subprocess.run(
        [*pytest, TESTS[case], f"--basetemp={basetemp}"],
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
    parser.add_argument(
        "--case", choices=["new", "known", "both"], default="both", help="the DHCP server's case"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    trees = [Path(t).resolve() for t in args.tree]
    cases = ["new", "known"] if args.case == "both" else [args.case]
    runs: dict[str, list[dict[str, float]]] = {f"{t} {c}": [] for t in trees for c in cases}
    for index in range(args.runs):
        for case in cases:
            for tree in trees:
                runs[f"{tree} {case}"].append(boot_once(tree, case, index))
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
