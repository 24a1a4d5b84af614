"""This machine's network interfaces and the IPv4 addresses to use: the one interface
enumeration of the project (mDNS on both sides, and ``plasmd serve``'s default URL host).

Interfaces are enumerated with ``ifaddr``, python-zeroconf's own dependency (and what zeroconf
tells callers to use), so it is always installed with it. ``select_ipv4`` is the pure rule.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from ..errors import TxtError, UsageError
from .records import is_ip

LOOPBACK = "127.0.0.1"


def interface_addresses() -> list[tuple[str, list[str]]]:
    """Every (interface name, addresses) pair of this machine, in the system's order."""
    import ifaddr

    result = []
    for adapter in ifaddr.get_adapters():
        ips = [ip.ip for ip in adapter.ips if isinstance(ip.ip, str)]
        result.append((adapter.nice_name or adapter.name, ips))
    return result


def ipv4_networks(addresses: Sequence[str]) -> list[str]:
    """The networks (``10.0.0.0/24``) that these local addresses are on."""
    import ifaddr

    wanted = set(addresses)
    return [
        str(ipaddress.IPv4Interface(f"{ip.ip}/{ip.network_prefix}").network)
        for adapter in ifaddr.get_adapters()
        for ip in adapter.ips
        if isinstance(ip.ip, str) and ip.ip in wanted
    ]


def select_ipv4(
    interfaces: Iterable[tuple[str, Sequence[str]]], wanted: Sequence[str] | None
) -> list[tuple[str, str]]:
    """Choose (interface, IPv4 address) pairs to use for mDNS.

    ``interfaces`` is every (name, addresses) pair of the machine. ``wanted`` lists interface
    names or IPv4 addresses; None means every IPv4 address that is not loopback. Raises
    TxtError naming anything wanted that does not exist.
    """
    pairs = [(name, addr) for name, addrs in interfaces for addr in addrs if is_ip(addr, 4)]
    if wanted is None:
        return [(n, a) for n, a in pairs if not ipaddress.IPv4Address(a).is_loopback]
    chosen: list[tuple[str, str]] = []
    for item in wanted:
        matches = [(n, a) for n, a in pairs if item in (n, a)]
        if not matches:
            raise TxtError(f"no interface or IPv4 address {item!r} on this machine")
        chosen += [m for m in matches if m not in chosen]
    return chosen


def choose_ipv4(wanted: Sequence[str] | None) -> list[tuple[str, str]]:
    """(interface, IPv4 address) pairs for mDNS: ``wanted`` names/addresses, or all non-loopback.

    An unknown wanted interface or address is a UsageError (the operator's mistake).
    """
    try:
        return select_ipv4(interface_addresses(), wanted)
    except TxtError as exc:
        raise UsageError(f"mDNS: {exc}") from exc


def primary_ipv4() -> str:
    """The first non-loopback IPv4 address of this host, else 127.0.0.1 (no packets sent)."""
    try:
        pairs = select_ipv4(interface_addresses(), None)
    except OSError:
        pairs = []
    return pairs[0][1] if pairs else LOOPBACK
