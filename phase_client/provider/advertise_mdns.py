"""Advertise each offered channel/arch as ``phase-<channel>-<arch>._phase-image._tcp.local.``.

The mDNS half of ``plasmd serve``'s advertisers (the ``Advertiser`` protocol of
``provider/advertise.py``): it turns ``Offer``s into ``mdns.register.Announcement``s (instance
label, TXT record with the manifest URL for the addresses announced on) and hands them to an
``MdnsRegistrar``, which does the zeroconf session, registration, renaming and ties.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Unpack

from ..errors import TxtError
from ..mdns.records import base_instance_name, build_txt, manifest_url_for
from ..mdns.register import Announcement, Compose, MdnsRegistrar, RegistrarOptions
from .advertise import Offer

log = logging.getLogger(__name__)


class MdnsAdvertiser:
    """``start``/``update``/``stop`` with plasmd's offers; ``wait_idle`` and ``instance_names``
    for status lines and the tests."""

    name = "mdns"

    def __init__(
        self, advertise_host: str | None = None, **options: Unpack[RegistrarOptions]
    ) -> None:
        """``advertise_host`` (``--advertise-host``) names the host in every manifest URL; the
        other settings (``interfaces``, ``hostname``, ``ttl``, ...) are the registrar's."""
        self.advertise_host = advertise_host
        self.registrar = MdnsRegistrar(**options)

    # -- the Advertiser protocol -------------------------------------------------------------

    def start(self, offers: Sequence[Offer]) -> None:
        self.registrar.start(self._composer(offers))

    def update(self, offers: Sequence[Offer]) -> None:
        self.registrar.update(self._composer(offers))

    def stop(self) -> None:
        self.registrar.stop()

    # -- extras for plasmd serve's status and the tests --------------------------------------

    def wait_idle(self, timeout: float) -> bool:
        """Block until every pending start/update has finished (True) or ``timeout`` passes."""
        return self.registrar.wait_idle(timeout)

    def instance_names(self) -> dict[str, str]:
        """``{"stable/arm64": "phase-stable-arm64-2", ...}`` for what is registered now."""
        return self.registrar.instance_names()

    @property
    def addresses(self) -> list[str]:
        return self.registrar.addresses

    # -- offers -> announcements -------------------------------------------------------------

    def _composer(self, offers: Sequence[Offer]) -> Compose:
        chosen = list(offers)

        def compose(addresses: list[str]) -> list[Announcement]:
            announcements = (self._announcement(offer, addresses) for offer in chosen)
            return [a for a in announcements if a is not None]

        return compose

    def _announcement(self, offer: Offer, addresses: list[str]) -> Announcement | None:
        url = manifest_url_for(
            offer.manifest_url, offer.manifest_path, offer.port, addresses, self.advertise_host
        )
        try:
            label = base_instance_name(offer.channel, offer.arch)
            properties = build_txt(offer.channel, offer.arch, url, offer.version)
        except TxtError as exc:
            log.warning("mDNS: not advertising %s: %s", offer.combination, exc)
            return None
        return Announcement(offer.combination, label, offer.port, properties)
