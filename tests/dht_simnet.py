"""A network of real DHT nodes on loopback in one process (tests/test_dht_network.py, bench/dht).

Every node is a full ``DhtNode`` with its own UDP socket on 127.0.0.1 (port chosen by the
kernel); nodes join through the first node in small concurrent batches, like a network that grew
over time. ``SimNetwork`` closes every socket on exit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType
from typing import Any

from phase_client.dht.node import DhtNode

JOIN_BATCH = 10


class SimNetwork:
    def __init__(
        self,
        count: int,
        host: str = "127.0.0.1",
        factory: Callable[..., DhtNode] = DhtNode,
        **node_options: Any,
    ) -> None:
        self.count = count
        self.host = host
        self.factory = factory
        self.node_options = {"rpc_timeout": 0.5, **node_options}
        self.nodes: list[DhtNode] = []
        self.extra: list[DhtNode] = []  # clients and other late joiners, stopped on exit too
        self.stopped: set[int] = set()

    async def __aenter__(self) -> SimNetwork:
        try:
            for _ in range(self.count):
                node = self.factory(**self.node_options)
                await node.listen(0, self.host)
                self.nodes.append(node)
            boot = [self.nodes[0].address]
            for start in range(1, len(self.nodes), JOIN_BATCH):
                batch = self.nodes[start : start + JOIN_BATCH]
                await asyncio.gather(*(n.bootstrap(boot) for n in batch))
        except BaseException:
            self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        for node in self.nodes + self.extra:
            node.stop()

    def kill(self, index: int) -> None:
        """Stop node ``index`` abruptly (its socket closes; peers see timeouts)."""
        self.nodes[index].stop()
        self.stopped.add(index)

    def alive(self) -> list[DhtNode]:
        return [n for i, n in enumerate(self.nodes) if i not in self.stopped]

    async def join(
        self, via: list[tuple[str, int]], factory: Callable[..., DhtNode] | None = None, **kw: Any
    ) -> DhtNode:
        """A new node (e.g. a client) that bootstraps through ``via``."""
        node = (factory or self.factory)(**{**self.node_options, **kw})
        await node.listen(0, self.host)
        self.extra.append(node)
        await node.bootstrap(via)
        return node
