"""The interface between ``plasmd serve`` and the things that advertise it (mDNS, DHT).

The server owns the catalog; whenever the set of offered channel/arch combinations (or one of their
manifests) changes it calls ``update`` with the complete current list, and the advertiser works
out the difference itself. Methods are synchronous and quick: an advertiser that needs an event
loop (zeroconf, kademlia) runs it in its own thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Offer:
    """One channel/arch combination the provider serves, as advertisers need to describe it."""

    channel: str
    arch: str
    version: str
    sequence: int
    port: int
    manifest_path: str  # URL path on this provider, e.g. "/stable/arm64/manifest.json"
    manifest_url: str  # absolute URL, using --advertise-host or the primary address

    @property
    def combination(self) -> str:
        return f"{self.channel}/{self.arch}"


class Advertiser(Protocol):
    name: str  # "mdns", "dht": used in log lines

    def start(self, offers: Sequence[Offer]) -> None:
        """Begin advertising ``offers``; must not block for long."""

    def update(self, offers: Sequence[Offer]) -> None:
        """The complete current set of offers; add, change and withdraw to match it."""

    def stop(self) -> None:
        """Withdraw everything (goodbye packets, stop republishing) and release resources."""
