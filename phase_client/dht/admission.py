"""Who keeps a slot when a node's record store is full. Pure: no I/O, time is passed in.

Identities are free (an Ed25519 key each), so "first come keeps the slot" lets anyone who floods
a key first hold it, and "newest wins" lets a flood push out providers that are there. Network
locations are not free, so slots are shared out by where records come from:

- Every record carries *labels*: the subnet its STORE came from (/24 for IPv4, /64 for IPv6) and
  the subnet of its URL host (or, for a host name, its last two DNS labels). A provider that
  publishes its own URL from its own network has one label; records whose URLs point into one
  subnet count together however many addresses send them.
- When a key (or the whole node) is full, a newcomer whose labels are all held by fewer records
  than the most-held label evicts one record carrying that most-held label (max-min fairness: a
  flood from one subnet only ever displaces its own records). A newcomer that itself carries a
  most-held label competes only with the records sharing it.
- Among the candidates, records that went silent (no newer version for ``fresh_for`` seconds) go
  first, then those never refreshed, then refreshed ("established") ones; within each, the
  youngest goes first (tenure), so a provider that keeps republishing is never the one displaced
  by records that arrived after it.
- The node's own records (``pinned``) are never evicted and never counted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple
from urllib.parse import urlsplit

from .records import DEFAULT_REPUBLISH, DEFAULT_TTL, ProviderRecord

IPV4_PREFIX = 24
IPV6_PREFIX = 64
# A refresh counts only if it comes this long after the record was first stored: sending two
# versions back to back does not make an identity "established". The default republish
# interval (1800 s) is well above it.
DEFAULT_REFRESH_GAP = DEFAULT_REPUBLISH // 6
# A record not refreshed for this long (the default TTL: two default republish intervals) is
# the first to go, even though it may be signed valid for up to 7 days.
DEFAULT_FRESH_FOR = DEFAULT_TTL


class Policy(NamedTuple):
    refresh_gap: int = DEFAULT_REFRESH_GAP
    fresh_for: int = DEFAULT_FRESH_FOR


class Entry:
    """One held record and what admission knows about it (times on the storage clock). Equal
    only to itself: entries are kept in several indexes."""

    __slots__ = ("first_seen", "labels", "pinned", "record", "refreshed_at", "seq", "stored_mono")

    def __init__(
        self,
        record: ProviderRecord,
        labels: frozenset[str],
        seq: int,  # order of first admission: lower = there longer
        first_seen: int,
        refreshed_at: int | None = None,  # last time a newer version of this peer's record came
        pinned: bool = False,  # published by this node itself
        stored_mono: float = 0.0,  # time.monotonic() of the last change
    ) -> None:
        self.record = record
        self.labels = labels
        self.seq = seq
        self.first_seen = first_seen
        self.refreshed_at = refreshed_at
        self.pinned = pinned
        self.stored_mono = stored_mono

    @property
    def last_seen(self) -> int:
        return self.first_seen if self.refreshed_at is None else self.refreshed_at

    def established(self, policy: Policy) -> bool:
        return (
            self.refreshed_at is not None
            and self.refreshed_at - self.first_seen >= policy.refresh_gap
        )


def subnet_label(host: str) -> str | None:
    """``"v4:198.51.100.0/24"`` / ``"v6:2001:db8::/64"`` for an IP address, None otherwise."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack socket reports IPv4 senders this way
    if isinstance(ip, ipaddress.IPv4Address):
        return f"v4:{ipaddress.IPv4Network((ip, IPV4_PREFIX), strict=False)}"
    return f"v6:{ipaddress.IPv6Network((ip, IPV6_PREFIX), strict=False)}"


def url_label(url: str) -> str:
    """The label of a record's URL host: its subnet, or for a name its last two DNS labels.

    Names are grouped coarsely because subdomains (and wildcard DNS such as ``1-2-3-4.nip.io``)
    are free; honest providers under one public suffix such as ``co.uk`` then share one label,
    which only matters while a key or the node is full.
    """
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:  # e.g. an unbalanced "[" in the authority
        host = ""
    if not host:
        return "url:" + url.split("/", 3)[2].lower()[:100] if url.count("/") >= 2 else "url:?"
    subnet = subnet_label(host)
    if subnet is not None:
        return subnet
    return "dns:" + ".".join(host.rstrip(".").split(".")[-2:])


def labels_for(record: ProviderRecord, sender: str | None) -> frozenset[str]:
    """A record's labels: its sender's subnet (when known) and its URL's."""
    labels = {url_label(record.url)}
    if sender is not None:
        labels.add(subnet_label(sender) or "addr:" + sender[:64])
    return frozenset(labels)


def keep_order(entry: Entry, now: int, policy: Policy) -> tuple[int, int, int]:
    """Sort key of eviction candidates: the lowest is evicted first."""
    if entry.pinned:
        return (3, 0, 0)
    if now - entry.last_seen > policy.fresh_for:
        return (0, entry.last_seen, entry.seq)  # silent longest first
    return (2 if entry.established(policy) else 1, -entry.seq, 0)  # youngest first


def choose_victim(
    newcomer: Entry,
    counts: Mapping[str, int],
    members: Callable[[str], Iterable[Entry]],
    now: int,
    policy: Policy,
) -> Entry | None:
    """The entry to evict so that ``newcomer`` fits, or None to refuse the newcomer.

    ``counts``: unpinned entries per label in the full scope (one key, or the whole node);
    ``members(label)``: the unpinned entries carrying ``label`` in that scope.
    """
    top = max(counts.values(), default=0)
    if top == 0:
        return None  # only pinned records: nothing may go
    mine = max((counts.get(label, 0) for label in newcomer.labels), default=0)
    if newcomer.pinned or mine < top:
        # The newcomer's sources hold less than the biggest one: that one gives up a slot.
        labels = [label for label, count in counts.items() if count == top]
    else:
        # The newcomer comes from (one of) the biggest sources: it competes only there.
        labels = [label for label in newcomer.labels if counts.get(label, 0) == top]
    candidates = {id(e): e for label in labels for e in members(label)}
    victim = min(candidates.values(), key=lambda e: keep_order(e, now, policy), default=None)
    if (
        victim is not None
        and mine >= top
        and not newcomer.pinned
        and keep_order(newcomer, now, policy) <= keep_order(victim, now, policy)
    ):
        return None
    return victim
