"""Kademlia lookups on ``/ipfs/kad/1.0.0``: the iterative walk towards a key (``ALPHA`` queries
in flight, the ``K`` closest known peers as the goal), GET_PROVIDERS and FIND_NODE on the way,
ADD_PROVIDER to the closest peers found.

Bounded: one ``rpc_timeout`` per peer (dial, handshake, request and answer together), at most
``max_queries`` peers contacted per lookup, every answer's size and peer count capped by
``kadmsg``; peers whose addresses fail the address filter are never dialled. A peer that does
not answer, answers garbage or is not who its address says costs one timeout and is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from . import kadmsg, multistream, protobuf, yamux
from .conn import Connection, Host
from .errors import Libp2pError
from .multiaddr import Multiaddr
from .peerid import PeerId

log = logging.getLogger(__name__)

K = 20
ALPHA = 3
MAX_QUERIES = 60
DEFAULT_RPC_TIMEOUT = 5.0
ACK_WAIT = 2.0  # after ADD_PROVIDER: how long to wait for the peer to close the stream


def distance(a: bytes, b: bytes) -> int:
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


def is_public(host: str) -> bool:
    """False for loopback, private, link-local, unspecified addresses; names count as public."""
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return True
    return address.is_global


@dataclass
class Contact:
    peer: PeerId | None  # None: a bootstrap address without /p2p/ID
    targets: list[tuple[str, int]]
    distance: int
    bootstrap: bool = False  # given by the caller, not learnt from an answer
    retried: bool = False


@dataclass
class Provider:
    peer: PeerId
    addrs: tuple[Multiaddr, ...]
    via: PeerId


@dataclass
class Stats:
    messages: int = 0  # requests sent
    contacted: int = 0  # peers we tried
    answered: int = 0
    failed: int = 0
    dropped: int = 0  # peers or addresses refused in answers
    errors: list[str] = field(default_factory=list)


@dataclass
class LookupResult:
    providers: dict[PeerId, Provider]
    closest: list[tuple[PeerId, Connection]]  # peers that answered, closest first
    stats: Stats
    elapsed: float


AddressFilter = Callable[[str], bool]


def dial_targets(addrs: Sequence[Multiaddr], allow: AddressFilter) -> list[tuple[str, int]]:
    out = []
    for ma in addrs:
        target = ma.tcp_target()
        if target is not None and allow(target[0]) and target not in out:
            out.append(target)
    return out[:4]


async def request(
    connection: Connection, message: bytes, *, reply: bool = True
) -> kadmsg.Message | None:
    """One Kademlia request on a fresh stream; its answer (None when none is expected)."""
    stream = connection.session.open_stream()
    try:
        await multistream.select(stream, kadmsg.PROTOCOL_ID)
        await stream.send(protobuf.length_prefixed(message))
        if not reply:
            await stream.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ACK_WAIT):
                    await stream.wait_remote_closed()
            return None
        data = await multistream.read_length_prefixed(stream, kadmsg.MAX_MESSAGE)
        await stream.close()
        return kadmsg.decode(data)
    except asyncio.IncompleteReadError:
        raise yamux.StreamClosed("stream closed mid-message") from None
    finally:
        if not stream.local_closed:
            stream.reset()


class Lookup:
    def __init__(
        self,
        host: Host,
        key: bytes,
        kind: int,
        *,
        rpc_timeout: float = DEFAULT_RPC_TIMEOUT,
        allow: AddressFilter = lambda host: True,
        max_queries: int = MAX_QUERIES,
        enough_providers: int | None = None,
        keep_connections: bool = False,
    ) -> None:
        self.host = host
        self.key = key
        self.kind = kind
        self.target = hashlib.sha256(key).digest()
        self.rpc_timeout = rpc_timeout
        self.allow = allow
        self.max_queries = max_queries
        self.enough_providers = enough_providers
        self.keep_connections = keep_connections
        self.stats = Stats()
        self.providers: dict[PeerId, Provider] = {}
        self.contacts: dict[PeerId, Contact] = {}
        self.queried: set[PeerId] = set()
        self.answered: dict[PeerId, Connection] = {}
        self.failed: set[PeerId] = set()
        self.me = host.peer_id

    def _add(self, peer: PeerId, addrs: Sequence[Multiaddr]) -> None:
        if peer == self.me or peer in self.contacts:
            return
        targets = dial_targets(addrs, self.allow)
        if targets:
            self.contacts[peer] = Contact(peer, targets, distance(peer.kad_id, self.target))

    async def _query(
        self, contact: Contact
    ) -> tuple[Contact, PeerId | None, kadmsg.Message | None]:
        if not contact.retried:
            self.stats.contacted += 1
        for host, port in contact.targets:
            connection = None
            try:
                async with asyncio.timeout(self.rpc_timeout):
                    connection = await self.host.dial(host, port, contact.peer)
                    self.stats.messages += 1
                    answer = await request(connection, kadmsg.encode(self.kind, self.key))
            except (Libp2pError, TimeoutError, OSError) as exc:
                text = str(exc) or type(exc).__name__
                if isinstance(exc, TimeoutError):
                    text = f"no answer within {self.rpc_timeout:g} s"
                self.stats.errors.append(f"{host}:{port}: {text}")
                log.debug("kad: %s:%d: %s", host, port, text)
                if connection is not None:
                    await self._drop(connection)
                continue
            assert answer is not None
            if answer.type != self.kind or answer.key not in (b"", self.key):
                self.stats.errors.append(f"{host}:{port}: answer for another request")
                await self._drop(connection)
                continue
            self.answered[connection.peer] = connection
            if not self.keep_connections:
                await self._drop(connection)
            return contact, connection.peer, answer
        return contact, None, None

    async def _drop(self, connection: Connection) -> None:
        with contextlib.suppress(Exception):
            await connection.close()
        with contextlib.suppress(ValueError):
            self.host.connections.remove(connection)

    def _next(self) -> Contact | None:
        """The closest contact not yet queried, if it is among the K closest live ones."""
        live = sorted(
            (c for p, c in self.contacts.items() if p not in self.failed),
            key=lambda c: c.distance,
        )
        for contact in live[:K]:
            assert contact.peer is not None
            if contact.peer not in self.queried:
                return contact
        return None

    def _done(self) -> bool:
        return self.enough_providers is not None and (len(self.providers) >= self.enough_providers)

    async def run(self, bootstrap: Sequence[Multiaddr]) -> LookupResult:
        started = time.monotonic()
        pending: set[asyncio.Task[tuple[Contact, PeerId | None, kadmsg.Message | None]]] = set()
        queue: list[Contact] = []
        retry: list[
            Contact
        ] = []  # bootstrap contacts that failed: asked once more if nobody answers
        for ma in bootstrap:
            peer = ma.peer_id()
            target = ma.tcp_target()
            if target is None:
                continue
            place = 0 if peer is None else distance(peer.kad_id, self.target)
            contact = Contact(peer, [target], place, bootstrap=True)
            queue.append(contact)
            if peer is not None:
                self.queried.add(peer)
        try:
            while True:
                while len(pending) < ALPHA and self.stats.contacted < self.max_queries:
                    chosen = queue.pop(0) if queue else self._next()
                    if chosen is None:
                        break
                    if chosen.peer is not None:
                        self.queried.add(chosen.peer)
                    pending.add(asyncio.ensure_future(self._query(chosen)))
                if not pending and retry and not self.stats.answered:
                    queue, retry = retry, []
                    continue
                if not pending or self._done():
                    break
                finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    asked, peer, answer = task.result()
                    if answer is None or peer is None:
                        self.stats.failed += 1
                        if asked.bootstrap and not asked.retried:
                            asked.retried = True
                            retry.append(asked)
                        elif asked.peer is not None:
                            self.failed.add(asked.peer)
                        continue
                    self.stats.answered += 1
                    self.queried.add(peer)
                    self.stats.dropped += answer.dropped
                    for info in answer.closer:
                        self._add(info.peer, info.addrs)
                    for info in answer.providers:
                        self._provider(info, peer)
        finally:
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(BaseException):
                    await task
        closest = sorted(
            self.answered.items(), key=lambda item: distance(item[0].kad_id, self.target)
        )[:K]
        return LookupResult(self.providers, closest, self.stats, time.monotonic() - started)

    def _provider(self, info: kadmsg.PeerInfo, via: PeerId) -> None:
        known = self.providers.get(info.peer)
        if known is None:
            known = self.providers[info.peer] = Provider(info.peer, (), via)
        merged = list(known.addrs)
        for address in info.addrs:
            if address not in merged:
                merged.append(address)
        known.addrs = tuple(merged[: kadmsg.MAX_ADDRS])
