"""What every discovery source returns. Pure. NamedTuples and a plain class, no dataclass: this
is on the boot's path (docs/architecture.md, "Records on the client tools' path")."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from ..names import host_arch


class Query(NamedTuple):
    channel: str = "stable"
    # Evaluated once, at import: ``os.uname()``, cheap and without side effects, and the same
    # for every query of this process.
    arch: str = host_arch()
    timeout: float = 5.0
    want_all: bool = False  # False: return soon after the first match


class Candidate(NamedTuple):
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
        return self._replace(rtt_ms=rtt_ms)

    def to_json(self) -> dict[str, Any]:
        data = self._asdict()
        data["addresses"] = list(self.addresses)
        return data


class LanWatch:
    """What a running mDNS lookup tells the orchestrator, from its own thread, before it ends.

    ``unanswered``: no answer came back with the question's first, immediate answers (nothing
    accepted or being resolved shortly after the question went out): the DHT lookups may start.
    ``quiet``: the LAN has clearly answered nothing (see ``mdns.browse``): a DHT answer may be
    used. ``found``: called with each candidate as it is accepted (the orchestrator starts its
    liveness probe at once); it must not block. ``until``: when the lookup must be over (a
    ``time.monotonic()`` value), whatever its own start-up cost; None: ``query.timeout`` from
    when it starts listening. ``end_when_quiet``: the lookup also ends once ``quiet`` is set
    (one look at the link: stage 1 asking it before DHCP is done).
    """

    __slots__ = ("end_when_quiet", "found", "quiet", "unanswered", "until")

    def __init__(
        self,
        unanswered: threading.Event | None = None,
        quiet: threading.Event | None = None,
        found: Callable[[Candidate], None] | None = None,
        until: float | None = None,
        end_when_quiet: bool = False,
    ) -> None:
        # Fresh events for each watch unless given (None stands for "a new one").
        self.unanswered: threading.Event = threading.Event() if unanswered is None else unanswered
        self.quiet: threading.Event = threading.Event() if quiet is None else quiet
        self.found: Callable[[Candidate], None] | None = found
        self.until: float | None = until
        self.end_when_quiet = end_when_quiet
