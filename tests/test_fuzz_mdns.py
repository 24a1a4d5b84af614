"""Fuzz target for the mDNS TXT parsers (phase_client/mdns/records.py): decode_txt_wire,
parse_txt, candidate_from_service and reachable_url on whatever a LAN peer can announce, and on
mutated valid announcements. docs/fuzz.md: make fuzz.

Property: an offer comes out valid (it rebuilds into the same TXT record) or TxtError is raised;
the wire decoder and reachable_url never raise.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from hypothesis import event, example, given
from hypothesis import strategies as st

from phase_client.discovery.mdns import candidate_from_service
from phase_client.discovery.model import Candidate
from phase_client.mdns.records import (
    MAX_TXT_BYTES,
    TxtError,
    TxtInfo,
    build_txt,
    decode_txt_wire,
    parse_txt,
    reachable_url,
)
from phase_client.names import CHANNEL_RE
from tests.conftest import fuzz_settings
from tests.test_fuzz_manifest import HOSTILE_TOKENS, mutate_bytes

LOCAL_NETWORKS = ["192.168.1.0/24", "10.0.0.0/8"]


def encode_wire(properties: Mapping[bytes, bytes | None]) -> bytes:
    """RFC 6763 TXT rdata, each string cut to 255 bytes as a sender's library would."""
    out = b""
    for key, value in properties.items():
        chunk = (key if value is None else key + b"=" + value)[:255]
        out += bytes([len(chunk)]) + chunk
    return out


def check_offer(info: TxtInfo) -> None:
    assert CHANNEL_RE.match(info.channel) and CHANNEL_RE.match(info.arch)
    rebuilt = build_txt(info.channel, info.arch, info.manifest_url, info.version)
    assert parse_txt(rebuilt) == info
    wire = {k.encode(): v.encode() for k, v in rebuilt.items()}
    assert len(encode_wire(wire)) <= MAX_TXT_BYTES
    assert parse_txt(decode_txt_wire(encode_wire(wire))) == info


def parse_or_refuse(properties: Mapping[Any, Any]) -> TxtInfo | None:
    try:
        info = parse_txt(properties)
    except TxtError:
        event("refused")
        return None
    event("accepted")
    check_offer(info)
    return info


# --- strategies -----------------------------------------------------------------------------
hostile_text = st.sampled_from([t for t in HOSTILE_TOKENS if isinstance(t, str)]) | st.text(
    max_size=30
)
txt_keys = st.sampled_from(["txtvers", "channel", "arch", "manifest", "version", "TXTVERS", "x"])
txt_values = st.one_of(
    st.none(),
    st.binary(max_size=40),
    hostile_text.map(lambda s: s.encode("utf-8", "surrogatepass")),
    hostile_text,
)
any_keys = st.one_of(
    txt_keys, txt_keys.map(str.encode), st.binary(max_size=12), st.text(max_size=8)
)
properties = st.dictionaries(any_keys, txt_values, max_size=7)
urls = st.builds(
    lambda scheme, host, port, path: f"{scheme}://{host}{port}/{path}",
    st.sampled_from(["http", "https"]),
    st.sampled_from(["192.168.1.5", "10.1.2.3", "172.16.0.9", "[fe80::1]", "provider.local"]),
    st.sampled_from(["", ":8080", ":1", ":65535"]),
    st.from_regex(r"[A-Za-z0-9._~/-]{0,30}", fullmatch=True),
)
labels = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,10}", fullmatch=True)
valid_txt = st.builds(
    build_txt,
    labels,
    st.sampled_from(["x86_64", "amd64", "arm64", "aarch64", "riscv64"]),
    urls,
    st.none() | st.from_regex(r"[\x21-\x7e]{1,20}", fullmatch=True),
)
addresses = st.lists(
    st.sampled_from(["192.168.1.5", "10.1.2.3", "172.16.0.9", "fe80::1", "", "999.1.1.1"])
    | st.ip_addresses(v=4).map(str)
    | st.text(max_size=12),
    max_size=4,
)


# --- targets ----------------------------------------------------------------------------------
@fuzz_settings(300)
@given(st.binary(max_size=600))
@example(b"\xff" + b"a" * 10)
@example(b"\x05txtvers=1")
def test_any_txt_rdata(wire: bytes) -> None:
    decoded = decode_txt_wire(wire)
    assert all(isinstance(k, bytes) and k == k.lower() for k in decoded)
    parse_or_refuse(decoded)


@fuzz_settings(300)
@given(properties)
@example({b"txtvers": b"1", b"channel": b"stable", b"arch": b"x86_64", b"manifest": b"http://a/"})
@example({"txtvers": "1", "channel": "stable", "arch": "\u212a", "manifest": "http://a/"})
@example({"txtvers": "1", "channel": "s", "arch": "a", "manifest": "http://[::1/x"})
@example({"txtvers": "1", "channel": "s", "arch": "a", "manifest": "http://h:99999/x"})
def test_any_txt_properties(props: dict[Any, Any]) -> None:
    parse_or_refuse(props)


@fuzz_settings(250)
@given(valid_txt, st.data())
def test_mutated_valid_txt(txt: dict[str, str], data: st.DataObject) -> None:
    info = parse_or_refuse(txt)
    assert info is not None
    wire = {k.encode(): v.encode() for k, v in txt.items()}
    if data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(wire)) | any_keys.map(lambda k: str(k).encode()))
        value = data.draw(txt_values)
        wire[key] = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
        parse_or_refuse(wire)
    else:
        parse_or_refuse(decode_txt_wire(mutate_bytes(data, encode_wire(wire))))


@fuzz_settings(200)
@given(
    st.text(max_size=40),
    st.none() | st.text(max_size=20),
    st.none() | st.integers(0, 65535),
    addresses,
    valid_txt | properties,
)
def test_candidate_from_any_service(
    name: str, server: str | None, port: int | None, addrs: list[str], props: dict[Any, Any]
) -> None:
    try:
        candidate, info = candidate_from_service(name, server, port, addrs, props)
    except TxtError:
        return
    assert isinstance(candidate, Candidate)
    check_offer(info)
    assert (candidate.url, candidate.channel, candidate.arch) == (
        info.manifest_url,
        info.channel,
        info.arch,
    )
    # The address swap on multi-homed providers: the result is the URL or the same URL with
    # its host moved to one of the service's own addresses.
    url = reachable_url(candidate.url, candidate.addresses, LOCAL_NETWORKS)
    if url != candidate.url:
        event("moved to an on-link address")
        moved = urlsplit(url)
        assert moved.hostname in addrs and urlsplit(candidate.url).hostname in addrs
        assert ipaddress.ip_address(moved.hostname).version == 4
        assert moved.path == urlsplit(candidate.url).path
