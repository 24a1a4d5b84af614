"""Hosts and ports as text: ``HOST:PORT`` addresses of DHT bootstrap nodes, from flags, config
files and the kernel command line (``phase.bootstrap=host:port,...``), and a host as it stands in
a URL. Pure.

A bootstrap word starting with ``/`` is a libp2p multiaddr of the libp2p Kademlia DHT
(``/ip4/1.2.3.4/tcp/4001/p2p/12D3KooW...``): kept as its text here (``Contact`` is
``(host, port)`` or that text) and parsed fully by ``phase_client.libp2p.multiaddr`` where it is
used."""

from __future__ import annotations

from collections.abc import Iterable

from .errors import UsageError

CMDLINE_PARAM = "phase.bootstrap"
MAX_BOOTSTRAP = 32
MAX_MULTIADDR_TEXT = 512

# A bootstrap contact: (host, port) of the private DHT, or a libp2p multiaddr's text.
Contact = tuple[str, int] | str


def url_host(host: str) -> str:
    """``host`` as a URL's host part: an IPv6 address in brackets (once), others as they are.

    A link-local address's zone (``fe80::1%eth0``) is written as RFC 6874 says:
    ``[fe80::1%25eth0]`` (urllib3 and curl read it back; browsers may not).
    """
    if host.startswith("[") or ":" not in host:
        return host
    address, sep, zone = host.partition("%")
    return f"[{address}%25{zone}]" if sep else f"[{address}]"


def host_from_url(hostname: str) -> str:
    """A host as ``urllib.parse`` hands it over (``fe80::1%25eth0``) back to an address
    (``fe80::1%eth0``); other hosts unchanged."""
    address, sep, zone = hostname.partition("%")
    if sep and ":" in address and zone.startswith("25"):
        return f"{address}%{zone[2:]}"
    return hostname


def parse_host_port(text: str, what: str = "address") -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); UsageError otherwise."""
    value = text.strip()
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        ok = bool(sep and host and port_text)
    else:
        host, sep, port_text = value.rpartition(":")
        ok = bool(sep and host and ":" not in host)
    # At most 5 digits: a port is below 65536, and int() raises its own ValueError past 4300.
    if (
        not ok
        or not host.isprintable()
        or any(c.isspace() for c in host)
        or not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5)
        or not 0 < int(port_text) < 65536
    ):
        raise UsageError(f"invalid {what} {text!r} (want HOST:PORT)")
    return host, int(port_text)


def parse_contact(text: str) -> Contact:
    """A bootstrap word: a multiaddr's text (starts with ``/``; only its shape is checked here)
    or ``host:port``; UsageError otherwise."""
    value = text.strip()
    if not value.startswith("/"):
        return parse_host_port(value, "bootstrap address")
    if (
        len(value) > MAX_MULTIADDR_TEXT
        or not value.isprintable()
        or any(c.isspace() or c == "," for c in value)
        or "//" in value
    ):
        raise UsageError(f"invalid bootstrap multiaddr {value[:60]!r}")
    return value


def split_contacts(contacts: Iterable[Contact]) -> tuple[list[tuple[str, int]], list[str]]:
    """(``host:port`` contacts of the private DHT, libp2p multiaddr texts)."""
    pairs: list[tuple[str, int]] = []
    multiaddrs: list[str] = []
    for contact in contacts:
        if isinstance(contact, str):
            multiaddrs.append(contact)
        else:
            pairs.append(contact)
    return pairs, multiaddrs


def parse_contact_list(text: str) -> list[Contact]:
    """Comma- or whitespace-separated bootstrap words: ``host:port`` and multiaddrs."""
    items = [item for item in text.replace(",", " ").split() if item]
    if len(items) > MAX_BOOTSTRAP:
        raise UsageError(f"at most {MAX_BOOTSTRAP} bootstrap nodes")
    return [parse_contact(item) for item in items]


def parse_bootstrap_list(text: str) -> list[tuple[str, int]]:
    """Comma- or whitespace-separated ``host:port`` list (config files, kernel command line)."""
    items = [item for item in text.replace(",", " ").split() if item]
    if len(items) > MAX_BOOTSTRAP:
        raise UsageError(f"at most {MAX_BOOTSTRAP} bootstrap nodes")
    return [parse_host_port(item, "bootstrap address") for item in items]


def contacts_from_cmdline(cmdline: str) -> list[Contact]:
    """Every contact of ``phase.bootstrap=`` on a kernel command line (last one wins):
    ``host:port`` and libp2p multiaddrs."""
    found: list[Contact] = []
    for word in cmdline.split():
        name, sep, value = word.partition("=")
        if sep and name == CMDLINE_PARAM:
            found = parse_contact_list(value)
    return found


def bootstrap_from_cmdline(cmdline: str) -> list[tuple[str, int]]:
    """``host:port`` contacts from ``phase.bootstrap=host:port,...`` on a kernel command line
    (last one wins); its multiaddrs are for ``contacts_from_cmdline``."""
    return split_contacts(contacts_from_cmdline(cmdline))[0]


def bootstrap_from_proc() -> list[Contact]:
    """``phase.bootstrap=`` of the running kernel, if any (a bad value is ignored here)."""
    try:
        with open("/proc/cmdline", encoding="utf-8", errors="replace") as handle:
            return contacts_from_cmdline(handle.read())
    except (OSError, UsageError):
        return []
