"""Kademlia protocol for provider records: validated STOREs, paged record replies, hardening.

Changes from ``kademlia.protocol.KademliaProtocol``:
- ``rpc_store`` hands the value and the sender's address to ``RecordStorage.put``, which keeps it
  only if it is a valid, signed provider record for that key and its sources' share leaves room
  (``admission``); the answer says whether it was kept.
- ``rpc_find_records`` (new) answers with one page of records that fits a single unfragmented UDP
  reply, plus the page count; ``rpc_get_providers`` (new) answers a lookup's step in one message,
  like libp2p's GET_PROVIDERS: the closer nodes and the records held, as many as fit beside
  them (with their total, so a client knows when to page through ``find_records``);
  ``rpc_find_value`` never returns values (a stock crawler would crash on a list), only closer
  nodes.
- ``welcome_if_new`` computes the distance to the stored key itself (the stock code hashes the
  already-hashed key, so records rarely reached new nodes near them), and hands over at most
  HANDOFF_MAX records, the best-established first.
- ``find_neighbors`` returns the k closest contacts by XOR distance (``XorRoutingTable``).
- The RPC timeout is configurable (stock: 5 s), because a boot client cannot wait 5 s per dead
  peer.
- Junk datagrams, malformed requests and malformed replies are dropped and counted, never raised
  into the event loop.
"""

from __future__ import annotations

import asyncio
import heapq
import ipaddress
import logging
import socket
import time
from collections import Counter
from typing import Any, cast

import umsgpack
from kademlia.node import Node
from kademlia.routing import RoutingTable

from ._rpcudp import HEADER, MAX_BODY, REPLY, REQUEST, Address, RpcudpAdapter
from .records import PER_ITEM_OVERHEAD, REPLY_BUDGET, MergeOutcome
from .records import paginate as paginate_records
from .storage import RecordStorage

log = logging.getLogger(__name__)

ID_BYTES = 20
MAX_DATAGRAM = MAX_BODY + HEADER  # rpcudp's own request limit plus its header
MAX_PAGES = 64  # a reply claiming more pages than this is cut (64 records of <= 1 KiB at worst)
MAX_IP = 45  # longest textual IPv6 address
# Sent instead of a node id by a lookup-only client (a booting machine): it is answered but never
# added to routing tables, so the many short-lived clients do not leave dead contacts behind that
# every node would then wait on.
CLIENT_ID = b""
DEAD_FOR = 60.0  # seconds a peer that timed out is skipped without asking it again
MAX_DEAD = 1024  # dead peers remembered at most
HANDOFF_MAX = 128  # records handed to one new node (two full keys' worth)
# Contacts a get_providers reply keeps room for beside the records (a record is ~460 bytes, a
# contact ~37: two records and 10 contacts fit in one reply).
MIN_NODES = 8


def _is_id(value: Any) -> bool:
    return isinstance(value, bytes) and len(value) == ID_BYTES


def _is_sender(value: Any) -> bool:
    """A member's node id, or CLIENT_ID."""
    return _is_id(value) or value == CLIENT_ID


def _contact_size(contact: Any) -> int:
    """Bytes of one (id, ip, port) contact in msgpack (see ``rpc_find_node``)."""
    return 28 + len(contact[1])


def _is_contact(value: Any) -> bool:
    return (
        isinstance(value, list | tuple)
        and len(value) == 3
        and _is_id(value[0])
        and isinstance(value[1], str)
        and 0 < len(value[1]) <= MAX_IP
        and isinstance(value[2], int)
        and 0 < value[2] < 65536
    )


class XorRoutingTable(RoutingTable):
    """Routing table whose ``find_neighbors`` really returns the k closest contacts by XOR.

    The stock version walks buckets in numeric order, alternating left and right, and stops at
    the first k contacts it meets; numerically adjacent buckets are not the XOR-closest ones, so
    it often answers with contacts far from the target. On one 2000-node loopback network the
    publishers then stored their records on nodes none of which were among the 20 closest, and
    26 of 30 lookups found nothing. Scanning the whole table is cheap: it holds at most a few
    hundred contacts.
    """

    def find_neighbors(
        self, node: Node, k: int | None = None, exclude: Node | None = None
    ) -> list[Node]:
        self.buckets[self.get_bucket_for(node) or 0].touch_last_updated()
        candidates = (
            contact
            for bucket in self.buckets
            for contact in bucket.nodes.values()
            if contact.id != node.id and (exclude is None or not contact.same_home_as(exclude))
        )
        return heapq.nsmallest(k or self.ksize, candidates, key=node.distance_to)


