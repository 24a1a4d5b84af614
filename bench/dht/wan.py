#!/usr/bin/env python3
"""DHT lookups at WAN latency: phase's one-pass lookup vs a stock kademlia get, same run.

On the internet every message costs a round trip, so what a lookup costs is its rounds and its
messages, not the CPU of a loopback network. This bench builds a network of N real nodes on
127.0.0.1 (tests/dht_simnet.py; one process), publishes two providers' records, then makes every
message a fresh lookup client sends arrive ``--rtt-ms`` later (default 50 ms: each RPC then
costs one 50 ms round trip; the network's own joins and stores run undelayed). Measured per
lookup, from fresh clients joining through a random member:

- phase: time until *every* provider's record has arrived (what a client that ranks providers
  needs), the whole lookup's time, and its messages (get_providers, find_records, find_node);
- stock kademlia 2.2.3 (the reference): ``get``'s time to its first value and its messages.

``--dead-third`` kills a third of the nodes (never the two providers' records' only holders:
records are replicated on the k closest) after publishing, in both networks. Phase clients use a
0.5 s RPC timeout (what phase-discover picks for its budget), stock ones the library's 5 s.

    python3 bench/dht/wan.py [--sizes 1000] [--lookups 20] [--rtt-ms 50] [--dead-third]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.dht.run import KEY, StockServer, grow_stock_network, machine
from phase_client.dht import records
from phase_client.keys import SigningKey
from tests.dht_simnet import SimNetwork

POLL = 0.001


class DelayedTransport:
    """A datagram transport whose ``sendto`` delivers ``delay`` seconds later."""

    def __init__(self, inner: Any, delay: float) -> None:
        self._inner = inner
        self._delay = delay

    def sendto(self, data: bytes, address: Any = None) -> None:
        asyncio.get_running_loop().call_later(self._delay, self._send, data, address)

    def _send(self, data: bytes, address: Any) -> None:
        if not self._inner.is_closing():
            self._inner.sendto(data, address)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def slow_down(node: Any, delay: float) -> None:
    node.protocol.transport = DelayedTransport(node.protocol.transport, delay)


async def phase_round(size: int, lookups: int, rtt: float, dead: bool, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    async with SimNetwork(size, rpc_timeout=2.0) as net:
        now = int(time.time())
        for index, node in enumerate(rng.sample(net.nodes, 2)):
            url = f"http://10.0.0.{index + 1}:8080/stable/x86_64/manifest.json"
            record = records.make_record(SigningKey.generate(), KEY, url, f"p{index}", "1", now)
            await node.set(KEY, record)
        if dead:
            for index in rng.sample(range(1, size), size // 3):
                net.kill(index)
        every_ms, whole_ms, messages, found = [], [], [], []
        for _ in range(lookups):
            client = await net.join([rng.choice(net.alive()).address], client=True, rpc_timeout=0.5)
            slow_down(client, rtt)
            before = Counter(client.protocol.sent)
            started = time.perf_counter()
            lookup = asyncio.ensure_future(client.get(KEY, timeout=60))
            await asyncio.sleep(0)
            crawl = client.last_crawl
            every = None
            while not lookup.done():
                if every is None and len(crawl.found) >= 2:
                    every = (time.perf_counter() - started) * 1000
                await asyncio.sleep(POLL)
            result = lookup.result()
            whole = (time.perf_counter() - started) * 1000
            every_ms.append(every if every is not None else whole)
            whole_ms.append(whole)
            sent = client.protocol.sent - before
            messages.append(sum(sent.values()))
            found.append(len(result))
            client.stop()
    return {
        "phase_every_record_ms": statistics.median(every_ms),
        "phase_lookup_ms": statistics.median(whole_ms),
        "phase_messages": statistics.mean(messages),
        "phase_found": sum(1 for n in found if n == 2) / len(found),
    }


async def stock_round(size: int, lookups: int, rtt: float, dead: bool, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    nodes: list[StockServer] = []
    try:
        await grow_stock_network(nodes, size, rng)
        alive = list(nodes)
        if dead:
            gone = set(rng.sample(range(1, size), size // 3))
            for index in gone:
                nodes[index].stop()
            alive = [n for i, n in enumerate(nodes) if i not in gone]
        times, messages, hits = [], [], 0
        for _ in range(lookups):
            client = StockServer()
            await client.listen(0, "127.0.0.1")
            nodes.append(client)
            port = rng.choice(alive).transport.get_extra_info("sockname")[1]
            await client.bootstrap([("127.0.0.1", port)])
            client.storage.data.clear()  # neighbours hand new nodes the value: ask the network
            slow_down(client, rtt)
            before = Counter(client.protocol.sent)
            started = time.perf_counter()
            value = await client.get(KEY)
            times.append((time.perf_counter() - started) * 1000)
            messages.append(sum((client.protocol.sent - before).values()))
            hits += value is not None
            client.stop()
        return {
            "stock_first_value_ms": statistics.median(times),
            "stock_messages": statistics.mean(messages),
            "stock_found": hits / lookups,
        }
    finally:
        for node in nodes:
            node.stop()


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| nodes | dead | phase: every record (ms) | phase: whole lookup (ms) | phase msgs "
        "| phase found | stock: first value (ms) | stock msgs | stock found "
        "| time ratio | msgs ratio |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = [
        f"| {r['nodes']} | {'a third' if r['dead'] else 'none'} "
        f"| {r['phase_every_record_ms']:.0f} | {r['phase_lookup_ms']:.0f} "
        f"| {r['phase_messages']:.1f} | {r['phase_found']:.0%} "
        f"| {r['stock_first_value_ms']:.0f} | {r['stock_messages']:.1f} | {r['stock_found']:.0%} "
        f"| {r['phase_every_record_ms'] / r['stock_first_value_ms']:.2f} "
        f"| {r['phase_messages'] / r['stock_messages']:.2f} |"
        for r in rows
    ]
    return head + "\n".join(lines) + "\n"


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for size in args.sizes:
        for dead in (False, True) if args.dead_third else (False,):
            started = time.monotonic()
            row: dict[str, Any] = {"nodes": size, "dead": dead, "rtt_ms": args.rtt_ms}
            rtt = args.rtt_ms / 1000
            row.update(await phase_round(size, args.lookups, rtt, dead, size))
            row.update(await stock_round(size, args.lookups, rtt, dead, size))
            row["seconds"] = round(time.monotonic() - started, 1)
            print(f"# {size} nodes, dead={dead}: {row['seconds']} s", file=sys.stderr, flush=True)
            rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000])
    parser.add_argument("--lookups", type=int, default=20, help="lookups per size (default 20)")
    parser.add_argument("--rtt-ms", type=float, default=50.0, help="round trip per RPC (50)")
    parser.add_argument("--dead-third", action="store_true", help="also with a third dead")
    parser.add_argument("--out", default="build/bench-dht-wan.json", help="JSON results file")
    args = parser.parse_args()
    if any(size < 6 for size in args.sizes) or args.lookups < 1 or args.rtt_ms < 0:
        parser.error("sizes must be >= 6, --lookups >= 1, --rtt-ms >= 0")
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("rpcudp").setLevel(logging.CRITICAL)
    logging.getLogger("kademlia").setLevel(logging.CRITICAL)
    rows = asyncio.run(main_async(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2) + "\n")
    print(json.dumps(machine()))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
