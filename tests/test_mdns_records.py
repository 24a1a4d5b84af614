"""The pure half of mDNS: TXT building/parsing, instance names, address choice, tie rule."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phase_client.discovery.mdns import candidate_from_service
from phase_client.mdns.interfaces import select_ipv4
from phase_client.mdns.records import (
    MAX_TXT_BYTES,
    SERVICE_TYPE,
    TxtError,
    base_instance_name,
    build_txt,
    decode_txt_wire,
    full_service_name,
    instance_label,
    manifest_url_for,
    mdns_hostname,
    parse_txt,
    reachable_url,
    tie_keeper,
    txt_size,
)

URL = "http://192.168.1.100:8080/stable/arm64/manifest.json"


def wire(properties: dict[str, str]) -> dict[bytes, bytes | None]:
    return {k.encode(): v.encode() for k, v in properties.items()}


def test_build_txt_has_the_seed_keys() -> None:
    txt = build_txt("stable", "aarch64", URL, "2025.11.26")
    assert txt == {
        "txtvers": "1",
        "channel": "stable",
        "arch": "arm64",
        "manifest": URL,
        "version": "2025.11.26",
    }
    assert txt_size(txt) < MAX_TXT_BYTES


def test_build_then_parse_round_trips() -> None:
    info = parse_txt(wire(build_txt("testing", "amd64", URL, "7")))
    assert (info.channel, info.arch, info.manifest_url, info.version) == (
        "testing",
        "x86_64",
        URL,
        "7",
    )


def test_version_is_optional() -> None:
    assert parse_txt(wire(build_txt("stable", "arm64", URL, None))).version is None


@pytest.mark.parametrize(
    ("channel", "arch", "url", "version"),
    [
        ("Stable", "arm64", URL, "1"),  # upper case channel
        ("stable", "arm 64", URL, "1"),
        ("stable", "arm64", "ftp://h/x", "1"),
        ("stable", "arm64", "http:///no-host", "1"),
        ("stable", "arm64", "http://h:0/x", "1"),
        ("stable", "arm64", "http://h", "1"),  # no path
        ("stable", "arm64", "http://h/x y", "1"),
        ("stable", "arm64", "http://h/" + "a" * 300, "1"),  # over 255 bytes
        ("stable", "arm64", "http://h:99999/x", "1"),
        ("stable", "arm64", URL, "has space"),
        ("stable", "arm64", URL, "v" * 65),
    ],
)
def test_build_txt_rejects(channel: str, arch: str, url: str, version: str) -> None:
    with pytest.raises(TxtError):
        build_txt(channel, arch, url, version)


def test_build_txt_keeps_the_record_under_the_size_limit() -> None:
    url = "http://h/" + "a" * 230
    with pytest.raises(TxtError, match="bytes"):
        build_txt("c" * 60, "a" * 60, url, "v" * 64)


@pytest.mark.parametrize(
    "properties",
    [
        {},
        {b"txtvers": b"1", b"channel": b"stable", b"arch": b"arm64"},  # no manifest
        {b"txtvers": b"2", b"channel": b"stable", b"arch": b"arm64", b"manifest": URL.encode()},
        {b"txtvers": b"1", b"channel": b"st able", b"arch": b"arm64", b"manifest": URL.encode()},
        {b"txtvers": b"1", b"channel": b"stable", b"arch": b"arm64", b"manifest": b"\xff"},
        {b"txtvers": b"1", b"channel": b"stable", b"arch": b"arm64", b"manifest": None},
        {
            b"txtvers": b"1",
            b"channel": b"stable",
            b"arch": b"arm64",
            b"manifest": URL.encode(),
            b"padding": b"x" * 300,  # valid keys, but the record is oversized
        },
    ],
)
def test_parse_txt_rejects_malformed_or_oversized(
    properties: dict[bytes, bytes | None],
) -> None:
    with pytest.raises(TxtError):
        parse_txt(properties)


def test_parse_txt_ignores_unknown_keys_and_key_case() -> None:
    properties = {
        b"TXTVERS": b"1",
        b"Channel": b"stable",
        b"arch": b"aarch64",
        b"manifest": URL.encode(),
        b"flag": None,
        b"future": b"yes",
    }
    info = parse_txt(properties)
    assert (info.channel, info.arch) == ("stable", "arm64")


@settings(deadline=None)  # no timing assertions: other tests load the machine
@given(
    st.dictionaries(
        st.binary(max_size=20) | st.sampled_from([b"txtvers", b"channel", b"arch", b"manifest"]),
        st.none() | st.binary(max_size=300) | st.sampled_from([b"1", b"stable", URL.encode()]),
        max_size=8,
    )
)
def test_parse_txt_never_raises_anything_but_txt_error(
    properties: dict[bytes, bytes | None],
) -> None:
    try:
        info = parse_txt(properties)
    except TxtError:
        return
    assert info.manifest_url.startswith(("http://", "https://"))


@settings(deadline=None)
@given(st.binary(max_size=600))
def test_decode_txt_wire_never_crashes(data: bytes) -> None:
    result = decode_txt_wire(data)
    assert all(isinstance(k, bytes) and k for k in result)


def test_decode_txt_wire_reads_length_prefixed_strings() -> None:
    data = b"\x09txtvers=1\x04flag\x0cChannel=test\x0cchannel=late"
    assert decode_txt_wire(data) == {b"txtvers": b"1", b"flag": None, b"channel": b"test"}


def test_instance_names() -> None:
    assert base_instance_name("stable", "aarch64") == "phase-stable-arm64"
    name = full_service_name("phase-stable-arm64-2")
    assert name == "phase-stable-arm64-2._phase-image._tcp.local."
    assert instance_label(name) == "phase-stable-arm64-2"
    assert name.endswith(SERVICE_TYPE)
    with pytest.raises(TxtError):
        base_instance_name("c" * 40, "a" * 20)  # no room left for a "-N" suffix


@pytest.mark.parametrize(
    ("given_name", "expected"),
    [
        ("myhost", "myhost.local."),
        ("my-mac.example.org", "my-mac.local."),
        ("under_score host", "under-score-host.local."),
        ("", "phase-provider.local."),
        ("---", "phase-provider.local."),
    ],
)
def test_mdns_hostname(given_name: str, expected: str) -> None:
    assert mdns_hostname(given_name) == expected


INTERFACES = [
    ("lo", ["127.0.0.1", "::1"]),
    ("eth0", ["192.168.1.5", "fe80::1"]),
    ("wlan0", ["10.0.0.7"]),
    ("docker0", []),
]


def test_select_ipv4_default_is_every_non_loopback_ipv4() -> None:
    assert select_ipv4(INTERFACES, None) == [("eth0", "192.168.1.5"), ("wlan0", "10.0.0.7")]


def test_select_ipv4_by_name_or_address() -> None:
    assert select_ipv4(INTERFACES, ["wlan0"]) == [("wlan0", "10.0.0.7")]
    assert select_ipv4(INTERFACES, ["192.168.1.5", "eth0"]) == [("eth0", "192.168.1.5")]
    assert select_ipv4(INTERFACES, ["lo"]) == [("lo", "127.0.0.1")]


def test_select_ipv4_names_what_is_missing() -> None:
    with pytest.raises(TxtError, match="eth9"):
        select_ipv4(INTERFACES, ["eth9"])
    assert select_ipv4([("lo", ["127.0.0.1"])], None) == []


@pytest.mark.parametrize(
    ("offer_url", "advertise_host", "expected"),
    [
        # the operator's --advertise-host wins
        ("http://10.0.0.7:8080/s/a/manifest.json", "boot.lan", "http://boot.lan:8080/s/a/m.json"),
        ("http://10.0.0.7:8080/s/a/manifest.json", "fd00::1", "http://[fd00::1]:8080/s/a/m.json"),
        # an address that is announced stays
        ("http://10.0.0.7:8080/s/a/manifest.json", None, "http://10.0.0.7:8080/s/a/manifest.json"),
        # a name chosen by the operator stays
        ("http://boot.lan:8080/s/a/manifest.json", None, "http://boot.lan:8080/s/a/manifest.json"),
        # an address not on an announced interface is replaced by the first announced one
        ("http://127.0.0.1:8080/s/a/manifest.json", None, "http://192.168.1.5:8080/s/a/m.json"),
    ],
)
def test_manifest_url_for(offer_url: str, advertise_host: str | None, expected: str) -> None:
    path = "/s/a/m.json" if expected.endswith("/m.json") else "/s/a/manifest.json"
    result = manifest_url_for(offer_url, path, 8080, ["192.168.1.5", "10.0.0.7"], advertise_host)
    assert result == expected


def test_candidate_from_service() -> None:
    candidate, _ = candidate_from_service(
        full_service_name("phase-stable-arm64-2"),
        "prov2.local.",
        8080,
        ["10.213.0.3"],
        wire(build_txt("stable", "arm64", URL, "5")),
    )
    assert candidate.to_json() == {
        "source": "mdns",
        "url": URL,
        "channel": "stable",
        "arch": "arm64",
        "version": "5",
        "name": "phase-stable-arm64-2",
        "host": "prov2.local",
        "addresses": ["10.213.0.3"],
        "port": 8080,
        "peer_id": None,
        "last_updated": None,
        "rtt_ms": None,
    }


@settings(deadline=None)
@given(st.lists(st.integers(1, 254), min_size=2, max_size=5, unique=True))
def test_exactly_one_provider_keeps_a_tied_name(last_octets: list[int]) -> None:
    urls = [f"http://10.213.0.{n}:8080/stable/arm64/manifest.json" for n in last_octets]
    keepers = [u for u in urls if tie_keeper(u, [o for o in urls if o != u])]
    assert len(keepers) == 1


def test_no_tie_without_rivals() -> None:
    assert tie_keeper(URL, [])
    assert tie_keeper(URL, [URL])  # our own record, looped back, is no rival


HOMED = ["10.1.0.5", "10.2.0.5"]  # a provider on two networks


@pytest.mark.parametrize(
    ("url", "networks", "expected"),
    [
        # the URL names the provider's address on another network: use the one on ours
        ("http://10.1.0.5:8080/s/a/m.json", ["10.2.0.0/24"], "http://10.2.0.5:8080/s/a/m.json"),
        ("http://10.1.0.5/s/a/m.json?x=1", ["10.2.0.9/24"], "http://10.2.0.5/s/a/m.json?x=1"),
        # already on our network, or no better address: unchanged
        ("http://10.1.0.5:8080/m.json", ["10.1.0.0/24", "10.2.0.0/24"], None),
        ("http://10.1.0.5:8080/m.json", ["192.168.0.0/16"], None),
        # not one of the service's own addresses (the operator's choice), or a name: unchanged
        ("http://10.9.0.5:8080/m.json", ["10.2.0.0/24"], None),
        ("http://boot.lan:8080/m.json", ["10.2.0.0/24"], None),
    ],
)
def test_reachable_url(url: str, networks: list[str], expected: str | None) -> None:
    assert reachable_url(url, HOMED, networks) == (expected or url)
