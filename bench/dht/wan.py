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

How the two networks are built (``--build``, the same for both):

- ``prefill`` (default): no member joins. Every member's routing table is filled directly from
  the set of member ids with what a converged Kademlia network's table holds: one k-bucket per
  shared-prefix length, each holding the node's own nearest members that fall in it and other
  members of its range chosen at random, k in all (every member where the range has k or
  fewer), put in with kademlia's own ``KBucket`` and ``Node`` (tests/dht_simnet.py,
  ``fill_routing_tables``). 10 000 nodes are built in seconds instead of an hour of joins.
- ``full``: the same, with buckets split as far as kademlia 2.2.3's ``add_contact`` splits them
  once a node has heard of every member (its b = 5 rule: about 5 times the contacts of
  ``prefill``); a best case that joined networks do not reach.
- ``join``: every member joins through the first, for real (phase nodes with their bucket
  refresh, stock ones with the library's own-id lookup).

Why prefilled tables are a fair stand-in for joins: both networks get the same treatment (tables
of the same shape over the same number of random ids, the same k), and only the joins are
skipped. Everything measured is still real: the providers' records and the stock value are
published with real ``set`` calls (the publisher's lookup, then STOREs to the nodes it found
closest), the lookup clients join through a random member with real RPCs, and every lookup
message is a real UDP datagram delayed by ``--rtt-ms``, with real RPC timeouts on dead nodes.
What differs from a joined network: the tables are fuller (131 contacts per node at 1000 nodes,
against 114 for joined phase nodes and 41 for joined stock ones) and their replacement caches
are empty. docs/bench-dht.md compares both builds at 1000 nodes.

    python3 bench/dht/wan.py [--sizes 1000] [--lookups 20] [--rtt-ms 50] [--dead-third]
                             [--build prefill|full|join]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
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

from bench.dht.run import KEY, StockServer, grow_stock_network, machine, quantile
from phase_client.dht import records
from phase_client.keys import SigningKey
from tests.dht_simnet import BUILDS, Build, SimNetwork

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


def freeze_network() -> None:
    """Keep the garbage collector off the network just built (``main_async`` unfreezes).

    At 10 000 nodes the routing tables are millions of objects; a full collection rescanning
    them pauses this one process, and the pause would be added to the lookup being timed (a
    real network's nodes are separate processes).
    """
    gc.freeze()


async def phase_round(
    size: int, lookups: int, rtt: float, dead: bool, seed: int, build: Build
) -> dict[str, Any]:
    rng = random.Random(seed)
    async with SimNetwork(size, rpc_timeout=2.0, build=build, seed=seed) as net:
        now = int(time.time())
        for index, node in enumerate(rng.sample(net.nodes, 2)):
            url = f"http://10.0.0.{index + 1}:8080/stable/x86_64/manifest.json"
            record = records.make_record(SigningKey.generate(), KEY, url, f"p{index}", "1", now)
            await node.set(KEY, record)
        freeze_network()
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
        "phase_every_record_ms_p90": quantile(every_ms, 0.9),
        "phase_lookup_ms": statistics.median(whole_ms),
        "phase_messages": statistics.mean(messages),
        "phase_found": sum(1 for n in found if n == 2) / len(found),
        "phase_every_record_ms_each": [round(ms, 1) for ms in every_ms],
        "phase_messages_each": messages,
    }


async def stock_round(
    size: int, lookups: int, rtt: float, dead: bool, seed: int, build: Build
) -> dict[str, Any]:
    rng = random.Random(seed)
    nodes: list[StockServer] = []
    try:
        await grow_stock_network(nodes, size, rng, build)
        freeze_network()
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
            "stock_first_value_ms_p90": quantile(times, 0.9),
            "stock_messages": statistics.mean(messages),
            "stock_found": hits / lookups,
            "stock_first_value_ms_each": [round(ms, 1) for ms in times],
            "stock_messages_each": messages,
        }
    finally:
        for node in nodes:
            node.stop()


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| nodes | tables | dead | phase: every record (ms, median / p90) "
        "| phase: whole lookup (ms) | phase msgs | phase found "
        "| stock: first value (ms, median / p90) | stock msgs | stock found "
        "| time ratio | msgs ratio |\n|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = [
        f"| {r['nodes']} | {r['build']} | {'a third' if r['dead'] else 'none'} "
        f"| {r['phase_every_record_ms']:.0f} / {r['phase_every_record_ms_p90']:.0f} "
        f"| {r['phase_lookup_ms']:.0f} | {r['phase_messages']:.1f} | {r['phase_found']:.0%} "
        f"| {r['stock_first_value_ms']:.0f} / {r['stock_first_value_ms_p90']:.0f} "
        f"| {r['stock_messages']:.1f} | {r['stock_found']:.0%} "
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
            row: dict[str, Any] = {
                "nodes": size,
                "build": args.build,
                "dead": dead,
                "rtt_ms": args.rtt_ms,
            }
            rtt = args.rtt_ms / 1000
            row.update(await phase_round(size, args.lookups, rtt, dead, size, args.build))
            gc.unfreeze()  # the network is closed: its objects may go
            row.update(await stock_round(size, args.lookups, rtt, dead, size, args.build))
            gc.unfreeze()
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
    parser.add_argument(
        "--build",
        choices=BUILDS,
        default="prefill",
        help="fill routing tables directly (prefill, the default, or full) or join every node",
    )
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
