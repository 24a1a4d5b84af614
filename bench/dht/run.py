#!/usr/bin/env python3
"""DHT lookup cost vs network size: phase provider records vs stock kademlia, same run.

For each size N it builds a network of N real nodes on 127.0.0.1 (one process, one asyncio loop),
publishes provider records from two providers, then runs lookups from fresh lookup-only clients
that join through a random member, and measures per lookup: wall time (all records, and first
record only) and RPCs sent (get_providers for the walk, which brings records with the closer
nodes, and find_records for the pages that did not fit). As the reference,
a stock ``kademlia.network.Server`` network of the same size stores one value and answers
``get`` from fresh clients; the ratio phase/stock is what to watch (absolute times depend on the
machine). Results: a Markdown table on stdout and JSON in --out.

``--build prefill`` (or ``full``) builds both networks without joins, every routing table filled
directly as in a converged network (tests/dht_simnet.py, ``fill_routing_tables``); the default
``join`` joins every node through the first, as the tables in docs/bench-dht.md were measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import random
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kademlia.network import Server
from kademlia.protocol import KademliaProtocol

from phase_client.dht import records
from phase_client.keys import SigningKey
from tests.dht_simnet import BUILDS, JOIN_BATCH, Build, SimNetwork, fill_routing_tables

KEY = "/phase/stable/x86_64/manifest"


class CountingProtocol(KademliaProtocol):
    """Stock protocol that counts the RPCs it sends (for the reference measurement)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.sent: Counter[str] = Counter()

    async def call_find_node(self, node_to_ask: Any, node_to_find: Any) -> Any:
        self.sent["find_node"] += 1
        return await super().call_find_node(node_to_ask, node_to_find)

    async def call_find_value(self, node_to_ask: Any, node_to_find: Any) -> Any:
        self.sent["find_value"] += 1
        return await super().call_find_value(node_to_ask, node_to_find)

    async def call_store(self, node_to_ask: Any, key: bytes, value: Any) -> Any:
        self.sent["store"] += 1
        return await super().call_store(node_to_ask, key, value)


class StockServer(Server):
    protocol_class = CountingProtocol


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def phase_round(
    size: int, lookups: int, rng: random.Random, build: Build = "join"
) -> dict[str, Any]:
    async with SimNetwork(size, rpc_timeout=2.0, build=build, seed=size) as net:
        providers = rng.sample(net.nodes, 2)
        now = int(time.time())
        for index, node in enumerate(providers):
            url = f"http://10.0.0.{index + 1}:8080/stable/x86_64/manifest.json"
            record = records.make_record(SigningKey.generate(), KEY, url, f"p{index}", "1", now)
            await node.set(KEY, record)
        all_ms, first_ms, walk, fetch, found = [], [], [], [], []
        for _ in range(lookups):
            via = rng.choice(net.nodes).address
            for first_only, times in ((False, all_ms), (True, first_ms)):
                client = await net.join([via], client=True)
                before = Counter(client.protocol.sent)
                started = time.perf_counter()
                result = await client.get(KEY, timeout=30, first_only=first_only)
                times.append((time.perf_counter() - started) * 1000)
                if not first_only:
                    sent = client.protocol.sent - before
                    walk.append(sent["find_node"] + sent["get_providers"])
                    fetch.append(sent["find_records"])
                    found.append(len(result))
                client.stop()
        return {
            "lookup_all_ms_median": statistics.median(all_ms),
            "lookup_all_ms_p90": quantile(all_ms, 0.9),
            "lookup_first_ms_median": statistics.median(first_ms),
            "find_node_per_lookup": statistics.mean(walk),
            "find_records_per_lookup": statistics.mean(fetch),
            "messages_per_lookup": statistics.mean(w + f for w, f in zip(walk, fetch, strict=True)),
            "complete": sum(1 for n in found if n == 2) / len(found),
        }


