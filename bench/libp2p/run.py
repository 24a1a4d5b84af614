#!/usr/bin/env python3
"""libp2p Kademlia: our lookup (phase_client/libp2p) vs js-libp2p's own, in the same run.

A network of N js-libp2p nodes (tests/libp2p_js/testnet.mjs: kad-dht 15 in server mode, TCP on
127.0.0.1). For each round a js provider (announcing an HTTP multiaddr) provides a fresh key;
then the key is looked up, until the first provider, by
  ours:    ``client.find_providers``, cold as a booting machine is (a throw-away identity, no
           listening socket, one bootstrap node known);
  js cold: a js node in DHT client mode spawned for the round, joined through the same node
           (its first query waits for kad-dht's initial self-query: part of a cold start);
  js warm: a js client-mode node spawned once at the start (its routing table filled).
And the publish side: our ``client.provide`` (FIND_NODE walk + ADD_PROVIDER to the K closest),
cold, vs js ``provide`` from the warm js client node. Per operation: wall time and Kademlia
requests sent. The ratio ours/js is what to watch (absolute times depend on the machine).

  bench/libp2p/run.py [--nodes 40] [--rounds 10] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from phase_client.keys import SigningKey
from phase_client.libp2p import client, keyscheme
from phase_client.libp2p.multiaddr import Multiaddr
from tests.libp2p_js.jsnet import JsNet


def machine() -> dict[str, Any]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": model,
        "cores": os.cpu_count(),
        "load_before": os.getloadavg(),
        "python": platform.python_version(),
    }


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median": statistics.median(ordered),
        "p90": ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))],
        "mean": statistics.fmean(ordered),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=40, help="js nodes (default 40)")
    parser.add_argument("--rounds", type=int, default=10, help="keys looked up (default 10)")
    parser.add_argument("--json", metavar="FILE", help="write the results here")
    args = parser.parse_args()
    info = machine()
    rows: dict[str, dict[str, list[float]]] = {
        op: {"ms": [], "messages": [], "found": []}
        for op in ("find ours", "find js cold", "find js warm", "provide ours", "provide js warm")
    }
    with JsNet(args.nodes, timeout=300) as net:
        boot_text = net.bootstrap(0)
        boot = [Multiaddr.from_text(boot_text)]
        provider = net.request("spawn", announce=["/ip4/127.0.0.1/tcp/8080/http"])
        warm = net.request("spawn", client=True, announce=["/ip4/127.0.0.1/tcp/8082/http"])
        net.request("find", node=warm["node"], key="/warm-up", timeout_ms=5000)
        for i in range(args.rounds):
            key = f"/phase/bench{i}/x86_64/manifest"
            net.request("provide", node=provider["node"], key=key, timeout=120)
            # ours, cold: one bootstrap node
            found = asyncio.run(
                client.find_providers(boot, f"bench{i}", "x86_64", timeout=10, want_all=False)
            )
            rows["find ours"]["ms"].append(found.elapsed * 1000)
            rows["find ours"]["messages"].append(found.stats.messages)
            rows["find ours"]["found"].append(len(found.providers))
            # js, cold: a fresh client-mode node that joined through node 0
            finder = net.request("spawn", client=True)
            js = net.request("find", node=finder["node"], key=key, timeout_ms=10000, want=1)
            rows["find js cold"]["ms"].append(js["ms"])
            rows["find js cold"]["messages"].append(js["messages"])
            rows["find js cold"]["found"].append(len(js["providers"]))
            net.request("stop", node=finder["node"])
            js = net.request("find", node=warm["node"], key=key, timeout_ms=10000, want=1)
            rows["find js warm"]["ms"].append(js["ms"])
            rows["find js warm"]["messages"].append(js["messages"])
            rows["find js warm"]["found"].append(len(js["providers"]))
            # publishing a second key, both ways
            pub_key = f"/phase/pub{i}/x86_64/manifest"
            started = time.monotonic()
            result = asyncio.run(
                client.provide(
                    SigningKey.generate(),
                    boot,
                    [keyscheme.provider_key(f"pub{i}", "x86_64")],
                    [Multiaddr.from_text("/ip4/127.0.0.1/tcp/8081/http")],
                )
            )
            rows["provide ours"]["ms"].append((time.monotonic() - started) * 1000)
            rows["provide ours"]["messages"].append(result.stats.messages)
            rows["provide ours"]["found"].append(sum(result.accepted.values()))
            js = net.request("provide", node=warm["node"], key=pub_key, timeout=120)
            rows["provide js warm"]["ms"].append(js["ms"])
            rows["provide js warm"]["messages"].append(js["messages"])
            rows["provide js warm"]["found"].append(0)
    info["load_after"] = os.getloadavg()
    results = {
        op: {
            "ms": summary(v["ms"]),
            "messages": summary(v["messages"]),
            "found": v["found"],
        }
        for op, v in rows.items()
    }
    out = {"machine": info, "nodes": args.nodes, "rounds": args.rounds, "results": results}
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(out, indent=2) + "\n")
        os.replace(tmp, path)
    print(
        f"{args.nodes} js-libp2p nodes, {args.rounds} rounds; {info['date']}; {info['cpu']} "
        f"({info['cores']} cores); load {info['load_before'][0]:.2f} -> "
        f"{info['load_after'][0]:.2f}\n"
    )
    print("| operation | median ms | p90 ms | median requests | found |")
    print("|---|---|---|---|---|")
    for op, r in results.items():
        found = r["found"]
        shown = f"{sum(1 for f in found if f)}/{len(found)}" if "find" in op else "-"
        if op == "provide ours":
            shown = f"{statistics.median(found):.0f} peers took it (median)"
        print(
            f"| {op} | {r['ms']['median']:.0f} | {r['ms']['p90']:.0f} | "
            f"{r['messages']['median']:.0f} | {shown} |"
        )
    print()
    for mine, theirs in (
        ("find ours", "find js cold"),
        ("find ours", "find js warm"),
        ("provide ours", "provide js warm"),
    ):
        ours, js = results[mine], results[theirs]
        print(
            f"{mine} / {theirs}: latency {ours['ms']['median'] / js['ms']['median']:.2f}, "
            f"requests {ours['messages']['median'] / max(1, js['messages']['median']):.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
