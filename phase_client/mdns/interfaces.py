"""This machine's network interfaces and the addresses to use: the one interface enumeration of
the project (mDNS on both sides, and ``plasmd serve``'s default URL host).

Interfaces are enumerated with ``ifaddr``, python-zeroconf's own dependency (and what zeroconf
tells callers to use), so it is always installed with it. IPv6 addresses still in duplicate
address detection (``tentative`` in ``ip addr``: nothing can bind them yet), temporary (privacy)
and deprecated ones are left out while ``/proc/net/if_inet6`` says so; a link-local IPv6
address carries its zone (``fe80::1%eth0``).
``select_addresses``/``select_ipv4`` and ``zeroconf_interfaces`` are the pure rules.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from ..errors import TxtError, UsageError
from .records import is_ip, is_link_local, strip_zone

LOOPBACK = "127.0.0.1"
IF_INET6 = "/proc/net/if_inet6"
# linux/if_addr.h: IFA_F_TENTATIVE and IFA_F_DADFAILED (not usable yet, or ever),
# IFA_F_TEMPORARY (a privacy address, for outgoing connections, replaced every few hours) and
# IFA_F_DEPRECATED (going away): none of them is an address to announce a service on.
_UNUSABLE_FLAGS = 0x40 | 0x08 | 0x01 | 0x20


# linux/if_addr.h and ipv6.h: the scope of a link-local address in /proc/net/if_inet6.
_SCOPE_LINK = 0x20
# Not usable yet, or ever: IFA_F_TENTATIVE (duplicate address detection runs) and
# IFA_F_DADFAILED.
_NOT_YET_FLAGS = 0x40 | 0x08


def _if_inet6(text: str) -> list[tuple[str, str, int, int]]:
    """(interface, address, scope, flags) of each line of ``/proc/net/if_inet6``'s ``text``;
    malformed lines are skipped."""
    rows = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 6:
            continue
        try:
            address = str(ipaddress.IPv6Address(int(fields[0], 16)))
            rows.append((fields[5], address, int(fields[3], 16), int(fields[4], 16)))
        except ValueError:
            continue
    return rows


def _read_if_inet6() -> str:
    try:
        with open(IF_INET6, encoding="ascii") as handle:
            return handle.read()
    except OSError:
        return ""


def _unusable_ipv6() -> set[tuple[str, str]]:
    """(interface, address) pairs not to announce a service on (``_UNUSABLE_FLAGS``)."""
    return {
        (name, address)
        for name, address, _, flags in _if_inet6(_read_if_inet6())
        if flags & _UNUSABLE_FLAGS
    }


def usable_link_local(text: str | None = None) -> list[tuple[str, str]]:
    """(interface, address) of each link-local IPv6 address that is usable (its duplicate
    address detection over): what mDNS and a provider on the same link need, no lease of any
    kind. ``text``: ``/proc/net/if_inet6``'s (default: read now; no file, no IPv6: none)."""
    rows = _if_inet6(_read_if_inet6() if text is None else text)
    return [
        (name, address)
        for name, address, scope, flags in rows
        if scope == _SCOPE_LINK and not flags & _NOT_YET_FLAGS and name != "lo"
    ]


# (interface, [(address, prefix length)]) for every interface: one look at the machine's.
Enumerated = list[tuple[str, list[tuple[str, int]]]]


def enumerate_interfaces() -> Enumerated:
    """(interface, [(address, prefix length)]) for every interface, both families. A caller
    needing both the addresses and the networks passes one look to both (each look lists the
    adapters through ctypes and reads ``/proc/net/if_inet6``: tens of ms under emulation)."""
    import ifaddr

    unusable = _unusable_ipv6()
    result = []
    for adapter in ifaddr.get_adapters():
        name = adapter.nice_name or adapter.name
        ips: list[tuple[str, int]] = []
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                ips.append((ip.ip, ip.network_prefix))
                continue
            address = str(ip.ip[0]).split("%", 1)[0]
            if (name, address) in unusable:
                continue
            if is_link_local(address):
                address = f"{address}%{name}"
            ips.append((address, ip.network_prefix))
        result.append((name, ips))
    return result


