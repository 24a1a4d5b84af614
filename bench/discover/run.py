"""Time to first answer of ``phase-discover`` (auto mode) on a namespace LAN, via mDNS and via
the DHT only, each next to a real peer measured in the same run.

    sudo python3 bench/discover/run.py [--runs 10] [--json] [--markdown]

Two throw-away LANs of network namespaces (tests/netns.py), real ``plasmd serve`` providers:

- LAN: prov1 and prov2 (``stable/arm64``, mDNS and DHT, prov2 bootstrapped from prov1) and a
  client. Measured in the client, each run:
  ``auto-lan``: ``phase-discover --arch arm64 --bootstrap prov1:4001`` (auto, with the liveness
  probe), wall time from process start to exit with the URL printed;
  ``source-mdns``: the same with ``--source mdns`` (no DHT lookup started alongside);
  ``zeroconf-browse`` (reference): a minimal python-zeroconf ``ServiceBrowser`` that exits on
  the first ``Added`` (bench/mdns's reference program);
  ``dig`` (reference, not Python): one legacy-unicast query ``dig -p 5353 @prov1
  _phase-image._tcp.local PTR``.
- WAN: one provider started with ``--no-mdns`` (nothing on the LAN answers) plus a stock
  ``kademlia.network.Server`` node in the same namespace holding one value, and a client:
  ``auto-dht``: ``phase-discover --arch arm64 --bootstrap wan:4001 --timeout T`` (auto);
  ``source-dht``: the same with ``--source dht``;
  ``stock-kademlia-get`` (reference): a fresh stock kademlia client process that listens,
  bootstraps from the stock node (restarted before each run) and ``get``s the value.

Every command runs as a fresh process, so each time includes interpreter start-up and imports
(what a boot script waits for). Prints medians (min/max) and the machine's load average before
and after (compare ratios of one run only; re-run when the load is high); ``--json`` adds every
sample.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.netns import Lan, Node  # noqa: E402
from tests.provider_helpers import serve_in_node, write_random  # noqa: E402

DHT_PORT = 4001
STOCK_PORT = 4002
STOCK_KEY = "phase-bench"
RATIOS = [
    ("auto-lan", "zeroconf-browse"),
    ("source-dht", "stock-kademlia-get"),
    ("auto-dht", "stock-kademlia-get"),
]

STOCK_NODE = """
import asyncio, sys
from kademlia.network import Server
from kademlia.utils import digest
async def main():
    server = Server()
    await server.listen(int(sys.argv[1]))
    # Stored directly: stock set() refuses to store when the node knows no neighbour yet.
    server.storage[digest(sys.argv[2])] = sys.argv[3]
    print("ready", flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""
STOCK_GET = """
import asyncio, sys
from kademlia.network import Server
async def main():
    server = Server()
    await server.listen(0)
    await server.bootstrap([(sys.argv[1], int(sys.argv[2]))])
    value = await server.get(sys.argv[3])
    server.stop()
    return value
sys.exit(0 if asyncio.run(main()) else 3)
"""


def load_mdns_bench() -> ModuleType:
    """bench/mdns's script: its zeroconf reference program and its helpers, shared, not copied."""
    path = REPO / "bench" / "mdns" / "bench_discover.py"
    spec = importlib.util.spec_from_file_location("bench_mdns_discover", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MDNS_BENCH = load_mdns_bench()
timed = MDNS_BENCH.timed  # (node, argv) -> (ms, result); exits on a failed command
summary = MDNS_BENCH.summary  # samples -> median/min/max


def serve(node: Node, artifacts: Path, state: Path, *extra: str) -> subprocess.Popen[Any]:
    """``plasmd serve`` in ``node``, ready on the DHT (and mDNS): measure answers, not the
    providers' start-up."""
    return serve_in_node(node, artifacts, state, "stable/arm64", *extra, dht_port=DHT_PORT)


def found_ms(stderr: str, via: str) -> float:
    """The orchestrator's own ``found N provider(s) ... via SOURCE in N ms`` (no start-up)."""
    match = re.search(rf"found \d+ provider\(s\) of \S+ via {via} in (\d+) ms", stderr)
    if not match:
        raise SystemExit(f"no 'found ... via {via}' line in:\n{stderr}")
    return float(match.group(1))


def bench_lan(runs: int, artifacts: Path, tmp: Path) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {
        k: [] for k in ("auto-lan", "auto-lan-found", "source-mdns", "zeroconf-browse", "dig")
    }
    reference = str(MDNS_BENCH.REFERENCE)
    with Lan(prefix="bdl") as lan:
        prov1, prov2, client = (lan.add_node(n) for n in ("prov1", "prov2", "client"))
        serve(prov1, artifacts, tmp / "lan-state1")
        serve(prov2, artifacts, tmp / "lan-state2", "--bootstrap", f"{prov1.address}:{DHT_PORT}")
        discover = client.python(
            *("discover", "--arch", "arm64", "--bootstrap", f"{prov1.address}:{DHT_PORT}")
        )
        only_mdns = client.python("discover", "--arch", "arm64", "--source", "mdns")
        dig = ["dig", "+time=2", "+tries=1", "-p", "5353", f"@{prov1.address}"]
        dig += ["_phase-image._tcp.local", "PTR"]
        for _ in range(runs):
            elapsed, result = timed(client, discover)
            samples["auto-lan"].append(elapsed)
            samples["auto-lan-found"].append(found_ms(result.stderr, "mdns"))
            samples["source-mdns"].append(timed(client, only_mdns)[0])
            browse = [sys.executable, "-c", reference, client.address or ""]
            samples["zeroconf-browse"].append(timed(client, browse)[0])
            elapsed, result = timed(client, dig)
            if "phase-stable-arm64" not in result.stdout:
                raise SystemExit(f"dig got no answer:\n{result.stdout}")
            samples["dig"].append(elapsed)
    return samples


def start_stock_node(node: Node) -> subprocess.Popen[str]:
    """A stock kademlia node holding the value, started afresh for every measured get.

    Stock clients are full nodes: each one enters the node's routing table and stays there
    after it exits, so the next client's lookup waits 5 s (stock RPC timeout) per dead one
    (measured: 0.07, 5.1, 5.1, 5.1, 10.1, ... 15.1 s). A fresh node keeps the reference at
    its best case, a clean network.
    """
    stock = node.popen(
        [sys.executable, "-c", STOCK_NODE, str(STOCK_PORT), STOCK_KEY, "http://x/"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert stock.stdout is not None
    if stock.stdout.readline().strip() != "ready":
        raise SystemExit("the stock kademlia node did not start")
    return stock


def bench_wan(runs: int, timeout: float, artifacts: Path, tmp: Path) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {
        k: [] for k in ("auto-dht", "auto-dht-found", "source-dht", "stock-kademlia-get")
    }
    with Lan(prefix="bdw") as lan:
        wan, client = lan.add_node("wanprov"), lan.add_node("client")
        serve(wan, artifacts, tmp / "wan-state", "--no-mdns")
        bootstrap = ("--bootstrap", f"{wan.address}:{DHT_PORT}", "--timeout", f"{timeout:g}")
        auto = client.python("discover", "--arch", "arm64", *bootstrap)
        only_dht = client.python("discover", "--arch", "arm64", "--source", "dht", *bootstrap)
        get = [sys.executable, "-c", STOCK_GET, wan.address or "", str(STOCK_PORT), STOCK_KEY]
        for _ in range(runs):
            elapsed, result = timed(client, auto)
            samples["auto-dht"].append(elapsed)
            samples["auto-dht-found"].append(found_ms(result.stderr, "dht"))
            samples["source-dht"].append(timed(client, only_dht)[0])
            stock = start_stock_node(wan)  # fresh each run: see stock_node's docstring
            try:
                samples["stock-kademlia-get"].append(timed(client, get)[0])
            finally:
                stock.kill()
                stock.wait(timeout=30)
    return samples


def artifact_tree(root: Path) -> None:
    write_random(root / "stable/arm64/vmlinuz", 1 << 20, seed=3)
    (root / "stable/arm64/version").write_text("2025.11.26\n")


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(f"stopped by signal {signum}")  # unwinds through Lan.close()


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as /proc/loadavg gives them."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> int:
    signal.signal(signal.SIGTERM, on_sigterm)
    parser = argparse.ArgumentParser(
        description="Time to first answer of phase-discover (auto mode): on a namespace LAN "
        "(mDNS) and via the DHT only, next to zeroconf, dig and stock kademlia (needs root)."
    )
    parser.add_argument("--runs", type=int, default=10, help="runs per measure (default 10)")
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="phase-discover --timeout on the WAN side"
    )
    parser.add_argument("--json", action="store_true", help="JSON report with every sample")
    args = parser.parse_args()
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="bench-discover-") as name:
        tmp = Path(name)
        artifact_tree(tmp / "artifacts")
        samples = bench_lan(args.runs, tmp / "artifacts", tmp)
        samples.update(bench_wan(args.runs, args.timeout, tmp / "artifacts", tmp))
    report: dict[str, Any] = {k: summary(v) for k, v in samples.items()}
    for measure, reference in RATIOS:
        report[f"ratio_{measure}_vs_{reference}"] = round(
            report[measure]["median_ms"] / report[reference]["median_ms"], 2
        )
    report["load_before"] = load_before
    report["load_after"] = load_average()
    report["runs"] = args.runs
    report["wan_timeout_s"] = args.timeout
    if args.json:
        report["samples_ms"] = {k: [round(x, 1) for x in v] for k, v in samples.items()}
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return 0
    for name in samples:
        s = report[name]
        sys.stdout.write(
            f"{name:20} median {s['median_ms']:8.1f} ms  "
            f"(min {s['min_ms']:.1f}, max {s['max_ms']:.1f}, n={args.runs})\n"
        )
    for key in [k for k in report if k.startswith("ratio_")]:
        sys.stdout.write(f"{key}: {report[key]}\n")
    sys.stdout.write(f"load average: {load_before} before, {report['load_after']} after\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