def plain_address(address: tuple[Any, ...]) -> Address:
    """A sender's address as contacts hold it: (host, port), an IPv4 peer reaching a dual-stack
    (``::``) socket as its IPv4 address (``::ffff:10.0.0.5`` -> ``10.0.0.5``), so the same peer
    is one contact, whichever socket family heard it, and IPv4-only nodes can use it."""
    host, port = str(address[0]), int(address[1])
    if host.startswith("::ffff:"):
        try:
            mapped = ipaddress.IPv6Address(host).ipv4_mapped
        except ValueError:
            mapped = None
        if mapped is not None:
            host = str(mapped)
    return host, port


class FamilyTransport:
    """The node's datagram transport, sending to contacts of either family where it can: an
    IPv4 contact through a dual-stack IPv6 socket as ``::ffff:a.b.c.d``; a contact of the other
    family on a single-family socket is unreachable, and a datagram to it is dropped (the RPC
    times out) instead of raising in the event loop."""

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        self.family = sock.family if sock is not None else socket.AF_INET

    def sendto(self, data: bytes, address: tuple[str, int]) -> None:
        host, port = address[0], address[1]
        ipv6 = ":" in host
        if self.family == socket.AF_INET6 and not ipv6:
            address = (f"::ffff:{host}", port)
        elif self.family == socket.AF_INET and ipv6:
            log.debug("not sending to %s: this node has no IPv6 socket", host)
            return
        # A datagram transport (asyncio's own class does not subclass DatagramTransport).
        cast(asyncio.DatagramTransport, self.transport).sendto(data, address)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class RecordProtocol(RpcudpAdapter):
    storage: RecordStorage

    def __init__(
        self,
        source_node: Node,
        storage: RecordStorage,
        ksize: int,
        wait_timeout: float = 5.0,
        client: bool = False,
    ) -> None:
        super().__init__(source_node, storage, ksize)
        self.router = XorRoutingTable(self, ksize, source_node)
        self.wait_timeout = wait_timeout
        self.client = client
        self.sent: Counter[str] = Counter()  # RPCs sent, by name (benchmarks count messages)
        self.dropped = 0  # junk datagrams, malformed requests and replies
        self._tasks: set[asyncio.Future[Any]] = set()  # strong references until they finish
        # Peers that just timed out, by address: other nodes keep listing them in replies for a
        # while, and asking again would cost a full RPC timeout each time.
        self.dead: dict[tuple[str, int], float] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(FamilyTransport(transport))

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- incoming datagrams -----------------------------------------------------------------
    async def receive_datagram(self, datagram: bytes, address: Address) -> None:
        address = plain_address(address)
        kind = datagram[:1]
        if len(datagram) > MAX_DATAGRAM or len(datagram) <= HEADER or kind not in (REQUEST, REPLY):
            self.dropped += 1
            return
        try:
            data = umsgpack.unpackb(datagram[HEADER:])
        except Exception:  # umsgpack raises many types on junk; all mean "drop"
            self.dropped += 1
            return
        msg_id = datagram[1:HEADER]
        if kind == REQUEST:
            self.spawn(self._checked_request(msg_id, data, address))
        else:
            self._checked_reply(msg_id, data, address)

    async def _checked_request(self, msg_id: bytes, data: Any, address: Address) -> None:
        if (
            not isinstance(data, list)
            or len(data) != 2
            or not isinstance(data[0], str)
            or not isinstance(data[1], list | tuple)
        ):
            self.dropped += 1
            return
        try:
            await self.answer_request(msg_id, data, address)
        except Exception as exc:  # wrong argument count or types from a hostile peer
            self.dropped += 1
            log.debug("dropped malformed %s request from %s: %s", data[0], address, exc)

    def _checked_reply(self, msg_id: bytes, data: Any, address: Address) -> None:
        # A lookup cut short (timeout, first record found) cancels its pending RPC futures;
        # rpcudp would then raise InvalidStateError on the late reply.
        pending = self.pending_reply(msg_id)
        if pending is not None and pending[0].done():
            pending[1].cancel()
            self.drop_pending_reply(msg_id)
            return
        self.accept_reply(msg_id, data, address)

    def reply_timed_out(self, msg_id: bytes) -> None:
        pending = self.drop_pending_reply(msg_id)
        if pending is not None and not pending[0].done():
            pending[0].set_result((False, None))

    # --- RPC handlers -----------------------------------------------------------------------
    @property
    def sender_id(self) -> bytes:
        """What this node sends as its id: CLIENT_ID in client mode."""
        return CLIENT_ID if self.client else bytes(self.source_node.id)

    def _welcome_sender(self, nodeid: bytes, sender: tuple[str, int]) -> Node | None:
        if nodeid == CLIENT_ID:
            return None
        node = Node(nodeid, sender[0], sender[1])
        self.welcome_if_new(node)
        return node

    def rpc_ping(self, sender: tuple[str, int], nodeid: Any) -> bytes | None:
        if not _is_sender(nodeid):
            self.dropped += 1
            return None
        self._welcome_sender(nodeid, sender)
        return bytes(self.source_node.id)

    def rpc_store(self, sender: tuple[str, int], nodeid: Any, key: Any, value: Any) -> bool:
        if not _is_id(nodeid) or not _is_id(key):
            self.dropped += 1
            return False
        # The sender's address decides whose share the record counts against (``admission``).
        outcome = self.storage.put(key, value, sender=sender[0])
        if outcome is None:
            log.debug("refused an invalid record from %s", sender)
            return False
        if outcome is MergeOutcome.FULL:
            return False
        # Only a peer that sent something valid earns a place in the routing table.
        self.welcome_if_new(Node(nodeid, sender[0], sender[1]))
        return True

    def rpc_find_node(self, sender: tuple[str, int], nodeid: Any, key: Any) -> list[Any]:
        if not _is_sender(nodeid) or not _is_id(key):
            self.dropped += 1
            return []
        source = self._welcome_sender(nodeid, sender)
        neighbors = [tuple(n) for n in self.router.find_neighbors(Node(key), exclude=source)]
        # Keep the reply within one unfragmented datagram (long IPv6 addresses could exceed it).
        # msgpack of one contact: 22 (bin8 id) + 1..2 + len(ip) (str) + 3 (uint16) + 1 (array).
        size = 3
        for count, contact in enumerate(neighbors):
            size += _contact_size(contact)
            if size > REPLY_BUDGET:
                return neighbors[:count]
        return neighbors

    def rpc_get_providers(self, sender: tuple[str, int], nodeid: Any, key: Any) -> dict[str, Any]:
        """One step of a record lookup in one unfragmented reply: the records held under ``key``
        that fit beside ``MIN_NODES`` contacts, then as many closer nodes as fit (closest
        first), and how many records are held in all (the client pages through the rest)."""
        if not _is_sender(nodeid) or not _is_id(key):
            self.dropped += 1
            return {"nodes": [], "records": [], "total": 0}
        contacts = self.rpc_find_node(sender, nodeid, key)
        held = [r.raw for r in self.storage.records(key)]
        # The map's keys, its three headers and the total: 32 bytes at most.
        room = REPLY_BUDGET - 32 - sum(_contact_size(c) for c in contacts[:MIN_NODES])
        sent: list[bytes] = []
        for raw in held:  # in find_records' page order; stop at the first that does not fit
            if room < len(raw) + PER_ITEM_OVERHEAD:
                break
            room -= len(raw) + PER_ITEM_OVERHEAD
            sent.append(raw)
        room += sum(_contact_size(c) for c in contacts[:MIN_NODES])
        nodes = []
        for contact in contacts:
            room -= _contact_size(contact)
            if room < 0:
                break
            nodes.append(contact)
        return {"nodes": nodes, "records": sent, "total": len(held)}

    def rpc_find_value(self, sender: tuple[str, int], nodeid: Any, key: Any) -> list[Any]:
        # Values are sets of records, fetched page by page with find_records; answering a stock
        # client's find_value with a list would crash its crawler, so give it nodes only.
        return self.rpc_find_node(sender, nodeid, key)

    def rpc_find_records(
        self, sender: tuple[str, int], nodeid: Any, key: Any, page: Any
    ) -> dict[str, Any]:
        if not _is_sender(nodeid) or not _is_id(key) or not isinstance(page, int) or page < 0:
            self.dropped += 1
            return {"records": [], "pages": 0}
        self._welcome_sender(nodeid, sender)
        pages = paginate_records([r.raw for r in self.storage.records(key)])
        return {"records": pages[page] if page < len(pages) else [], "pages": len(pages)}

    # --- outgoing calls (counted, replies checked) ------------------------------------------
    async def call_ping(self, node_to_ask: Node) -> Any:
        self.sent["ping"] += 1
        result = await self.ping((node_to_ask.ip, node_to_ask.port), self.sender_id)
        return self.handle_call_response(result, node_to_ask)

    async def call_ping_address(self, address: tuple[str, int]) -> tuple[bool, bytes | None]:
        """Ping a bootstrap contact known only by address: (True, its node id) or (False, None)."""
        self.sent["ping"] += 1
        ok, node_id = await self.ping(address, self.sender_id)
        if ok and not _is_id(node_id):
            self.dropped += 1
            return False, None
        return bool(ok), node_id

    async def call_store(self, node_to_ask: Node, key: bytes, value: Any) -> Any:
        self.sent["store"] += 1
        return await super().call_store(node_to_ask, key, value)

    async def call_find_node(self, node_to_ask: Node, node_to_find: Node) -> Any:
        if self.is_dead(node_to_ask):
            return self.handle_call_response((False, None), node_to_ask)
        self.sent["find_node"] += 1
        address = (node_to_ask.ip, node_to_ask.port)
        result = await self.find_node(address, self.sender_id, node_to_find.id)
        return self._checked_nodes(result, node_to_ask)

    async def call_get_providers(self, node_to_ask: Node, digest: bytes) -> Any:
        """(True, {"nodes": [contacts], "records": [bytes...], "total": n}) or (False, None)."""
        if self.is_dead(node_to_ask):
            return self.handle_call_response((False, None), node_to_ask)
        self.sent["get_providers"] += 1
        address = (node_to_ask.ip, node_to_ask.port)
        ok, data = await self.get_providers(address, self.sender_id, digest)
        if ok:
            if (
                isinstance(data, dict)
                and isinstance(data.get("nodes"), list)
                and isinstance(data.get("records"), list)
                and isinstance(data.get("total"), int)
            ):
                contacts = [c for c in data["nodes"] if _is_contact(c)]
                self.dropped += len(data["nodes"]) - len(contacts)
                data = {"nodes": contacts, "records": data["records"], "total": data["total"]}
            else:
                self.dropped += 1
                ok, data = False, None
        return self.handle_call_response((ok, data), node_to_ask)

    async def call_find_value(self, node_to_ask: Node, node_to_find: Node) -> Any:
        return await self.call_find_node(node_to_ask, node_to_find)

    async def call_find_records(self, node_to_ask: Node, digest: bytes, page: int) -> Any:
        """(True, {"records": [bytes...], "pages": n}) or (False, None)."""
        if self.is_dead(node_to_ask):
            return self.handle_call_response((False, None), node_to_ask)
        self.sent["find_records"] += 1
        address = (node_to_ask.ip, node_to_ask.port)
        result = await self.find_records(address, self.sender_id, digest, page)
        ok, data = result
        if ok and not (
            isinstance(data, dict)
            and isinstance(data.get("records"), list)
            and isinstance(data.get("pages"), int)
        ):
            self.dropped += 1
            result = (False, None)
        return self.handle_call_response(result, node_to_ask)

    def is_dead(self, node: Node) -> bool:
        since = self.dead.get((node.ip, node.port))
        if since is None:
            return False
        if time.monotonic() - since > DEAD_FOR:
            del self.dead[(node.ip, node.port)]
            return False
        return True

    def handle_call_response(self, result: Any, node: Node) -> Any:
        if result[0]:
            self.dead.pop((node.ip, node.port), None)
        else:
            if len(self.dead) >= MAX_DEAD:
                # Bounded: forget the peer that has been dead longest.
                del self.dead[min(self.dead, key=self.dead.__getitem__)]
            self.dead[(node.ip, node.port)] = time.monotonic()
        return super().handle_call_response(result, node)

    def _checked_nodes(self, result: Any, node_to_ask: Node) -> Any:
        """Drop malformed contacts from a node-list reply (the stock crawler would raise)."""
        ok, data = result
        if ok:
            if not isinstance(data, list):
                self.dropped += 1
                result = (False, None)
            else:
                contacts = [c for c in data if _is_contact(c)]
                self.dropped += len(data) - len(contacts)
                result = (True, contacts)
        return self.handle_call_response(result, node_to_ask)

    # --- replication hand-off ---------------------------------------------------------------
    def welcome_if_new(self, node: Node) -> None:
        """Stock logic with two fixes: storage keys are already digests, so use ``Node(key)``;
        and at most HANDOFF_MAX records are handed over, those admission ranks highest first.

        Uncapped, a node that a flood has filled (4096 records) sends a few thousand STOREs to
        every node it meets; on loopback they overflowed the newcomer's socket buffer, and its
        own RPC replies were lost. Providers republish their records anyway.
        """
        if not self.router.is_new_node(node):
            return
        handed = 0
        for key, value in self.storage.best_first():
            if handed >= HANDOFF_MAX:
                break
            keynode = Node(key)
            neighbors = self.router.find_neighbors(keynode)
            if neighbors:
                last = neighbors[-1].distance_to(keynode)
                new_node_close = node.distance_to(keynode) < last
                first = neighbors[0].distance_to(keynode)
                this_closest = self.source_node.distance_to(keynode) < first
            if not neighbors or (new_node_close and this_closest):
                self.spawn(self.call_store(node, key, value))
                handed += 1
        self.router.add_contact(node)

    def page_limit(self, claimed: int) -> int:
        return max(0, min(claimed, MAX_PAGES))
