"""What goes into and comes out of the ``_phase-image._tcp`` mDNS records. Pure: no sockets.

Shared by the side that announces (``mdns/register.py``, driven by ``provider/advertise_mdns.py``)
and the side that browses (``mdns/browse.py``, driven by ``discovery/mdns.py``), so both agree on
one definition of the TXT keys, their limits, the instance names and the tie rule. See
docs/mdns.md for the wire format.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple
from urllib.parse import urlsplit, urlunsplit

from ..errors import TxtError as TxtError  # defined with every user-visible error
from ..hostport import host_from_url, url_host
from ..names import CHANNEL_RE, normalize_arch

SERVICE_TYPE = "_phase-image._tcp.local."
TXT_VERSION = "1"
# DNS-SD allows 255 bytes per key=value; the whole record is kept small so one answer, with its
# SRV and A records, fits a single unfragmented packet and no client has to parse much.
MAX_TXT_STRING = 255
MAX_TXT_BYTES = 400
MAX_VERSION_CHARS = 64
# An instance name is one DNS label (63 bytes); keep room for a conflict suffix like "-99".
MAX_INSTANCE_LABEL = 63
MAX_BASE_LABEL = MAX_INSTANCE_LABEL - 3
REQUIRED_KEYS = ("txtvers", "channel", "arch", "manifest")

_PRINTABLE = re.compile(r"^[\x21-\x7e]+\Z")  # visible ASCII, no spaces
_HOST_LABEL_BAD = re.compile(r"[^A-Za-z0-9-]+")


class TxtInfo(NamedTuple):
    """The validated content of one provider's TXT record."""

    channel: str
    arch: str
    manifest_url: str
    version: str | None


def base_instance_name(channel: str, arch: str) -> str:
    """``phase-<channel>-<arch>``: the instance label before any conflict suffix."""
    label = f"phase-{channel}-{normalize_arch(arch)}"
    if len(label.encode()) > MAX_BASE_LABEL:
        raise TxtError(f"instance name {label!r} is longer than {MAX_BASE_LABEL} bytes")
    return label


def instance_label(full_name: str) -> str:
    """``phase-stable-arm64-2._phase-image._tcp.local.`` -> ``phase-stable-arm64-2``."""
    suffix = "." + SERVICE_TYPE
    return full_name[: -len(suffix)] if full_name.endswith(suffix) else full_name.rstrip(".")


def full_service_name(label: str) -> str:
    return f"{label}.{SERVICE_TYPE}"


def mdns_hostname(name: str) -> str:
    """A usable ``<label>.local.`` host name from a machine's host name (first label only)."""
    first = name.strip().split(".", 1)[0]
    label = _HOST_LABEL_BAD.sub("-", first).strip("-")[:MAX_INSTANCE_LABEL] or "phase-provider"
    return f"{label}.local."


def txt_size(properties: Mapping[str, str]) -> int:
    """Bytes on the wire: one length byte plus ``key=value`` per entry."""
    return sum(1 + len(k.encode()) + 1 + len(v.encode()) for k, v in properties.items())


