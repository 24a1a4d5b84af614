"""IPv6 in the pure rules: URL hosts with zones, the provider's host settings, which address an
mDNS answer's URL uses, which interfaces zeroconf opens, ranking and merging of dual-stack
providers. The namespace LAN tests are in ``tests/test_ipv6_netns.py``."""

from __future__ import annotations

import random
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import urllib3

from phase_client.discovery.model import Candidate
from phase_client.discovery.rank import deduplicate, is_lan, rank
from phase_client.errors import UsageError
from phase_client.hostport import host_from_url, parse_host_port, url_host
from phase_client.mdns import interfaces
from phase_client.mdns.browse import ip_version_of, scoped_addresses
from phase_client.mdns.interfaces import select_addresses, zeroconf_interfaces
from phase_client.mdns.records import (
    check_manifest_url,
    is_link_local,
    manifest_url_for,
    on_link,
    reachable_url,
    url_address_order,
)
from phase_client.provider.config import check_host

PATH = "/stable/arm64/manifest.json"


def test_url_host_writes_a_zone_as_rfc_6874_and_urllib3_reads_it_back() -> None:
    assert url_host("fe80::1%eth0") == "[fe80::1%25eth0]"
    assert url_host("fd00:213:1::2") == "[fd00:213:1::2]"
    url = f"http://{url_host('fe80::1%eth0')}:8080{PATH}"
    parsed = urllib3.util.parse_url(url)
    assert (parsed.host, parsed.port) == ("[fe80::1%eth0]", 8080)
    assert host_from_url(urlsplit(url).hostname or "") == "fe80::1%eth0"
    assert host_from_url("10.0.0.1") == "10.0.0.1"
    check_manifest_url(url)  # a valid TXT manifest URL


def test_bootstrap_contacts_may_be_ipv6() -> None:
    assert parse_host_port("[fd00:213:1::2]:4001") == ("fd00:213:1::2", 4001)
    assert parse_host_port("[fe80::1%eth0]:4001") == ("fe80::1%eth0", 4001)


@pytest.mark.parametrize(
    ("text", "what", "expected"),
    [
        ("::", "--bind", "::"),
        ("[::]", "--bind", "::"),
        ("0.0.0.0", "--bind", "0.0.0.0"),
        (" ", "--bind", ""),  # empty: the default, every address of both families
        ("fd00:0213:0001:0::5", "--advertise-host", "fd00:213:1::5"),
        ("[2001:db8::5]", "--advertise-host", "2001:db8::5"),
        ("boot.lan", "--advertise-host", "boot.lan"),
        ("192.0.2.10", "--advertise-host", "192.0.2.10"),
    ],
)
def test_check_host_accepts_literals_and_names(text: str, what: str, expected: str) -> None:
    assert check_host(text, what) == expected


@pytest.mark.parametrize("text", ["fe80::1%eth0", "fd00::1::2", "http://x", "a b", "1.2.3", ""])
def test_check_host_refuses(text: str) -> None:
    with pytest.raises(UsageError, match="--advertise-host"):
        check_host(text, "--advertise-host")


INTERFACES = [
    ("lo", ["127.0.0.1", "::1"]),
    ("eth0", ["192.168.1.5", "fd00:213:1::5", "fe80::5%eth0"]),
    ("eth1", ["fe80::6%eth1"]),  # link-local only
]


def test_select_addresses_takes_both_families_but_loopback() -> None:
    assert select_addresses(INTERFACES, None) == [
        ("eth0", "192.168.1.5"),
        ("eth0", "fd00:213:1::5"),
        ("eth0", "fe80::5%eth0"),
        ("eth1", "fe80::6%eth1"),
    ]
    assert select_addresses(INTERFACES, ["eth1"]) == [("eth1", "fe80::6%eth1")]
    assert select_addresses(INTERFACES, ["fe80::6"]) == [("eth1", "fe80::6%eth1")]
    assert select_addresses(INTERFACES, ["fd00:213:1::5"]) == [("eth0", "fd00:213:1::5")]


SEEN = [
    ("lo", [("127.0.0.1", 8), ("::1", 128)]),
    ("eth0", [("192.168.1.5", 24), ("fd00:213:1::5", 64), ("fe80::5%eth0", 64)]),
]


