"""``plasmd dht-node``: a bare DHT node (e.g. a public bootstrap node). Stores provider records.

It validates and stores the provider records others publish, answers lookups, and runs until
SIGINT/SIGTERM. With ``--state FILE`` its node id and neighbours are saved (every minute and at
exit) and reloaded at start, so a restarted node keeps its place in the network.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from ..errors import UsageError
from ._common import add_bootstrap_argument, count, exit_codes_help, seconds, success

log = logging.getLogger(__name__)

DEFAULT_PORT = 4001
STATE_SAVE_INTERVAL = 60.0

EPILOG = """examples:
  plasmd dht-node --port 4001
  plasmd dht-node --port 4002 --bootstrap 198.51.100.7:4001 --state /var/lib/plasmd/dht.json

With --json, one line {"ok": true, "listen": ..., "port": ..., "node_id": ...} is printed on
stdout once the UDP port is bound (useful with --port 0).

""" + exit_codes_help(
    {0: "stopped by SIGINT/SIGTERM", 2: "usage error, or the UDP port cannot be bound"},
    codes=(0, 2, 70),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port",
        type=count(0, 65535),
        default=DEFAULT_PORT,
        metavar="N",
        help="UDP port (default 4001; 0 = any)",
    )
    parser.add_argument(
        "--listen", default="0.0.0.0", metavar="ADDR", help="address to bind (default 0.0.0.0)"
    )
    add_bootstrap_argument(parser, "a node of the network to join; repeatable")
    parser.add_argument(
        "--state", metavar="FILE", help="load/save the routing state (node id, neighbours) here"
    )
    parser.add_argument(
        "--rpc-timeout",
        type=seconds(3600),
        default=2.0,
        metavar="S",
        help="seconds to wait for a peer's reply (default 2)",
    )
    parser.add_argument("--json", action="store_true", help="print a ready line as JSON")


def run(args: argparse.Namespace) -> int:
    import asyncio

    return asyncio.run(_serve(args))


async def _serve(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from ..dht.node import DhtNode, read_state

    node_id, neighbors = read_state(args.state) if args.state else (None, [])
    node = DhtNode(node_id=node_id, rpc_timeout=args.rpc_timeout)
    try:
        await node.listen(args.port, args.listen)
    except OSError as exc:
        raise UsageError(
            f"cannot listen on {args.listen}:{args.port}: {exc.strerror or exc}"
        ) from exc
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        log.info("DHT node listening on %s:%d (id %s)", args.listen, node.port, node.node.id.hex())
        if args.json:
            ready: dict[str, Any] = success(
                {"listen": args.listen, "port": node.port, "node_id": node.node.id.hex()}
            )
            sys.stdout.write(json.dumps(ready, sort_keys=True) + "\n")
            sys.stdout.flush()
        contacts = list(args.bootstrap) + neighbors
        if contacts:
            found = await node.bootstrap(contacts)
            if found:
                log.info("joined the DHT: %d node(s) known", len(found))
            else:
                log.warning(
                    "no bootstrap node answered (%d tried); waiting for peers", len(contacts)
                )
        if args.state:
            node.save_state_regularly(args.state, STATE_SAVE_INTERVAL)
        await stop.wait()
    finally:
        if args.state:
            try:
                node.save_state(args.state)
            except OSError as exc:
                log.warning("cannot save DHT state to %s: %s", args.state, exc)
        node.stop()
    storage = node.storage
    log.info(
        "DHT node stopped (%d record(s) held, %d invalid dropped, %d refused when full, "
        "%d evicted by admission)",
        storage.total(),
        storage.rejected + node.protocol.dropped,
        storage.refused,
        storage.evicted,
    )
    return 0
