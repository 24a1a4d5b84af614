"""Dialing a libp2p peer: TCP -> multistream ``/noise`` -> Noise XX -> multistream
``/yamux/1.0.0`` -> a Yamux session, and the peer's inbound streams (identify, ping) answered.

``Host`` holds our identity and the addresses we announce. Every step runs under the caller's
timeout (``asyncio.timeout``); a peer that is not the one its ``/p2p/`` address names, or one
that breaks the protocol, is dropped with a ``Libp2pError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..keys import SigningKey
from . import identify, multistream, noise, yamux
from .errors import Libp2pError, ProtocolError
from .multiaddr import Multiaddr
from .peerid import PeerId

log = logging.getLogger(__name__)


class SecureConn:
    """A Noise transport over a TCP stream: 2-byte length-prefixed encrypted frames."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        send: noise.CipherState,
        recv: noise.CipherState,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self._send = send
        self._recv = recv
        self._pending = bytearray()

    async def read_frame(self) -> bytes:
        if self._pending:
            data = bytes(self._pending)
            self._pending.clear()
            return data
        length = int.from_bytes(await self.reader.readexactly(2), "big")
        if length < noise.TAG:
            raise ProtocolError(f"noise frame of {length} bytes")
        return self._recv.decrypt(b"", await self.reader.readexactly(length))

    async def readexactly(self, n: int) -> bytes:
        while len(self._pending) < n:
            length = int.from_bytes(await self.reader.readexactly(2), "big")
            if length < noise.TAG:
                raise ProtocolError(f"noise frame of {length} bytes")
            self._pending += self._recv.decrypt(b"", await self.reader.readexactly(length))
        data = bytes(self._pending[:n])
        del self._pending[:n]
        return data

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            chunk = bytes(view[: noise.MAX_PLAINTEXT])
            view = view[noise.MAX_PLAINTEXT :]
            self.writer.write(noise.frame(self._send.encrypt(b"", chunk)))

    async def send(self, data: bytes) -> None:
        self.write(data)
        await self.drain()

    async def drain(self) -> None:
        await self.writer.drain()

    def close(self) -> None:
        self.writer.close()


class _Plain:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def readexactly(self, n: int) -> bytes:
        return await self.reader.readexactly(n)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


async def _read_noise_message(reader: asyncio.StreamReader) -> bytes:
    length = int.from_bytes(await reader.readexactly(2), "big")
    return await reader.readexactly(length)


def _observed(peername: object) -> Multiaddr | None:
    if not isinstance(peername, tuple) or len(peername) < 2:
        return None
    try:
        host = str(ipaddress.ip_address(str(peername[0]).partition("%")[0]))
        proto = "ip6" if ":" in host else "ip4"
        return Multiaddr.from_text(f"/{proto}/{host}/tcp/{int(peername[1])}")
    except ValueError:
        return None


@dataclass
class Connection:
    peer: PeerId
    session: yamux.Session
    address: tuple[str, int]

    async def close(self) -> None:
        await self.session.close()


@dataclass
class Host:
    """Our side of every connection: the identity key and the addresses identify announces."""

    identity: SigningKey
    announce: Sequence[Multiaddr] = ()
    connections: list[Connection] = field(default_factory=list)

    @property
    def peer_id(self) -> PeerId:
        return PeerId.from_ed25519(self.identity.public.raw)

    async def dial(self, host: str, port: int, expected: PeerId | None = None) -> Connection:
        """A ready connection to ``host:port`` (run it under a timeout)."""
        try:
            reader, writer = await asyncio.open_connection(host, port, limit=1 << 17)
        except OSError as exc:
            raise Libp2pError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
        try:
            return await self._upgrade(reader, writer, (host, port), expected)
        except BaseException:
            writer.close()
            raise

    async def _upgrade(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        address: tuple[str, int],
        expected: PeerId | None,
    ) -> Connection:
        try:
            await multistream.select(_Plain(reader, writer), noise.PROTOCOL_ID)
            handshake = noise.HandshakeState(True, self.identity)
            writer.write(noise.frame(handshake.write()))
            handshake.read(await _read_noise_message(reader))
            writer.write(noise.frame(handshake.write()))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise Libp2pError(f"{address[0]}:{address[1]}: closed during the handshake") from exc
        result = handshake.result
        assert result is not None
        if expected is not None and result.remote_peer != expected:
            raise ProtocolError(
                f"{address[0]}:{address[1]} is {result.remote_peer}, not the expected {expected}"
            )
        secure = SecureConn(reader, writer, result.send, result.recv)
        try:
            await multistream.select(secure, yamux.PROTOCOL_ID)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise Libp2pError(f"{address[0]}:{address[1]}: closed during muxer choice") from exc
        observed = _observed(writer.get_extra_info("peername"))
        public = self.identity.public.raw
        announce = list(self.announce)

        async def inbound(stream: yamux.Stream) -> None:
            await identify.answer(stream, public, announce, observed)

        session = yamux.Session(secure, client=True, handler=inbound)
        session.start()
        connection = Connection(result.remote_peer, session, address)
        self.connections.append(connection)
        return connection

    async def close(self) -> None:
        for connection in self.connections:
            with contextlib.suppress(Exception):
                await connection.close()
        self.connections.clear()
