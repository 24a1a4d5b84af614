"""DHT warnings that would repeat every round, for every key, are said once."""

from __future__ import annotations

import logging

import pytest

from phase_client.keys import SigningKey
from phase_client.provider.advertise import Offer
from phase_client.provider.advertise_dht import DhtAdvertiser

START_TIMEOUT = 60.0


def offer(channel: str, arch: str) -> Offer:
    return Offer(
        channel,
        arch,
        "1",
        1,
        8080,
        f"/{channel}/{arch}/manifest.json",
        f"http://127.0.0.1:8080/{channel}/{arch}/manifest.json",
    )


def test_lonely_records_are_warned_about_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="phase_client.provider.advertise_dht")
    # No bootstrap node: no peer ever accepts a record, every round would warn for every key.
    adv = DhtAdvertiser(
        SigningKey.generate(), "alone", 0, [], ttl=60, republish=0.2, listen_host="127.0.0.1"
    )
    offers = [offer("stable", "x86_64"), offer("testing", "x86_64")]
    adv.start(offers)
    try:
        assert adv.wait_rounds(4, START_TIMEOUT)
        adv.update(list(offers))  # a change that changes nothing the DHT sees
        assert adv.wait_rounds(6, START_TIMEOUT)
    finally:
        adv.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "DHT: stable/x86_64, testing/x86_64 held only by this node (no peer accepted them)"
    ]
    again = [
        r for r in caplog.records if r.levelno == logging.DEBUG and "(again)" in r.getMessage()
    ]
    assert len(again) >= 5
    assert adv.published == 0 and adv.records_held() == 2
