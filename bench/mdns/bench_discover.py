"""Time from starting ``phase-discover --source mdns`` to its answer, across network namespaces.

    sudo python3 bench/mdns/bench_discover.py [--runs 10] [--providers 2] [--json]

Builds a throw-away LAN (tests/netns.py): N providers (the real MdnsAdvertiser), one client.
For each run, in the client namespace, it measures:

- ``phase-discover``: wall time of ``python3 -m phase_client discover --source mdns --no-probe``
  from process start to exit with the answer (what a boot script waits for);
- ``found``: the same run's own log line ``mDNS: found ... after N ms`` (browse start -> first
  match, without interpreter start-up and imports);
- ``zeroconf-browse`` (the reference, measured in the same run): a minimal python-zeroconf
  program that starts a ServiceBrowser and exits on the first ``Added`` event, with no
  resolution and no TXT checks -- the floor for any Python mDNS client on this machine;
- ``python-import``: ``python3 -c "import zeroconf"`` alone (interpreter + import floor).

Prints medians (and min/max); ``--json`` prints every sample too.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.netns import Lan, Node, describe  # noqa: E402

PROVIDER = str(REPO / "tests" / "mdns_provider_proc.py")
REFERENCE = """
import sys, threading
from zeroconf import IPVersion, ServiceBrowser, ServiceStateChange, Zeroconf
done = threading.Event()
def on_change(zeroconf, service_type, name, state_change):
    if state_change is ServiceStateChange.Added:
        done.set()
zc = Zeroconf(interfaces=[sys.argv[1]], ip_version=IPVersion.V4Only)
browser = ServiceBrowser(zc, "_phase-image._tcp.local.", handlers=[on_change])
ok = done.wait(10)
browser.cancel()
zc.close()
sys.exit(0 if ok else 3)
"""


def timed(node: Node, argv: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    result = node.run(argv, timeout=120)
    elapsed = (time.perf_counter() - started) * 1000
    if result.returncode != 0:
        raise SystemExit(f"benchmark command failed:\n{describe(result)}")
    return elapsed, result


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(samples), 1),
        "min_ms": round(min(samples), 1),
        "max_ms": round(max(samples), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--providers", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    samples: dict[str, list[float]] = {
        "phase-discover": [],
        "found": [],
        "zeroconf-browse": [],
        "python-import": [],
    }
    offers = json.dumps({"op": "start", "offers": [{"channel": "stable", "arch": "arm64"}]})
    with Lan(prefix="phb") as lan:
        providers = [lan.add_node(f"prov{i + 1}") for i in range(args.providers)]
        client = lan.add_node("client")
        procs = []
        for node in providers:
            proc = node.popen(
                [sys.executable, PROVIDER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(offers + "\n")
            proc.stdin.flush()
            procs.append(proc)
        for proc in procs:
            assert proc.stdout is not None
            reply = json.loads(proc.stdout.readline())
            assert reply["ok"], reply
        discover = client.python(
            "discover", "--source", "mdns", "--no-probe", "--arch", "arm64", "--timeout", "10"
        )
        for _ in range(args.runs):
            elapsed, result = timed(client, discover)
            samples["phase-discover"].append(elapsed)
            match = re.search(r"mDNS: found .* after (\d+) ms", result.stderr)
            assert match, result.stderr
            samples["found"].append(float(match.group(1)))
            samples["zeroconf-browse"].append(
                timed(client, [sys.executable, "-c", REFERENCE, client.address or ""])[0]
            )
            samples["python-import"].append(
                timed(client, [sys.executable, "-c", "import zeroconf"])[0]
            )
    report: dict[str, Any] = {name: summary(values) for name, values in samples.items()}
    report["ratio_phase_discover_vs_zeroconf_browse"] = round(
        report["phase-discover"]["median_ms"] / report["zeroconf-browse"]["median_ms"], 2
    )
    report["runs"] = args.runs
    report["providers"] = args.providers
    if args.json:
        report["samples_ms"] = {k: [round(v, 1) for v in vs] for k, vs in samples.items()}
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        for name in samples:
            s = report[name]
            sys.stdout.write(
                f"{name:16} median {s['median_ms']:7.1f} ms  "
                f"(min {s['min_ms']:.1f}, max {s['max_ms']:.1f}, n={args.runs})\n"
            )
        ratio = report["ratio_phase_discover_vs_zeroconf_browse"]
        sys.stdout.write(f"phase-discover / zeroconf-browse: {ratio}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
