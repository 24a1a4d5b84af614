"""This machine's network interfaces and the IPv4 addresses mDNS should use (I/O; the rule
itself is ``mdns_records.select_ipv4``)."""

from __future__ import annotations

from collections.abc import Sequence

from .errors import UsageError
from .mdns_records import TxtError, select_ipv4


def interface_addresses() -> list[tuple[str, list[str]]]:
    """Every (interface name, addresses) pair of this machine.

    ``ifaddr`` is python-zeroconf's own dependency (and what zeroconf tells callers to use for
    enumerating interfaces), so it is always installed with it.
    """
    import ifaddr

    result = []
    for adapter in ifaddr.get_adapters():
        ips = [ip.ip for ip in adapter.ips if isinstance(ip.ip, str)]
        result.append((adapter.nice_name or adapter.name, ips))
    return result


def ipv4_networks(addresses: Sequence[str]) -> list[str]:
    """The networks (``10.0.0.0/24``) that these local addresses are on."""
    import ipaddress

    import ifaddr

    wanted = set(addresses)
    return [
        str(ipaddress.IPv4Interface(f"{ip.ip}/{ip.network_prefix}").network)
        for adapter in ifaddr.get_adapters()
        for ip in adapter.ips
        if isinstance(ip.ip, str) and ip.ip in wanted
    ]


def choose_ipv4(wanted: Sequence[str] | None) -> list[tuple[str, str]]:
    """(interface, IPv4 address) pairs for mDNS: ``wanted`` names/addresses, or all non-loopback.

    An unknown wanted interface or address is a UsageError (the operator's mistake).
    """
    try:
        return select_ipv4(interface_addresses(), wanted)
    except TxtError as exc:
        raise UsageError(f"mDNS: {exc}") from exc
