"""The one place that uses rpcudp's private names (rpcudp 5.x, pinned in pyproject.toml).

kademlia's ``KademliaProtocol`` is an ``rpcudp.RPCProtocol``, and rpcudp offers no public way to
check a datagram before it is decoded and dispatched, to answer a request ourselves, to drop a
late reply or to set the RPC timeout after construction. ``RecordProtocol`` (``protocol.py``)
needs all of these (junk datagrams and late replies must not raise in the event loop; a boot
client cannot wait 5 s per dead peer). So this class turns rpcudp's private hooks and state
(``_solve_datagram``, ``_accept_request``, ``_accept_response``, ``_timeout``, ``_outstanding``,
``_wait_timeout``) and its datagram layout into names of our own. A rpcudp upgrade that changes
one of them breaks here, and ``tests/test_dependency_contracts.py`` says which.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kademlia.protocol import KademliaProtocol

# rpcudp's datagram: one kind byte, a 20-byte message id, then the msgpack body.
REQUEST = b"\x00"
REPLY = b"\x01"
HEADER = 21
MAX_BODY = 8192  # rpcudp refuses to send a request whose body is longer

Address = tuple[str, int]
Pending = tuple["asyncio.Future[Any]", asyncio.TimerHandle]  # a call waiting for its reply


class RpcudpAdapter(KademliaProtocol):
    """``KademliaProtocol`` whose rpcudp hooks are ``receive_datagram`` and ``reply_timed_out``
    (override them), with ``answer_request``, ``accept_reply`` and the pending-reply table to
    call from them. The defaults do what rpcudp does."""

    # -- rpcudp calls these (private hooks): hand over to our names ---------------------------
    async def _solve_datagram(self, datagram: bytes, address: Address) -> None:
        await self.receive_datagram(datagram, address)

    def _timeout(self, msg_id: bytes) -> None:
        self.reply_timed_out(msg_id)

    # -- overridable ----------------------------------------------------------------------------
    async def receive_datagram(self, datagram: bytes, address: Address) -> None:
        """A datagram arrived: decode it, then ``answer_request`` or ``accept_reply``."""
        await super()._solve_datagram(datagram, address)

    def reply_timed_out(self, msg_id: bytes) -> None:
        """The call ``msg_id`` got no reply within ``wait_timeout``: resolve it (False, None)."""
        super()._timeout(msg_id)

    # -- into rpcudp ----------------------------------------------------------------------------
    async def answer_request(self, msg_id: bytes, data: Any, address: Address) -> None:
        """Run ``rpc_<name>(address, *args)`` for ``data`` = [name, args] and send its answer."""
        await super()._accept_request(msg_id, data, address)

    def accept_reply(self, msg_id: bytes, data: Any, address: Address) -> None:
        """Resolve the pending call ``msg_id`` with (True, data)."""
        super()._accept_response(msg_id, data, address)

    def pending_reply(self, msg_id: bytes) -> Pending | None:
        pending: Pending | None = self._outstanding.get(msg_id)
        return pending

    def drop_pending_reply(self, msg_id: bytes) -> Pending | None:
        """Forget the pending call ``msg_id`` (its future and timer are the caller's to settle)."""
        pending: Pending | None = self._outstanding.pop(msg_id, None)
        return pending

    @property
    def wait_timeout(self) -> float:
        """Seconds a call waits for its reply."""
        return float(self._wait_timeout)

    @wait_timeout.setter
    def wait_timeout(self, seconds: float) -> None:
        self._wait_timeout = seconds