async def grow_stock_network(
    nodes: list[StockServer], size: int, rng: random.Random, build: Build = "join"
) -> None:
    """``size`` stock nodes into ``nodes`` (the caller stops them), built as ``build`` says
    (joined through the first in batches, or tables filled directly as ``SimNetwork`` does), one
    of them storing the value under KEY with a real ``set``."""
    for _ in range(size):
        node = StockServer()
        await node.listen(0, "127.0.0.1")
        nodes.append(node)
    if build == "join":
        boot = [("127.0.0.1", nodes[0].transport.get_extra_info("sockname")[1])]
        for start in range(1, size, JOIN_BATCH):
            await asyncio.gather(*(n.bootstrap(boot) for n in nodes[start : start + JOIN_BATCH]))
    else:
        fill_routing_tables(nodes, random.Random(size + 1), build == "full")
    await rng.choice(nodes).set(KEY, "http://10.0.0.1:8080/stable/x86_64/manifest.json")


async def stock_round(
    size: int, lookups: int, rng: random.Random, build: Build = "join"
) -> dict[str, Any]:
    nodes: list[StockServer] = []
    try:
        await grow_stock_network(nodes, size, rng, build)
        times, messages, hits = [], [], 0
        for _ in range(lookups):
            client = StockServer()
            await client.listen(0, "127.0.0.1")
            nodes.append(client)
            peer = rng.choice(nodes[:size])
            await client.bootstrap([("127.0.0.1", peer.transport.get_extra_info("sockname")[1])])
            client.storage.data.clear()  # neighbours hand new nodes the value: ask the network
            before = Counter(client.protocol.sent)
            started = time.perf_counter()
            value = await client.get(KEY)
            times.append((time.perf_counter() - started) * 1000)
            sent = client.protocol.sent - before
            messages.append(sum(sent.values()))
            hits += value is not None
        return {
            "stock_get_ms_median": statistics.median(times),
            "stock_messages_per_get": statistics.mean(messages),
            "stock_found": hits / lookups,
        }
    finally:
        for node in nodes:
            node.stop()


