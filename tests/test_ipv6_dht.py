"""The DHT on IPv6 over loopback: a dual-stack (``::``) node answers IPv4 and IPv6 clients and
holds IPv4 peers under their IPv4 address; an IPv4-only node never tries to send to an IPv6
contact. The namespace test (no IPv4 anywhere) is in ``tests/test_ipv6_netns.py``."""

from __future__ import annotations

import asyncio
import socket

from phase_client.dht.node import DhtNode
from phase_client.dht.protocol import FamilyTransport, plain_address
from phase_client.discovery.dht import _listen_host, discover_dht
from phase_client.discovery.model import Query
from phase_client.keys import SigningKey
from phase_client.provider.advertise import Offer
from phase_client.provider.advertise_dht import DhtAdvertiser

URL6 = "http://[fd00:213:1::5]:8080/stable/arm64/manifest.json"


def test_plain_address_unmaps_ipv4_peers() -> None:
    assert plain_address(("::ffff:10.0.0.5", 4001, 0, 0)) == ("10.0.0.5", 4001)
    assert plain_address(("fd00::5", 4001, 0, 0)) == ("fd00::5", 4001)
    assert plain_address(("10.0.0.5", 4001)) == ("10.0.0.5", 4001)


def test_client_listens_on_both_stacks_when_a_contact_is_ipv6() -> None:
    assert _listen_host([("10.0.0.1", 1)]) == "0.0.0.0"
    assert _listen_host([("boot.lan", 1), ("fd00::1", 1)]) == "::"
    assert _listen_host([]) == "0.0.0.0"


def test_dual_stack_provider_is_found_over_ipv4_and_ipv6() -> None:
    advertiser = DhtAdvertiser(
        SigningKey.generate(), "six", 0, [], ttl=600, republish=300, listen_host="::"
    )
    offer = Offer(
        channel="stable",
        arch="arm64",
        version="1",
        sequence=1,
        port=8080,
        manifest_path="/stable/arm64/manifest.json",
        manifest_url=URL6,
    )
    advertiser.start([offer])
    try:
        assert advertiser.wait_rounds(1, 30)
        for contact in ("::1", "127.0.0.1"):
            query = Query(arch="arm64", timeout=5, want_all=True)
            found = discover_dht(query, [(contact, advertiser.bound_port)])
            assert [c.url for c in found] == [URL6], contact
    finally:
        advertiser.stop()


def test_dual_stack_node_holds_ipv4_peers_by_their_ipv4_address() -> None:
    async def scenario() -> list[tuple[str, int]]:
        dual, v4 = DhtNode(rpc_timeout=2.0), DhtNode(rpc_timeout=2.0)
        await dual.listen(0, "::")
        await v4.listen(0, "127.0.0.1")
        try:
            assert await v4.bootstrap([("127.0.0.1", dual.address[1])])
            neighbours = dual.protocol.router.find_neighbors(dual.node)
            return [(n.ip, n.port) for n in neighbours]
        finally:
            dual.stop()
            v4.stop()

    assert asyncio.run(scenario())[0][0] == "127.0.0.1"


def test_ipv4_only_socket_drops_datagrams_to_ipv6_contacts() -> None:
    sent: list[tuple[bytes, tuple[str, int]]] = []
    ipv4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    class Fake(asyncio.DatagramTransport):
        def get_extra_info(self, name: str, default: object = None) -> object:
            return ipv4 if name == "socket" else None

        def sendto(self, data: bytes, addr: object = None) -> None:
            assert isinstance(addr, tuple)
            sent.append((data, addr))

    with ipv4:
        transport = FamilyTransport(Fake())
        transport.sendto(b"x", ("fd00::5", 4001))
        transport.sendto(b"y", ("10.0.0.5", 4001))
    assert sent == [(b"y", ("10.0.0.5", 4001))]