def check_manifest_url(url: str) -> str:
    """An absolute http(s) URL with a host and a path, no spaces or control characters."""
    if not _PRINTABLE.match(url) or len(url.encode()) > MAX_TXT_STRING - len("manifest="):
        raise TxtError("manifest URL has spaces, control characters or is too long")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TxtError(f"manifest URL {url!r} is not a URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TxtError(f"manifest URL {url!r} is not an absolute http(s) URL")
    if port == 0 or not parts.path.startswith("/") or parts.fragment:
        raise TxtError(f"manifest URL {url!r} has no path, port 0 or a fragment")
    return url


def build_txt(channel: str, arch: str, manifest_url: str, version: str | None) -> dict[str, str]:
    """The TXT properties a provider announces for one channel/arch; raises TxtError if invalid."""
    if not CHANNEL_RE.match(channel):
        raise TxtError(f"invalid channel {channel!r}")
    arch = normalize_arch(arch)
    if not CHANNEL_RE.match(arch):
        raise TxtError(f"invalid arch {arch!r}")
    properties = {
        "txtvers": TXT_VERSION,
        "channel": channel,
        "arch": arch,
        "manifest": check_manifest_url(manifest_url),
    }
    if version is not None:
        if not _PRINTABLE.match(version) or len(version) > MAX_VERSION_CHARS:
            raise TxtError(f"version {version!r} is not short printable ASCII without spaces")
        properties["version"] = version
    if txt_size(properties) > MAX_TXT_BYTES:
        raise TxtError(f"TXT record would be {txt_size(properties)} bytes (max {MAX_TXT_BYTES})")
    return properties


def _decode(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        return None


# What zeroconf hands over (bytes keys and values, a value None for a key without "="), or
# what a test writes by hand (str).
TxtProperties = (
    Mapping[bytes, bytes | None]
    | Mapping[str, str | None]
    | Mapping[bytes | str, bytes | str | None]
)


def parse_txt(properties: TxtProperties) -> TxtInfo:
    """Validate a TXT record received from the network; raises TxtError for anything off."""
    text: dict[str, str] = {}
    size = 0
    for raw_key, raw_value in properties.items():
        key, value = _decode(raw_key), _decode(raw_value)
        if key is None:
            raise TxtError("TXT key is not ASCII")
        if raw_value is not None and value is None:
            raise TxtError(f"TXT value of {key!r} is not ASCII")
        size += 1 + len(key) + (0 if value is None else 1 + len(value))
        if value is not None:
            text[key.lower()] = value
    if size > MAX_TXT_BYTES:
        raise TxtError(f"TXT record is {size} bytes (max {MAX_TXT_BYTES})")
    missing = [k for k in REQUIRED_KEYS if k not in text]
    if missing:
        raise TxtError(f"TXT record lacks {', '.join(missing)}")
    if text["txtvers"] != TXT_VERSION:
        raise TxtError(f"unsupported txtvers {text['txtvers']!r}")
    version = text.get("version")
    rebuilt = build_txt(text["channel"], text["arch"], text["manifest"], version)
    return TxtInfo(
        channel=rebuilt["channel"],
        arch=rebuilt["arch"],
        manifest_url=rebuilt["manifest"],
        version=rebuilt.get("version"),
    )


def decode_txt_wire(data: bytes) -> dict[bytes, bytes | None]:
    """RFC 6763 TXT rdata (length-prefixed ``key=value`` strings) to a dict; first key wins."""
    result: dict[bytes, bytes | None] = {}
    index = 0
    while index < len(data):
        length = data[index]
        chunk = data[index + 1 : index + 1 + length]
        index += 1 + length
        key, sep, value = chunk.partition(b"=")
        if key and key.lower() not in result:
            result[key.lower()] = value if sep else None
    return result


def manifest_url_for(
    offer_url: str,
    manifest_path: str,
    port: int,
    addresses: Sequence[str],
    advertise_host: str | None,
) -> str:
    """The manifest URL to announce.

    ``advertise_host`` wins; else the offer's own URL if its host is one of the announced
    addresses (or a name, which the operator chose); else the preferred announced address
    (``url_address_order``: IPv4, then global/unique-local IPv6, then link-local IPv6 without
    its zone, which only means something on the announcing machine), so a client on that link
    can reach it (``reachable_url`` adds the client's own zone).
    """
    if advertise_host:
        return f"http://{url_host(advertise_host)}:{port}{manifest_path}"
    host = host_from_url(urlsplit(offer_url).hostname or "")
    bare = {strip_zone(a) for a in addresses}
    if (host and not is_ip(host)) or (host and not is_link_local(host) and host in bare):
        return offer_url
    if not addresses:
        return offer_url
    parts = urlsplit(offer_url)
    netloc = f"{url_host(strip_zone(url_address_order(addresses)[0]))}:{port}"
    return urlunsplit((parts.scheme or "http", netloc, manifest_path, "", ""))


def is_ip(host: str, version: int | None = None) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return version is None or address.version == version


def strip_zone(address: str) -> str:
    """``fe80::1%eth0`` -> ``fe80::1``; anything else unchanged."""
    return address.split("%", 1)[0] if ":" in address else address


def zone_of(address: str) -> str | None:
    """``fe80::1%eth0`` -> ``eth0``; None without a zone."""
    _, sep, zone = address.partition("%")
    return zone if sep and ":" in address and zone else None


def is_link_local(address: str) -> bool:
    """An IPv6 link-local address (``fe80::/10``), with or without its zone."""
    try:
        ip = ipaddress.ip_address(strip_zone(address))
    except ValueError:
        return False
    return ip.version == 6 and ip.is_link_local


def url_address_order(addresses: Sequence[str]) -> list[str]:
    """Addresses best first for a URL: IPv4, then global/unique-local IPv6, then link-local
    IPv6 (reachable only with a zone, on one link); the order among equals is kept."""

    def rank(address: str) -> int:
        if is_ip(address, 4):
            return 0
        return 2 if is_link_local(address) else 1

    return sorted(addresses, key=rank)


def on_link(address: str, local_networks: Sequence[str]) -> bool:
    """Can this machine reach ``address`` directly: an IPv4 or global/unique-local IPv6 address
    in one of its networks (CIDR strings), or a link-local IPv6 address with a zone."""
    if is_link_local(address):
        return zone_of(address) is not None
    try:
        ip = ipaddress.ip_address(strip_zone(address))
    except ValueError:
        return False
    for network in local_networks:
        net = ipaddress.ip_network(network, strict=False)
        if net.version == ip.version and ip in net:
            return True
    return False


def reachable_url(url: str, service_addresses: Sequence[str], local_networks: Sequence[str]) -> str:
    """The manifest URL with its host moved to an address of the provider on our own link.

    A provider announces one TXT record on all its interfaces, so the URL may name its address
    on another network, or of a family this client has no address of (a dual-stack provider, an
    IPv6-only client), or a link-local IPv6 address without the zone only the client knows.
    When the URL's host is one of the service's own A/AAAA records (so the same machine), and it
    is not on any of our networks (CIDR strings), the URL uses the best of the service's
    addresses that is (``url_address_order``); a link-local one carries the zone of the
    interface the answer came in on (``service_addresses`` hold it: ``fe80::5%eth0``), written
    as RFC 6874 says (``[fe80::5%25eth0]``). Anything else is unchanged.
    """
    parts = urlsplit(url)
    host = host_from_url(parts.hostname or "")
    if not is_ip(strip_zone(host)):
        return url
    same = [a for a in service_addresses if _same_ip(a, host)]
    if not same:
        return url
    if on_link(host, local_networks):
        return url
    scoped = [a for a in same if on_link(a, local_networks)]
    candidates = scoped + url_address_order(
        [a for a in service_addresses if a not in same and on_link(a, local_networks)]
    )
    if not candidates:
        return url
    address = url_host(candidates[0])
    netloc = address if parts.port is None else f"{address}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def _same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(strip_zone(a)) == ipaddress.ip_address(strip_zone(b))
    except ValueError:
        return False


def tie_keeper(own_manifest_url: str, other_manifest_urls: Iterable[str]) -> bool:
    """After a simultaneous probe both providers hold one name: does this one keep it?

    Both sides evaluate the same rule on the same data (each other's manifest URL), so exactly
    one keeps the name: the one whose URL's host:port sorts lowest.
    """
    own = urlsplit(own_manifest_url).netloc
    return all(own < urlsplit(u).netloc for u in other_manifest_urls if urlsplit(u).netloc != own)
