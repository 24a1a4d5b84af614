"""Hosts and ports as text: ``HOST:PORT`` addresses of DHT bootstrap nodes, from flags, config
files and the kernel command line (``phase.bootstrap=host:port,...``), and a host as it stands in
a URL. Pure."""

from __future__ import annotations

from .errors import UsageError

CMDLINE_PARAM = "phase.bootstrap"
MAX_BOOTSTRAP = 32


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


def parse_bootstrap_list(text: str) -> list[tuple[str, int]]:
    """Comma- or whitespace-separated ``host:port`` list (config files, kernel command line)."""
    items = [item for item in text.replace(",", " ").split() if item]
    if len(items) > MAX_BOOTSTRAP:
        raise UsageError(f"at most {MAX_BOOTSTRAP} bootstrap nodes")
    return [parse_host_port(item, "bootstrap address") for item in items]


def bootstrap_from_cmdline(cmdline: str) -> list[tuple[str, int]]:
    """Contacts from ``phase.bootstrap=host:port,...`` on a kernel command line (last one wins)."""
    found: list[tuple[str, int]] = []
    for word in cmdline.split():
        name, sep, value = word.partition("=")
        if sep and name == CMDLINE_PARAM:
            found = parse_bootstrap_list(value)
    return found


def bootstrap_from_proc() -> list[tuple[str, int]]:
    """``phase.bootstrap=`` of the running kernel, if any (a bad value is ignored here)."""
    try:
        with open("/proc/cmdline", encoding="utf-8", errors="replace") as handle:
            return bootstrap_from_cmdline(handle.read())
    except (OSError, UsageError):
        return []
