"""Multiaddrs, text and binary: what libp2p peers exchange as addresses. Pure.

Parsed fully or refused (``MultiaddrError``): a peer's address list may hold addresses we cannot
decode (a protocol unknown here makes the rest of that address unreadable), and such an address
is dropped, never guessed at. Bounded: at most ``MAX_BYTES`` bytes and ``MAX_PARTS`` parts.

Two uses: ``tcp_target`` (where to dial a Kademlia peer: ``/ip4|ip6|dns*/.../tcp/P`` with
nothing but ``/p2p/ID`` after it) and ``http_url`` (a provider's HTTP endpoint,
``/ip4/A/tcp/P/http`` -> ``http://A:P`` + path).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..hostport import url_host
from . import varint
from .errors import MultiaddrError, ProtocolError
from .peerid import PeerId

MAX_BYTES = 1024
MAX_PARTS = 16
MAX_NAME = 253
VAR = -1

# code, name, size in bytes (VAR: varint-length-prefixed)
_TABLE: tuple[tuple[int, str, int], ...] = (
    (4, "ip4", 4),
    (6, "tcp", 2),
    (33, "dccp", 2),
    (41, "ip6", 16),
    (42, "ip6zone", VAR),
    (43, "ipcidr", 1),
    (53, "dns", VAR),
    (54, "dns4", VAR),
    (55, "dns6", VAR),
    (56, "dnsaddr", VAR),
    (132, "sctp", 2),
    (273, "udp", 2),
    (275, "p2p-webrtc-star", 0),
    (276, "p2p-webrtc-direct", 0),
    (277, "p2p-stardust", 0),
    (280, "webrtc-direct", 0),
    (281, "webrtc", 0),
    (290, "p2p-circuit", 0),
    (301, "udt", 0),
    (302, "utp", 0),
    (400, "unix", VAR),
    (421, "p2p", VAR),
    (443, "https", 0),
    (444, "onion", 12),
    (445, "onion3", 37),
    (446, "garlic64", VAR),
    (447, "garlic32", VAR),
    (448, "tls", 0),
    (449, "sni", VAR),
    (454, "noise", 0),
    (460, "quic", 0),
    (461, "quic-v1", 0),
    (465, "webtransport", 0),
    (466, "certhash", VAR),
    (477, "ws", 0),
    (478, "wss", 0),
    (479, "p2p-websocket-star", 0),
    (480, "http", 0),
    (481, "http-path", VAR),
    (777, "memory", 8),
)
_BY_CODE = {code: (name, size) for code, name, size in _TABLE}
_BY_NAME = {name: (code, size) for code, name, size in _TABLE}
_BY_NAME["ipfs"] = _BY_NAME["p2p"]  # the old name of /p2p
_TEXT_NAMES = {"dns", "dns4", "dns6", "dnsaddr", "sni", "ip6zone", "unix", "http-path"}


def _check_name(name: str, value: str) -> str:
    if (
        not value
        or len(value) > MAX_NAME
        or not value.isprintable()
        or any(c.isspace() or c == "/" for c in value)
    ) and name != "unix":
        raise MultiaddrError(f"multiaddr: invalid /{name} value {value[:40]!r}")
    return value


def _value_to_bytes(name: str, size: int, text: str) -> bytes:
    if name == "ip4":
        try:
            return ipaddress.IPv4Address(text).packed
        except ValueError:
            raise MultiaddrError(f"multiaddr: invalid IPv4 address {text[:40]!r}") from None
    if name == "ip6":
        try:
            return ipaddress.IPv6Address(text).packed
        except ValueError:
            raise MultiaddrError(f"multiaddr: invalid IPv6 address {text[:40]!r}") from None
    if name in ("tcp", "udp", "dccp", "sctp"):
        if not (text.isascii() and text.isdigit() and len(text) <= 5 and int(text) < 65536):
            raise MultiaddrError(f"multiaddr: invalid port {text[:40]!r}")
        return int(text).to_bytes(2, "big")
    if name == "p2p":
        return PeerId.from_text(text).raw
    if name in _TEXT_NAMES:
        return _check_name(name, text).encode()
    raise MultiaddrError(f"multiaddr: /{name} values are not supported in text here")


def _value_to_text(name: str, value: bytes) -> str:
    if name == "ip4":
        return str(ipaddress.IPv4Address(value))
    if name == "ip6":
        return str(ipaddress.IPv6Address(value))
    if name in ("tcp", "udp", "dccp", "sctp"):
        return str(int.from_bytes(value, "big"))
    if name == "p2p":
        return str(PeerId.from_bytes(value))
    if name in _TEXT_NAMES:
        try:
            return _check_name(name, value.decode("utf-8"))
        except UnicodeDecodeError:
            raise MultiaddrError(f"multiaddr: /{name} value is not UTF-8") from None
    return "0x" + value.hex()  # shown only (certhash, onion, ...): never parsed back


@dataclass(frozen=True)
class Multiaddr:
    parts: tuple[tuple[str, bytes], ...]  # (protocol name, binary value)

    @classmethod
    def from_text(cls, text: str) -> Multiaddr:
        if len(text) > MAX_BYTES * 2 or not text.startswith("/"):
            raise MultiaddrError(f"not a multiaddr: {text[:60]!r} (want /ip4/A/tcp/P/...)")
        words = text.strip("/").split("/") if text.strip("/") else []
        parts: list[tuple[str, bytes]] = []
        i = 0
        while i < len(words):
            name = words[i]
            if name not in _BY_NAME:
                raise MultiaddrError(f"multiaddr: unknown protocol /{name[:40]}")
            code, size = _BY_NAME[name]
            canonical = _BY_CODE[code][0]
            if size == 0:
                parts.append((canonical, b""))
                i += 1
                continue
            if i + 1 >= len(words):
                raise MultiaddrError(f"multiaddr: /{name} needs a value")
            if canonical == "unix":  # the rest is the path
                value = "/" + "/".join(words[i + 1 :])
                parts.append((canonical, value.encode()))
                break
            parts.append((canonical, _value_to_bytes(canonical, size, words[i + 1])))
            i += 2
        if not parts or len(parts) > MAX_PARTS:
            raise MultiaddrError(f"multiaddr: want 1 to {MAX_PARTS} parts: {text[:60]!r}")
        result = cls(tuple(parts))
        if len(result.to_bytes()) > MAX_BYTES:
            raise MultiaddrError("multiaddr too long")
        return result

    @classmethod
    def from_bytes(cls, data: bytes) -> Multiaddr:
        if not data or len(data) > MAX_BYTES:
            raise MultiaddrError("binary multiaddr empty or too long")
        parts: list[tuple[str, bytes]] = []
        offset = 0
        try:
            while offset < len(data):
                if len(parts) >= MAX_PARTS:
                    raise MultiaddrError(f"multiaddr with more than {MAX_PARTS} parts")
                code, offset = varint.decode(data, offset)
                if code not in _BY_CODE:
                    raise MultiaddrError(f"multiaddr: unknown protocol code {code}")
                name, size = _BY_CODE[code]
                if size == VAR:
                    size, offset = varint.decode(data, offset)
                if size > len(data) - offset:
                    raise MultiaddrError(f"multiaddr: truncated /{name}")
                value = bytes(data[offset : offset + size])
                offset += size
                _value_to_text(name, value)  # validates
                parts.append((name, value))
        except ProtocolError as exc:
            raise MultiaddrError(f"binary multiaddr: {exc}") from None
        return cls(tuple(parts))

    def to_bytes(self) -> bytes:
        out = bytearray()
        for name, value in self.parts:
            code, size = _BY_NAME[name]
            out += varint.encode(code)
            if size == VAR:
                out += varint.encode(len(value))
            out += value
        return bytes(out)

    def __str__(self) -> str:
        words = []
        for name, value in self.parts:
            words.append("/" + name)
            if _BY_NAME[name][1] != 0:
                text = _value_to_text(name, value)
                words.append(text if name == "unix" else "/" + text)
        return "".join(words)

    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.parts)

    def peer_id(self) -> PeerId | None:
        """The ``/p2p/ID`` at the end, if any."""
        if self.parts and self.parts[-1][0] == "p2p":
            return PeerId.from_bytes(self.parts[-1][1])
        return None

    def without_peer_id(self) -> Multiaddr:
        if self.parts and self.parts[-1][0] == "p2p":
            return Multiaddr(self.parts[:-1])
        return self

    def with_peer_id(self, peer: PeerId) -> Multiaddr:
        return Multiaddr((*self.without_peer_id().parts, ("p2p", peer.raw)))

    def _host_port(self) -> tuple[str, str, int] | None:
        """(host protocol, host, port) of a leading ``/ip4|ip6|dns*/H/tcp/P``."""
        if len(self.parts) < 2 or self.parts[1][0] != "tcp":
            return None
        name, value = self.parts[0]
        if name not in ("ip4", "ip6", "dns", "dns4", "dns6"):
            return None
        return name, _value_to_text(name, value), int.from_bytes(self.parts[1][1], "big")

    def tcp_target(self) -> tuple[str, int] | None:
        """(host, port) when this is a plain TCP libp2p address (``/p2p/ID`` may follow);
        None for anything else (QUIC, websockets, relays, HTTP)."""
        found = self._host_port()
        if found is None:
            return None
        rest = self.without_peer_id().parts[2:]
        return (found[1], found[2]) if not rest else None

    def http_url(self, path: str = "") -> str | None:
        """``http://A:P`` + path for ``/ip4|ip6|dns*/A/tcp/P/http`` (``/https``, ``/tls/http``:
        https), ``/p2p/ID`` may follow; None for any other address."""
        found = self._host_port()
        if found is None:
            return None
        rest = self.without_peer_id().names()[2:]
        if rest == ("http",):
            scheme = "http"
        elif rest in (("https",), ("tls", "http")):
            scheme = "https"
        else:
            return None
        _, host, port = found
        if port == 0:
            return None
        return f"{scheme}://{url_host(host)}:{port}{path}"


def http_multiaddr(host: str, port: int, scheme: str = "http") -> Multiaddr:
    """The multiaddr a provider advertises for its HTTP endpoint ``host:port``."""
    try:
        version = ipaddress.ip_address(host).version
        proto = "ip4" if version == 4 else "ip6"
    except ValueError:
        proto = "dns"
    return Multiaddr.from_text(f"/{proto}/{host}/tcp/{port}/{scheme}")


def is_multiaddr_text(text: str) -> bool:
    return text.strip().startswith("/")
