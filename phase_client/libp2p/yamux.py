"""Yamux: many streams over one secured connection (``/yamux/1.0.0``).

The frame codec is pure (``Header``); ``Session`` runs the protocol on a secured connection:
a 12-byte header (version 0, type, flags, stream id, length), data / window-update / ping /
go-away frames, SYN-ACK-FIN-RST flags, and per-stream flow control with the spec's 256 KiB
initial window. The connection's dialer opens odd stream ids, the listener even ones.

Bounded: a peer may not send more than the window it was given (a frame beyond it is a protocol
error that ends the session), at most ``MAX_INBOUND`` streams it opened are kept at once (more are
reset), and a stream's buffer never holds more than its window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from .errors import Libp2pError, ProtocolError

log = logging.getLogger(__name__)

PROTOCOL_ID = "/yamux/1.0.0"
VERSION = 0
TYPE_DATA, TYPE_WINDOW, TYPE_PING, TYPE_GO_AWAY = 0, 1, 2, 3
SYN, ACK, FIN, RST = 1, 2, 4, 8
HEADER_LEN = 12
INITIAL_WINDOW = 256 * 1024
MAX_CHUNK = 64 * 1024
MAX_INBOUND = 8  # identify, ping, identify push: what peers open towards a DHT client
_HEADER = struct.Struct(">BBHII")


@dataclass(frozen=True)
class Header:
    type: int
    flags: int
    stream_id: int
    length: int

    def encode(self) -> bytes:
        return _HEADER.pack(VERSION, self.type, self.flags, self.stream_id, self.length)

    @classmethod
    def decode(cls, data: bytes) -> Header:
        version, kind, flags, stream_id, length = _HEADER.unpack(data[:HEADER_LEN])
        if version != VERSION:
            raise ProtocolError(f"yamux version {version}")
        if kind > TYPE_GO_AWAY:
            raise ProtocolError(f"yamux frame type {kind}")
        return cls(kind, flags, stream_id, length)


class SecureChannel(Protocol):
    async def read_frame(self) -> bytes: ...

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def close(self) -> None: ...


class StreamClosed(Libp2pError):
    """The stream was reset or closed before the expected bytes came."""


class Stream:
    def __init__(self, session: Session, stream_id: int) -> None:
        self.session = session
        self.id = stream_id
        self._buf = bytearray()
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self.recv_window = INITIAL_WINDOW  # what the peer may still send us
        self.send_window = INITIAL_WINDOW  # what we may still send
        self._consumed = 0
        self.remote_closed = False
        self.local_closed = False
        self.was_reset = False
        self.syn_pending = False  # our SYN goes with the first frame we send

    # -- fed by the session --
    def _data(self, data: bytes) -> None:
        if len(data) > self.recv_window:
            raise ProtocolError("yamux: peer sent beyond the stream window")
        self.recv_window -= len(data)
        self._buf += data
        self._readable.set()

    def _window(self, delta: int) -> None:
        self.send_window = min(self.send_window + delta, 1 << 32)
        self._writable.set()

    def _remote_fin(self) -> None:
        self.remote_closed = True
        self._readable.set()

    def _reset(self) -> None:
        self.was_reset = True
        self.remote_closed = True
        self._readable.set()
        self._writable.set()

    # -- the user side --
    def _flags(self) -> int:
        if self.syn_pending:
            self.syn_pending = False
            return SYN
        return 0

    async def readexactly(self, n: int) -> bytes:
        """``n`` bytes; taken from the window as they come, so ``n`` may exceed it (the
        caller bounds ``n``)."""
        out = bytearray()
        while len(out) < n:
            if self._buf:
                take = min(n - len(out), len(self._buf))
                out += self._buf[:take]
                del self._buf[:take]
                self._consume(take)
                continue
            if self.remote_closed:
                raise StreamClosed(
                    "stream reset by the peer" if self.was_reset else "stream closed by the peer"
                )
            self._readable.clear()
            await self._readable.wait()
        return bytes(out)

    def _consume(self, count: int) -> None:
        self._consumed += count
        if self._consumed >= INITIAL_WINDOW // 2 and not self.remote_closed:
            self.recv_window += self._consumed
            self.session._send(Header(TYPE_WINDOW, self._flags(), self.id, self._consumed))
            self._consumed = 0

    async def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self.was_reset or self.session.closed:
                raise StreamClosed("stream reset")
            if self.local_closed:
                raise StreamClosed("stream already closed for writing")
            if self.send_window <= 0:
                self._writable.clear()
                await self._writable.wait()
                continue
            size = min(len(view), self.send_window, MAX_CHUNK)
            self.send_window -= size
            header = Header(TYPE_DATA, self._flags(), self.id, size)
            self.session._send(header, bytes(view[:size]))
            view = view[size:]
        await self.session.drain()

    async def close(self) -> None:
        """Half-close: FIN (we send no more)."""
        if self.local_closed or self.was_reset or self.session.closed:
            return
        self.local_closed = True
        self.session._send(Header(TYPE_WINDOW, self._flags() | FIN, self.id, 0))
        self.session._forget_if_done(self)
        await self.session.drain()

    def reset(self) -> None:
        if not self.was_reset and not self.session.closed:
            self.session._send(Header(TYPE_WINDOW, RST, self.id, 0))
        self._reset()
        self.session._forget(self)

    async def wait_remote_closed(self) -> None:
        """Until the peer closes or resets its side (e.g. after it handled our message)."""
        while not self.remote_closed:
            self._readable.clear()
            await self._readable.wait()


Handler = Callable[[Stream], Awaitable[None]]


class Session:
    def __init__(self, channel: SecureChannel, client: bool, handler: Handler | None) -> None:
        self.channel = channel
        self.client = client
        self.handler = handler
        self.streams: dict[int, Stream] = {}
        self.next_id = 1 if client else 2
        self.closed = False
        self.close_reason = ""
        self._tasks: set[asyncio.Task[None]] = set()
        self._reader: asyncio.Task[None] | None = None
        self.inbound = 0

    def start(self) -> None:
        self._reader = asyncio.get_running_loop().create_task(self._read_loop())

    def _send(self, header: Header, payload: bytes = b"") -> None:
        if not self.closed:
            self.channel.write(header.encode() + payload)

    async def drain(self) -> None:
        if not self.closed:
            with contextlib.suppress(ConnectionError):
                await self.channel.drain()

    def open_stream(self) -> Stream:
        if self.closed:
            raise StreamClosed(f"connection closed ({self.close_reason or 'by us'})")
        stream = Stream(self, self.next_id)
        self.next_id += 2
        stream.syn_pending = True
        self.streams[stream.id] = stream
        return stream

    def _forget_if_done(self, stream: Stream) -> None:
        if stream.local_closed and stream.remote_closed:
            self._forget(stream)

    def _forget(self, stream: Stream) -> None:
        if self.streams.pop(stream.id, None) is not None and (stream.id % 2 == 1) != self.client:
            self.inbound -= 1

    async def _read_loop(self) -> None:
        buf = bytearray()
        try:
            while True:
                while len(buf) < HEADER_LEN:
                    buf += await self.channel.read_frame()
                header = Header.decode(bytes(buf[:HEADER_LEN]))
                payload = b""
                if header.type == TYPE_DATA:
                    if header.length > INITIAL_WINDOW:
                        raise ProtocolError(f"yamux data frame of {header.length} bytes")
                    while len(buf) < HEADER_LEN + header.length:
                        buf += await self.channel.read_frame()
                    payload = bytes(buf[HEADER_LEN : HEADER_LEN + header.length])
                    del buf[: HEADER_LEN + header.length]
                else:
                    del buf[:HEADER_LEN]
                if not self._dispatch(header, payload):
                    break
        except asyncio.CancelledError:
            raise
        except (ProtocolError, Libp2pError) as exc:
            self.close_reason = str(exc)
            log.debug("yamux: %s", exc)
            self._send(Header(TYPE_GO_AWAY, 0, 0, 1))
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            self.close_reason = f"connection lost: {type(exc).__name__}"
        finally:
            self._shut()

    def _dispatch(self, header: Header, payload: bytes) -> bool:
        if header.type == TYPE_PING:
            if header.flags & SYN:
                self._send(Header(TYPE_PING, ACK, 0, header.length))
            return True
        if header.type == TYPE_GO_AWAY:
            self.close_reason = "go-away from the peer"
            return False
        stream = self.streams.get(header.stream_id)
        if header.flags & SYN and stream is None:
            stream = self._accept(header.stream_id)
            if stream is None:
                return True
        if stream is None:
            return True  # a late frame of a stream already gone
        if header.type == TYPE_WINDOW:
            stream._window(header.length)
        elif payload:
            stream._data(payload)
        if header.flags & RST:
            stream._reset()
            self._forget(stream)
        elif header.flags & FIN:
            stream._remote_fin()
            self._forget_if_done(stream)
        return True

    def _accept(self, stream_id: int) -> Stream | None:
        if stream_id == 0 or (stream_id % 2 == 1) == self.client:
            raise ProtocolError(f"yamux: peer opened stream {stream_id} of the wrong parity")
        if self.handler is None or self.inbound >= MAX_INBOUND:
            self._send(Header(TYPE_WINDOW, RST, stream_id, 0))
            return None
        stream = Stream(self, stream_id)
        self.streams[stream_id] = stream
        self.inbound += 1
        self._send(Header(TYPE_WINDOW, ACK, stream_id, 0))
        task = asyncio.get_running_loop().create_task(self._serve(stream))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return stream

    async def _serve(self, stream: Stream) -> None:
        assert self.handler is not None
        try:
            await self.handler(stream)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one bad inbound stream must not end the connection
            log.debug("yamux: inbound stream %d: %s", stream.id, exc)
            stream.reset()

    def _shut(self) -> None:
        if self.closed:
            return
        self.closed = True
        for stream in list(self.streams.values()):
            stream._reset()
        self.streams.clear()
        self.channel.close()

    async def close(self) -> None:
        if not self.closed:
            self._send(Header(TYPE_GO_AWAY, 0, 0, 0))
            await self.drain()
        self._shut()
        tasks = [t for t in (self._reader, *self._tasks) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