def interface_addresses(seen: Enumerated | None = None) -> list[tuple[str, list[str]]]:
    """Every (interface name, addresses) pair of this machine, in the system's order.

    IPv4 first as ``ifaddr`` lists them, then usable IPv6 (link-local ones with their zone).
    ``seen``: a look taken by ``enumerate_interfaces`` (default: one now).
    """
    seen = enumerate_interfaces() if seen is None else seen
    return [(name, [address for address, _ in ips]) for name, ips in seen]


def local_networks(
    addresses: Sequence[str] | None = None, seen: Enumerated | None = None
) -> list[str]:
    """The networks (``10.0.0.0/24``, ``fd00:213:1::/64``) these local addresses are on
    (None: every address of the machine). Loopback and link-local IPv6 are left out: every
    link has ``fe80::/64``, so it says nothing about which link (see ``records.on_link``).
    ``seen``: a look taken by ``enumerate_interfaces`` (default: one now)."""
    wanted = None if addresses is None else {strip_zone(a) for a in addresses}
    networks: list[str] = []
    for _, ips in enumerate_interfaces() if seen is None else seen:
        for address, prefix in ips:
            bare = strip_zone(address)
            if (wanted is not None and bare not in wanted) or is_link_local(bare):
                continue
            if ipaddress.ip_address(bare).is_loopback:
                continue
            network = str(ipaddress.ip_interface(f"{bare}/{prefix}").network)
            if network not in networks:
                networks.append(network)
    return networks


def select_addresses(
    interfaces: Iterable[tuple[str, Sequence[str]]],
    wanted: Sequence[str] | None,
    versions: tuple[int, ...] = (4, 6),
) -> list[tuple[str, str]]:
    """Choose (interface, address) pairs of the IP ``versions`` to use for mDNS.

    ``interfaces`` is every (name, addresses) pair of the machine. ``wanted`` lists interface
    names or addresses; None means every address that is not loopback. Raises TxtError naming
    anything wanted that does not exist.
    """
    pairs = [
        (name, addr)
        for name, addrs in interfaces
        for addr in addrs
        if any(is_ip(strip_zone(addr), v) for v in versions)
    ]
    if wanted is None:
        return [(n, a) for n, a in pairs if not ipaddress.ip_address(strip_zone(a)).is_loopback]
    chosen: list[tuple[str, str]] = []
    for item in wanted:
        matches = [(n, a) for n, a in pairs if item in (n, a, strip_zone(a))]
        if not matches:
            raise TxtError(f"no interface or address {item!r} on this machine")
        chosen += [m for m in matches if m not in chosen]
    return chosen


def select_ipv4(
    interfaces: Iterable[tuple[str, Sequence[str]]], wanted: Sequence[str] | None
) -> list[tuple[str, str]]:
    """``select_addresses`` for IPv4 only."""
    return select_addresses(interfaces, wanted, (4,))


def choose_addresses(
    wanted: Sequence[str] | None, seen: Enumerated | None = None
) -> list[tuple[str, str]]:
    """(interface, address) pairs for mDNS, both families: ``wanted`` names/addresses, or every
    non-loopback one (in ``seen``, a look taken by ``enumerate_interfaces``; default: one now).
    An unknown wanted interface or address is a UsageError (the operator's mistake)."""
    try:
        return select_addresses(interface_addresses(seen), wanted)
    except TxtError as exc:
        raise UsageError(f"mDNS: {exc}") from exc


def zeroconf_interfaces(pairs: Sequence[tuple[str, str]]) -> list[str]:
    """What zeroconf is opened on for these (interface, address) pairs: every IPv4 address and
    one IPv6 address per interface (IPv6 multicast is joined per interface; its link-local
    address first, the one every IPv6 link has and mDNS answers come from)."""
    result = [a for _, a in pairs if is_ip(a, 4)]
    per_interface: dict[str, str] = {}
    for name, address in pairs:
        if is_ip(strip_zone(address), 6):
            known = per_interface.get(name)
            if known is None or (is_link_local(address) and not is_link_local(known)):
                per_interface[name] = address
    return result + list(per_interface.values())


def primary_address() -> str:
    """The address naming this host in URLs: its first non-loopback IPv4 address, else its
    first global or unique-local IPv6 address, else 127.0.0.1 (no packets sent)."""
    try:
        pairs = select_addresses(interface_addresses(), None)
    except OSError:
        pairs = []
    for address in [a for _, a in pairs if is_ip(a, 4)] + [a for _, a in pairs]:
        if not is_link_local(address):
            return address
    return LOOPBACK
