"""What every discovery source returns. Pure."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..names import host_arch


@dataclass(frozen=True)
class Query:
    channel: str = "stable"
    arch: str = field(default_factory=host_arch)
    timeout: float = 5.0
    want_all: bool = False  # False: return soon after the first match


@dataclass(frozen=True)
class Candidate:
    """A provider of one channel/arch manifest, as a source reported it (not yet trusted)."""

    source: str  # "mdns" or "dht"
    url: str  # the manifest URL
    channel: str
    arch: str
    version: str | None = None
    name: str | None = None  # mDNS instance name, or the DHT record's provider_name
    host: str | None = None
    addresses: tuple[str, ...] = ()
    port: int | None = None
    peer_id: str | None = None
    last_updated: str | None = None
    rtt_ms: float | None = None  # measured by the probe, when probed

    def with_rtt(self, rtt_ms: float | None) -> Candidate:
        return replace(self, rtt_ms=rtt_ms)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["addresses"] = list(self.addresses)
        return data


@dataclass
class LanWatch:
    """What a running mDNS lookup tells the orchestrator, from its own thread, before it ends.

    ``unanswered``: no answer came back with the question's first, immediate answers (nothing
    accepted or being resolved shortly after the question went out): the DHT lookups may start.
    ``quiet``: the LAN has clearly answered nothing (see ``mdns.browse``): a DHT answer may be
    used. ``found``: called with each candidate as it is accepted (the orchestrator starts its
    liveness probe at once); it must not block. ``until``: when the lookup must be over (a
    ``time.monotonic()`` value), whatever its own start-up cost; None: ``query.timeout`` from
    when it starts listening.
    """

    unanswered: threading.Event = field(default_factory=threading.Event)
    quiet: threading.Event = field(default_factory=threading.Event)
    found: Callable[[Candidate], None] | None = None
    until: float | None = None
