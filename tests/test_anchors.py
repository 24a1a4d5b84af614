"""Names, hashes, keys and header values are matched whole: a trailing newline is not accepted
(``$`` matches before a final newline; the patterns end in ``\\Z``), nor are non-ASCII digits."""

from __future__ import annotations

import pytest

from phase_client.dht.records import KEY_RE
from phase_client.errors import PhaseError
from phase_client.fetch.plan import RangeReplyError, check_partial_reply, declared_length_ok
from phase_client.hostport import parse_host_port
from phase_client.keys import KEYID_RE, parse_public_key
from phase_client.manifest import ARTIFACT_NAME_RE, HASH_RE, MIRROR_URL_RE, PATH_SEGMENT_RE
from phase_client.mdns.records import _PRINTABLE
from phase_client.names import CHANNEL_RE
from phase_client.provider.httprange import parse_range
from phase_client.timefmt import parse_utc

VALID = [
    (ARTIFACT_NAME_RE, "kernel"),
    (CHANNEL_RE, "stable"),
    (HASH_RE, "sha256:" + "0" * 64),
    (PATH_SEGMENT_RE, "vmlinuz"),
    (MIRROR_URL_RE, "http://mirror.example/x"),
    (KEYID_RE, "ed25519:" + "a" * 64),
    (KEY_RE, "/phase/stable/x86_64/manifest"),
    (_PRINTABLE, "2026.12.03"),
]


@pytest.mark.parametrize(("pattern", "text"), VALID, ids=[t for _, t in VALID])
def test_a_trailing_newline_is_refused(pattern: object, text: str) -> None:
    assert pattern.match(text)  # type: ignore[attr-defined]
    assert not pattern.match(text + "\n")  # type: ignore[attr-defined]


def test_timestamps_refuse_newlines_and_foreign_digits() -> None:
    assert parse_utc("2026-12-03T10:00:00Z") is not None
    for bad in ("2026-12-03T10:00:00Z\n", "\uff12026-12-03T10:00:00Z"):
        with pytest.raises((PhaseError, ValueError)):
            parse_utc(bad)


def test_content_range_refuses_foreign_digits() -> None:
    from phase_client.byterange import ByteRange

    with pytest.raises(RangeReplyError):
        check_partial_reply("bytes 0-٩/10", ByteRange(0, 9), 10)


def test_a_key_that_is_not_hex_is_refused() -> None:
    with pytest.raises(PhaseError):
        parse_public_key(("ed25519:" + "zz" * 32).encode())


@pytest.mark.parametrize("port", ["²", "٨٠", "+80", "0x50"])
def test_ports_are_ascii_digits_only(port: str) -> None:
    with pytest.raises(PhaseError):
        parse_host_port(f"127.0.0.1:{port}")


@pytest.mark.parametrize("digits", [20, 5000])
def test_a_range_with_endless_digits_is_ignored_not_a_crash(digits: int) -> None:
    # int() raises ValueError past 4300 digits; such a header is malformed: send the whole file.
    assert parse_range("bytes=" + "9" * digits + "-", 100) is None


@pytest.mark.parametrize("host", ["a\nb", "[\r0]", "a b", "\x00"])
def test_hosts_with_spaces_or_control_characters_are_refused(host: str) -> None:
    with pytest.raises(PhaseError):
        parse_host_port(f"{host}:80")


@pytest.mark.parametrize("length", ["-1", "+5", "1_0", "\u0665", " 5 x", "9" * 5000])
def test_content_length_is_ascii_digits_only(length: str) -> None:
    assert not declared_length_ok(length, 10**6)