async def timed(lookup: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await lookup
    return (time.perf_counter() - started) * 1000, result


async def churn_round(
    size: int, lookups: int, rng: random.Random, build: Build = "join"
) -> dict[str, Any]:
    """A third of the nodes killed after publishing; fresh clients look up concurrently.

    Phase clients use a 0.5 s RPC timeout (what phase-discover picks for a 2 s budget); stock
    clients keep the library's 5 s.
    """
    row: dict[str, Any] = {"nodes": size, "lookups": lookups, "build": build}
    async with SimNetwork(size, rpc_timeout=2.0, build=build, seed=size) as net:
        now = int(time.time())
        for index, node in enumerate(rng.sample(net.nodes, 2)):
            url = f"http://10.0.0.{index + 1}:8080/stable/x86_64/manifest.json"
            record = records.make_record(SigningKey.generate(), KEY, url, f"p{index}", "1", now)
            await node.set(KEY, record)
        for index in rng.sample(range(size), size // 3):
            net.kill(index)
        vias = [rng.choice(net.alive()).address for _ in range(lookups)]
        clients = await asyncio.gather(
            *(net.join([via], client=True, rpc_timeout=0.5) for via in vias)
        )
        results = await asyncio.gather(*(timed(c.get(KEY, timeout=30)) for c in clients))
        row["phase_ms_median"] = statistics.median(ms for ms, _ in results)
        row["phase_ms_max"] = max(ms for ms, _ in results)
        row["phase_both_found"] = sum(1 for _, found in results if len(found) == 2) / lookups
    nodes: list[StockServer] = []
    try:
        await grow_stock_network(nodes, size, rng, build)
        dead = set(rng.sample(range(size), size // 3))
        for index in dead:
            nodes[index].stop()
        alive = [n for i, n in enumerate(nodes) if i not in dead]
        stock_clients = []
        for _ in range(lookups):
            client = StockServer()
            await client.listen(0, "127.0.0.1")
            nodes.append(client)
            stock_clients.append(client)
        ports = [rng.choice(alive).transport.get_extra_info("sockname")[1] for _ in stock_clients]
        await asyncio.gather(
            *(c.bootstrap([("127.0.0.1", p)]) for c, p in zip(stock_clients, ports, strict=True))
        )
        for client in stock_clients:
            client.storage.data.clear()
        results = await asyncio.gather(*(timed(c.get(KEY)) for c in stock_clients))
        row["stock_ms_median"] = statistics.median(ms for ms, _ in results)
        row["stock_ms_max"] = max(ms for ms, _ in results)
        row["stock_found"] = sum(1 for _, value in results if value is not None) / lookups
    finally:
        for node in nodes:
            node.stop()
    return row


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def table(results: list[dict[str, Any]]) -> str:
    head = (
        "| nodes | lookup all (ms, median / p90) | first record (ms) | walk msgs | find_records "
        "| msgs/lookup | both found | stock get (ms) | stock msgs | stock found "
        "| time ratio phase/stock |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = [
        f"| {r['nodes']} | {r['lookup_all_ms_median']:.1f} / {r['lookup_all_ms_p90']:.1f} "
        f"| {r['lookup_first_ms_median']:.1f} | {r['find_node_per_lookup']:.1f} "
        f"| {r['find_records_per_lookup']:.1f} | {r['messages_per_lookup']:.1f} "
        f"| {r['complete']:.0%} | {r['stock_get_ms_median']:.1f} "
        f"| {r['stock_messages_per_get']:.1f} | {r['stock_found']:.0%} "
        f"| {r['lookup_all_ms_median'] / r['stock_get_ms_median']:.2f} |"
        for r in results
    ]
    return head + "\n".join(rows) + "\n"


def churn_table(row: dict[str, Any]) -> str:
    return (
        f"\nA third of {row['nodes']} nodes dead, {row['lookups']} concurrent lookups from fresh "
        "clients:\n\n"
        "| | median (ms) | max (ms) | found |\n|---|---:|---:|---:|\n"
        f"| phase (RPC timeout 0.5 s, all records) | {row['phase_ms_median']:.0f} "
        f"| {row['phase_ms_max']:.0f} | {row['phase_both_found']:.0%} |\n"
        f"| stock kademlia (5 s) | {row['stock_ms_median']:.0f} | {row['stock_ms_max']:.0f} "
        f"| {row['stock_found']:.0%} |\n"
        f"| ratio phase/stock | {row['phase_ms_median'] / row['stock_ms_median']:.2f} "
        f"| {row['phase_ms_max'] / row['stock_ms_max']:.2f} | |\n"
    )


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for size in args.sizes:
        rng = random.Random(size)
        started = time.monotonic()
        row: dict[str, Any] = {"nodes": size, "build": args.build}
        row.update(await phase_round(size, args.lookups, rng, args.build))
        row.update(await stock_round(size, args.lookups, rng, args.build))
        row["seconds"] = round(time.monotonic() - started, 1)
        print(f"# {size} nodes done in {row['seconds']} s", file=sys.stderr, flush=True)
        results.append(row)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[10, 50, 200, 500])
    parser.add_argument("--lookups", type=int, default=30, help="lookups per size (default 30)")
    parser.add_argument("--out", default="build/bench-dht.json", help="JSON results file")
    parser.add_argument(
        "--churn-size", type=int, default=200, help="nodes in the churn run (0: skip it)"
    )
    parser.add_argument("--churn-lookups", type=int, default=10)
    parser.add_argument(
        "--build",
        choices=BUILDS,
        default="join",
        help="join every node (default), or fill routing tables directly: prefill, full",
    )
    args = parser.parse_args()
    if any(size < 3 for size in args.sizes) or args.lookups < 1 or args.churn_lookups < 1:
        parser.error("sizes must be >= 3, --lookups and --churn-lookups >= 1")
    if args.churn_size and args.churn_size < 6:
        parser.error("--churn-size must be 0 or >= 6")
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("rpcudp").setLevel(logging.CRITICAL)  # timeouts are expected in churn
    results = asyncio.run(main_async(args)) if args.sizes else []
    churn = (
        asyncio.run(churn_round(args.churn_size, args.churn_lookups, random.Random(0), args.build))
        if args.churn_size
        else None
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {"machine": machine(), "results": results, "churn": churn}
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(machine()))
    if results:
        print(table(results))
    if churn:
        print(churn_table(churn))
    return 0


if __name__ == "__main__":
    sys.exit(main())