def test_mdns_discovery_looks_at_the_interfaces_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The addresses to browse from and their networks come from one look at the interfaces
    (each look is tens of ms of a boot's one emulated CPU)."""
    from phase_client.discovery import mdns
    from phase_client.discovery.model import Query

    def no_second_look() -> list[object]:
        raise AssertionError("the interfaces were enumerated a second time")

    looks: list[int] = []
    monkeypatch.setattr(interfaces, "enumerate_interfaces", no_second_look)
    monkeypatch.setattr(mdns, "enumerate_interfaces", lambda: looks.append(1) or SEEN)
    browsed: list[object] = []

    def browse(addresses: object, *args: object, **kwargs: object) -> list[object]:
        browsed.append(addresses)
        return []

    monkeypatch.setattr(mdns, "browse", browse)
    assert mdns.discover_mdns(Query(timeout=0.1)) == []
    assert looks == [1]
    assert browsed == [
        [("eth0", "192.168.1.5"), ("eth0", "fd00:213:1::5"), ("eth0", "fe80::5%eth0")]
    ]
    assert interfaces.local_networks(None, SEEN) == ["192.168.1.0/24", "fd00:213:1::/64"]


def test_zeroconf_opens_ipv4_addresses_and_one_link_local_per_interface() -> None:
    chosen = zeroconf_interfaces(select_addresses(INTERFACES, None))
    assert chosen == ["192.168.1.5", "fe80::5%eth0", "fe80::6%eth1"]
    assert str(ip_version_of(chosen)) == "IPVersion.All"
    assert str(ip_version_of(["fe80::6%eth1"])) == "IPVersion.V6Only"
    assert str(ip_version_of(["192.168.1.5"])) == "IPVersion.V4Only"
    # a ULA alone (no link-local known yet) is used rather than nothing
    assert zeroconf_interfaces([("eth0", "fd00::5")]) == ["fd00::5"]


def test_url_address_order_prefers_ipv4_then_routable_ipv6() -> None:
    assert url_address_order(["fe80::5%eth0", "fd00::5", "10.0.0.5"]) == [
        "10.0.0.5",
        "fd00::5",
        "fe80::5%eth0",
    ]
    assert is_link_local("fe80::5%eth0") and not is_link_local("fd00::5")


@pytest.mark.parametrize(
    ("addresses", "expected_host"),
    [
        (["10.0.0.5", "fd00::5", "fe80::5%eth0"], "10.0.0.5"),
        (["fe80::5%eth0", "fd00::5"], "[fd00::5]"),
        # link-local only: no zone in the TXT (it names the provider's interface); the client
        # adds its own (reachable_url)
        (["fe80::5%eth0"], "[fe80::5]"),
    ],
)
def test_announced_url_prefers_ipv4_then_ula_then_link_local(
    addresses: list[str], expected_host: str
) -> None:
    url = manifest_url_for(f"http://127.0.0.1:8080{PATH}", PATH, 8080, addresses, None)
    assert url == f"http://{expected_host}:8080{PATH}"


def test_announced_url_keeps_an_announced_ipv6_offer_host_and_advertise_host() -> None:
    offer = f"http://[fd00::5]:8080{PATH}"
    assert manifest_url_for(offer, PATH, 8080, ["10.0.0.5", "fd00::5"], None) == offer
    assert (
        manifest_url_for(offer, PATH, 8080, ["10.0.0.5"], "2001:db8::7")
        == f"http://[2001:db8::7]:8080{PATH}"
    )


LAN6 = ["fd00:213:1::/64"]


@pytest.mark.parametrize(
    ("url_host_", "service", "networks", "expected"),
    [
        # link-local URL (no zone on the wire): the zone of the interface the answer came in on
        ("[fe80::5]", ["fe80::5%eth0"], [], "[fe80::5%25eth0]"),
        # a dual-stack provider's IPv4 URL, seen by an IPv6-only client: its ULA on our prefix
        ("10.0.0.5", ["10.0.0.5", "fd00:213:1::5", "fe80::5%eth0"], LAN6, "[fd00:213:1::5]"),
        # ... or its link-local address when no prefix is shared
        ("10.0.0.5", ["10.0.0.5", "fd00:9::5", "fe80::5%eth1"], LAN6, "[fe80::5%25eth1]"),
        # on our link already: unchanged
        ("[fd00:213:1::5]", ["fd00:213:1::5", "10.0.0.5"], LAN6, "[fd00:213:1::5]"),
        ("10.0.0.5", ["10.0.0.5", "fd00:213:1::5"], ["10.0.0.0/24", *LAN6], "10.0.0.5"),
        # a link-local URL whose zone we do not know, and nothing else: unchanged
        ("[fe80::5]", ["fe80::5"], [], "[fe80::5]"),
        # not the service's own address (the operator's --advertise-host): unchanged
        ("[2001:db8::7]", ["fd00:213:1::5"], LAN6, "[2001:db8::7]"),
    ],
)
def test_reachable_url_for_ipv6(
    url_host_: str, service: list[str], networks: list[str], expected: str
) -> None:
    url = f"http://{url_host_}:8080{PATH}"
    assert reachable_url(url, service, networks) == f"http://{expected}:8080{PATH}"


def test_on_link() -> None:
    assert on_link("fe80::5%eth0", [])
    assert not on_link("fe80::5", LAN6)  # no zone: not usable
    assert on_link("fd00:213:1::9", LAN6)
    assert not on_link("fd00:213:2::9", LAN6)
    assert not on_link("10.0.0.1", LAN6)


def test_scoped_addresses_name_the_interface_or_drop_what_is_unusable() -> None:
    assert scoped_addresses(["10.0.0.5", "fe80::5%1", "fd00::5"], []) == [
        "10.0.0.5",
        "fe80::5%lo",  # interface index 1 is loopback in every namespace
        "fd00::5",
    ]
    # heard over IPv4 (no scope): our single IPv6 interface is the zone; with two, unusable
    assert scoped_addresses(["fe80::5"], ["eth0"]) == ["fe80::5%eth0"]
    assert scoped_addresses(["fe80::5"], ["eth0", "eth1"]) == []


def cand(url: str, source: str, **extra: object) -> Candidate:
    fields: dict = {"channel": "stable", "arch": "arm64", "version": "1", **extra}
    return Candidate(source=source, url=url, **fields)


def test_dht_candidates_on_our_prefix_or_link_local_are_lan() -> None:
    own = cand(f"http://[fd00:213:1::9]:8080{PATH}", "dht", rtt_ms=40.0)
    link = cand(f"http://[fe80::9%25eth0]:8080{PATH}", "dht", rtt_ms=40.0)
    far = cand(f"http://[2001:db8::9]:8080{PATH}", "dht", rtt_ms=1.0)
    v4 = cand(f"http://10.0.0.9:8080{PATH}", "dht", rtt_ms=40.0)
    assert is_lan(own, LAN6) and is_lan(link, LAN6) and not is_lan(far, LAN6)
    assert is_lan(v4, ["10.0.0.0/24"]) and not is_lan(v4, LAN6)
    for seed in range(20):
        ranked = rank([far, own, link], random.Random(seed), LAN6)
        assert ranked[-1] is far  # slower LAN providers before a fast WAN one


def test_dual_stack_provider_is_one_candidate() -> None:
    mdns = cand(
        f"http://10.0.0.5:8080{PATH}",
        "mdns",
        addresses=("10.0.0.5", "fd00:213:1::5", "fe80::5%eth0"),
    )
    dht_v6 = cand(f"http://[fd00:213:1::5]:8080{PATH}", "dht", peer_id="p1")
    dht_v4 = cand(f"http://10.0.0.5:8080{PATH}", "dht", peer_id="p1")
    other_port = cand(f"http://[fd00:213:1::5]:9090{PATH}", "dht", peer_id="p2")
    assert deduplicate([dht_v6, mdns, dht_v4]) == [mdns]
    assert deduplicate([dht_v6, dht_v4]) == [dht_v6]  # one peer, one channel/arch
    assert deduplicate([mdns, other_port]) == [mdns, other_port]  # another server


def test_addresses_not_to_announce_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = tmp_path / "if_inet6"
    table.write_text(
        "fd000213000100000000000000000005 02 40 00 80     eth0\n"  # permanent: usable
        "fd000213000100000000000000000006 02 40 00 c0     eth0\n"  # tentative
        "fd0002130001000012345678abcdef01 02 40 00 01     eth0\n"  # temporary (privacy)
        "fd000213000100000000000000000007 02 40 00 20     eth0\n"  # deprecated
        "fe800000000000000000000000000009 02 40 20 88     eth0\n"  # DAD failed
        "garbage line\n"
    )
    monkeypatch.setattr(interfaces, "IF_INET6", str(table))
    assert interfaces._unusable_ipv6() == {
        ("eth0", "fd00:213:1::6"),
        ("eth0", "fd00:213:1:0:1234:5678:abcd:ef01"),
        ("eth0", "fd00:213:1::7"),
        ("eth0", "fe80::9"),
    }
