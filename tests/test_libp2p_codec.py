"""The pure parts of phase_client/libp2p: varints, protobuf, multiaddrs, peer ids, the key
scheme, Noise XX, Yamux frames and sessions, Kademlia messages. Known-answer values were
produced by js-libp2p (libp2p 2.10, @multiformats/multiaddr 12.5, multiformats 13.4) or come
from RFC 5869."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from phase_client.errors import UsageError
from phase_client.hostport import (
    contacts_from_cmdline,
    parse_contact,
    parse_contact_list,
    split_contacts,
)
from phase_client.keys import SigningKey
from phase_client.libp2p import kadmsg, keyscheme, noise, protobuf, rsa, varint, yamux
from phase_client.libp2p.errors import MultiaddrError, ProtocolError
from phase_client.libp2p.identify import identify_message
from phase_client.libp2p.multiaddr import Multiaddr, http_multiaddr
from phase_client.libp2p.peerid import PeerId

SEED = bytes(range(32))
SEED_PEER = "12D3KooWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5iHYdBfeSB"  # js: peerIdFromPrivateKey


# -- varint, protobuf -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "encoded"), [(0, "00"), (1, "01"), (127, "7f"), (128, "8001"), (300, "ac02")]
)
def test_varint_known_answers(value: int, encoded: str) -> None:
    assert varint.encode(value).hex() == encoded
    assert varint.decode(bytes.fromhex(encoded)) == (value, len(encoded) // 2)


@pytest.mark.parametrize("data", ["", "80", "ff" * 10, "8000"])
def test_varint_truncated_overlong_or_padded_is_refused(data: str) -> None:
    with pytest.raises(ProtocolError):
        varint.decode(bytes.fromhex(data))


def test_protobuf_round_trip_and_hostile_lengths() -> None:
    message = protobuf.field_varint(1, 4) + protobuf.field_bytes(2, b"key") * 2
    found = protobuf.fields(message)
    assert protobuf.one_int(found, 1) == 4
    assert protobuf.all_bytes(found, 2) == [b"key", b"key"]
    for bad in (b"\x12\x05ab", b"\x12\xff\xff\xff\xff\x0f", b"\x0b", b"\x00\x01"):
        with pytest.raises(ProtocolError):
            protobuf.fields(bad)
    with pytest.raises(ProtocolError):
        protobuf.one_int(found, 2)  # a type mismatch is an error, not a crash


# -- multiaddr --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "binary"),
    [
        ("/ip4/127.0.0.1/tcp/8080/http", "047f000001061f90e003"),
        ("/ip6/::1/tcp/443/tls/http", "29000000000000000000000000000000010601bbc003e003"),
        ("/dns4/boot.example/tcp/80/http", "360c626f6f742e6578616d706c65060050e003"),
        ("/ip4/1.2.3.4/udp/4001/quic-v1", "040102030491020fa1cd03"),
    ],
)
def test_multiaddr_known_answers(text: str, binary: str) -> None:
    ma = Multiaddr.from_text(text)
    assert ma.to_bytes().hex() == binary
    assert str(Multiaddr.from_bytes(bytes.fromhex(binary))) == text


def test_multiaddr_targets_and_urls() -> None:
    boot = Multiaddr.from_text(f"/ip4/192.0.2.1/tcp/4001/p2p/{SEED_PEER}")
    assert boot.tcp_target() == ("192.0.2.1", 4001)
    assert str(boot.peer_id()) == SEED_PEER
    assert Multiaddr.from_text("/ip4/1.2.3.4/udp/4001/quic-v1").tcp_target() is None
    assert Multiaddr.from_text("/ip4/1.2.3.4/tcp/80/http").tcp_target() is None
    url = keyscheme.manifest_url(Multiaddr.from_text("/ip6/fd00::5/tcp/8080/http"), "s", "a")
    assert url == "http://[fd00::5]:8080/s/a/manifest.json"
    assert Multiaddr.from_text("/dns4/x.example/tcp/443/https").http_url("/m") == (
        "https://x.example:443/m"
    )
    assert boot.http_url() is None
    assert str(http_multiaddr("10.0.0.2", 8080)) == "/ip4/10.0.0.2/tcp/8080/http"
    assert str(http_multiaddr("::1", 80)) == "/ip6/::1/tcp/80/http"


@pytest.mark.parametrize(
    "text",
    [
        "ip4/1.2.3.4/tcp/1",
        "/ip4/1.2.3.4/tcp",
        "/ip4/999.1.1.1/tcp/1",
        "/ip4/1.2.3.4/tcp/65536",
        "/ip4/1.2.3.4/tcp/-1",
        "/ip4/1.2.3.4/tcp/" + "9" * 5000,
        "/bogus/1",
        "/p2p/notbase58!",
        "/p2p/1111",
        "/dns4/a b/tcp/1",
        "/ip4/1.2.3.4" + "/tcp/1" * 20,
        "/",
    ],
)
def test_junk_multiaddr_text_is_a_clear_usage_error(text: str) -> None:
    with pytest.raises(MultiaddrError) as info:
        Multiaddr.from_text(text)
    assert isinstance(info.value, UsageError)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "data",
    ["", "04", "047f0000", "ff", "a503", "a50326" + "00" * 3, "06" * 600, "9999999999999999999901"],
)
def test_junk_binary_multiaddr_is_refused(data: str) -> None:
    with pytest.raises(MultiaddrError):
        Multiaddr.from_bytes(bytes.fromhex(data))
    assert keyscheme.manifest_url(bytes.fromhex(data), "s", "a") is None


# -- peer ids, keys ---------------------------------------------------------------------------
def test_peer_id_of_a_known_key() -> None:
    public = SigningKey.from_seed(SEED).public
    peer = PeerId.from_ed25519(public.raw)
    assert str(peer) == SEED_PEER == public.peer_id
    assert PeerId.from_text(SEED_PEER) == peer
    assert peer.ed25519_key() == public.raw
    assert peer.kad_id == hashlib.sha256(peer.raw).digest()
    legacy = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"  # an RSA peer's sha2-256 id
    assert PeerId.from_text(legacy).raw[:2] == b"\x12\x20"
    for bad in ("", "0OIl", "1" * 200, "12D3KooW"):
        with pytest.raises(MultiaddrError):
            PeerId.from_text(bad)


def test_key_scheme_matches_js_libp2p() -> None:
    key = keyscheme.provider_key("stable", "x86_64")
    # js: CID.createV1(raw.code, await sha256.digest('/phase/stable/x86_64/manifest'))
    assert keyscheme.cid_text(key) == "bafkreigs6i2qfkxke43swmkahdr3bkxdttgun4f5g4bj4dtr2rj7u37w7q"
    assert key.hex() == "1220d2f23502aaea27372b314038e3b0aae39ccd46f0bd37029e0e71d453fa6ff6fc"
    assert keyscheme.provider_key("stable", "arm64") != key


# -- bootstrap words --------------------------------------------------------------------------
def test_bootstrap_words_mix_host_port_and_multiaddrs() -> None:
    ma = f"/ip4/192.0.2.1/tcp/4001/p2p/{SEED_PEER}"
    assert parse_contact(ma) == ma
    assert parse_contact("a.example:4001") == ("a.example", 4001)
    contacts = parse_contact_list(f"a:1,{ma} [::1]:2")
    assert split_contacts(contacts) == ([("a", 1), ("::1", 2)], [ma])
    assert contacts_from_cmdline(f"quiet phase.bootstrap={ma},b:3") == [ma, ("b", 3)]
    for bad in ("/ip4/1.2.3.4 /tcp/1", "/" * 600, "/ip4//tcp/1", "/a\x00"):
        with pytest.raises(UsageError):
            parse_contact(bad)


# -- noise ------------------------------------------------------------------------------------
def test_noise_hkdf_is_rfc5869_with_empty_info() -> None:
    # RFC 5869 test case 3: SHA-256, IKM = 22 x 0x0b, empty salt and info.
    out1, out2 = noise.hkdf(b"", b"\x0b" * 22)
    assert (out1 + out2)[:42].hex() == (
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    )


def _handshake() -> tuple[noise.HandshakeState, noise.HandshakeState]:
    a = noise.HandshakeState(True, SigningKey.from_seed(SEED))
    b = noise.HandshakeState(False, SigningKey.generate())
    b.read(a.write())
    a.read(b.write())
    b.read(a.write())
    return a, b


def test_noise_xx_both_sides_agree_and_learn_each_others_peer_id() -> None:
    a, b = _handshake()
    assert a.result is not None and b.result is not None
    assert str(b.result.remote_peer) == SEED_PEER
    assert a.result.remote_peer == PeerId.from_ed25519(b.identity.public.raw)
    for _ in range(3):
        assert b.result.recv.decrypt(b"", a.result.send.encrypt(b"", b"ping")) == b"ping"
        assert a.result.recv.decrypt(b"", b.result.send.encrypt(b"", b"pong")) == b"pong"


def test_noise_tampering_is_refused() -> None:
    a, b = _handshake()
    assert a.result is not None and b.result is not None
    sealed = bytearray(a.result.send.encrypt(b"", b"data"))
    sealed[0] ^= 1
    with pytest.raises(ProtocolError):
        b.result.recv.decrypt(b"", bytes(sealed))
    # A responder whose payload signs another static key: refused by the initiator.
    a = noise.HandshakeState(True, SigningKey.generate())
    b = noise.HandshakeState(False, SigningKey.generate())
    b.read(a.write())
    b.s_pub = noise.x25519_keypair()[1]  # sign a key it does not hold
    with pytest.raises(ProtocolError):
        a.read(b.write())
    # Truncated and oversized handshake messages.
    for message in (b"", b"x" * 40, b"x" * (noise.MAX_MESSAGE + 1)):
        c = noise.HandshakeState(True, SigningKey.generate())
        c.write()
        with pytest.raises(ProtocolError):
            c.read(message)


def test_noise_payload_of_another_key_type_is_refused() -> None:
    secp = protobuf.field_varint(1, 2) + protobuf.field_bytes(2, b"\x02" * 33)
    payload = protobuf.field_bytes(1, secp) + protobuf.field_bytes(2, b"s" * 64)
    with pytest.raises(ProtocolError, match="key type 2"):
        noise.check_payload(payload, b"k" * 32)


# -- yamux ------------------------------------------------------------------------------------
def test_yamux_header_known_answer() -> None:
    header = yamux.Header(yamux.TYPE_WINDOW, yamux.SYN, 1, 0)
    assert header.encode().hex() == "000100010000000100000000"
    assert yamux.Header.decode(header.encode()) == header
    with pytest.raises(ProtocolError):
        yamux.Header.decode(bytes.fromhex("010000000000000000000000"))
    with pytest.raises(ProtocolError):
        yamux.Header.decode(bytes.fromhex("000700000000000000000000"))


class _Pipe:
    """One side of an in-memory secure channel (whole frames, like Noise)."""

    def __init__(self, inbox: asyncio.Queue[bytes], outbox: asyncio.Queue[bytes]) -> None:
        self.inbox = inbox
        self.outbox = outbox
        self.closed = False

    async def read_frame(self) -> bytes:
        data = await self.inbox.get()
        if not data:
            raise ConnectionError("closed")
        return data

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.outbox.put_nowait(data)

    async def drain(self) -> None:
        await asyncio.sleep(0)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.outbox.put_nowait(b"")


def test_yamux_sessions_exchange_large_data_with_flow_control() -> None:
    async def main() -> None:
        q1: asyncio.Queue[bytes] = asyncio.Queue()
        q2: asyncio.Queue[bytes] = asyncio.Queue()
        payload = bytes(range(256)) * 4096  # 1 MiB: four windows' worth

        async def echo(stream: yamux.Stream) -> None:
            data = await stream.readexactly(len(payload))
            await stream.send(hashlib.sha256(data).digest())
            await stream.close()

        client = yamux.Session(_Pipe(q1, q2), client=True, handler=None)
        server = yamux.Session(_Pipe(q2, q1), client=False, handler=echo)
        client.start()
        server.start()
        stream = client.open_stream()
        sender = asyncio.ensure_future(stream.send(payload))
        digest = await asyncio.wait_for(stream.readexactly(32), 10)
        await sender
        assert digest == hashlib.sha256(payload).digest()
        await stream.close()
        await client.close()
        await server.close()

    asyncio.run(main())


def test_yamux_peer_exceeding_the_window_or_wrong_parity_ends_the_session() -> None:
    async def main(frames: list[bytes]) -> str:
        inbox: asyncio.Queue[bytes] = asyncio.Queue()
        outbox: asyncio.Queue[bytes] = asyncio.Queue()

        async def sink(stream: yamux.Stream) -> None:
            await asyncio.sleep(5)

        session = yamux.Session(_Pipe(inbox, outbox), client=True, handler=sink)
        session.start()
        for frame in frames:
            inbox.put_nowait(frame)
        for _ in range(100):
            if session.closed:
                break
            await asyncio.sleep(0.01)
        await session.close()
        return session.close_reason

    big = yamux.Header(yamux.TYPE_DATA, yamux.SYN, 2, yamux.INITIAL_WINDOW + 1).encode()
    assert "yamux data frame" in asyncio.run(main([big]))
    over = [yamux.Header(yamux.TYPE_DATA, yamux.SYN, 2, 0).encode()]
    over += [yamux.Header(yamux.TYPE_DATA, 0, 2, 65536).encode() + bytes(65536)] * 5
    assert "beyond the stream window" in asyncio.run(main(over))
    odd = yamux.Header(yamux.TYPE_WINDOW, yamux.SYN, 3, 0).encode()
    assert "wrong parity" in asyncio.run(main([odd]))


# -- kademlia messages, identify --------------------------------------------------------------
def test_kad_messages_round_trip_and_bounds() -> None:
    me = kadmsg.PeerInfo(PeerId.from_text(SEED_PEER), (http_multiaddr("127.0.0.1", 8080),))
    key = keyscheme.provider_key("stable", "x86_64")
    message = kadmsg.decode(kadmsg.encode(kadmsg.ADD_PROVIDER, key, [me]))
    assert message.type == kadmsg.ADD_PROVIDER and message.key == key
    assert message.providers == (me,)
    junk_peer = protobuf.field_bytes(1, b"\x99\x01") + protobuf.field_bytes(2, b"\xff")
    many = [protobuf.field_bytes(8, me.encode())] * 50 + [protobuf.field_bytes(8, junk_peer)]
    decoded = kadmsg.decode(protobuf.field_varint(1, kadmsg.FIND_NODE) + b"".join(many))
    assert len(decoded.closer) == kadmsg.MAX_PEERS and decoded.dropped == 31
    bad_addr = protobuf.field_bytes(1, me.peer.raw) + protobuf.field_bytes(2, b"\xff\xff")
    decoded = kadmsg.decode(protobuf.field_bytes(9, bad_addr))
    assert decoded.providers[0].addrs == () and decoded.dropped == 1
    for bad in (b"\x08\x09", b"\x12\x05ab", bytes(kadmsg.MAX_MESSAGE + 1)):
        with pytest.raises(ProtocolError):
            kadmsg.decode(bad)


def test_identify_message_fields() -> None:
    public = SigningKey.from_seed(SEED).public.raw
    found = protobuf.fields(
        identify_message(public, [http_multiaddr("127.0.0.1", 8080)], None, ["/ipfs/id/1.0.0"])
    )
    assert protobuf.one_bytes(found, 1) == b"\x08\x01\x12\x20" + public
    assert protobuf.all_bytes(found, 2) == [bytes.fromhex("047f000001061f90e003")]
    assert protobuf.all_bytes(found, 3) == [b"/ipfs/id/1.0.0"]


# -- RSA peers (Qm... ids: most long-lived go-ipfs nodes) ------------------------------------
# A 2048-bit RSA libp2p key and its signature over "noise-libp2p-static-key:" + 32 x "k", made
# by js-libp2p (@libp2p/crypto 5.1.23: generateKeyPair('RSA'), key.sign).
RSA_KEY_PROTO = bytes.fromhex(
    "080012a60230820122300d06092a864886f70d01010105000382010f003082010a0282010100cf206032ca10"
    "bb87f076fb2436da3c796ccd8cf87a94f49bc8a16dc08be72dd96794037e1c44b53a92b4aac72fae3a8f7ed4"
    "59ad06ccbcc7548e0d0b390c37231593eb7fc6c1abe06e4c57728f7bde14af050ba0d047c6eca8769926a4d3"
    "f7ddfce7298ba2940adba60bb297f7b33ac7305befcd662948ce88b7e18649fd2a20d26f06e9aa1f81eaf713"
    "1ae2925dfee895b97b30f3388b68aee97c312311eafc2423537395d6b989257e1b70c66cebe2118d60481668"
    "e478ba962c4a508add0a8d27039ed77a6141a2fe42a84abc7b7e6251718040bd245e976aea9ed4b1b25f7dc8"
    "5079eb985fc04566279e9af6bef9f221f44af5533ed7e0aa83129a814fff0203010001"
)
RSA_SIG = bytes.fromhex(
    "480adec0f352e76fc47f33566e8eaf560d852c930b09289244eb5e18c20d2064d8c51b1a397a87d6e88a243c"
    "48c1a6e89f3f84ef2107753d712b1aff3918a62da68d537d27178ce2a18b28f630948d038b694ab471e5d0b9"
    "0a546a0452deac2547b8e988f456a659bc7c248ba117b91dc2c9dbf0b95ee0271b9a375907ae61a96eb19998"
    "7d1736a8a35c7c06aedcb27274c07de9941669569f16208dfa91cc69c51ac2163d51927ca46dfb049b8a88b2"
    "956ae6ab32678414476786af8606c611f07a35bfeb3344bbd726c6cebdaada487657d567f51ee63e175e1294"
    "6785ee67e93d6cc3fd51fe04b4219aa15b4889ed1bf44aec5b24ea687b25a4b92b2eb933"
)
RSA_PEER = "QmXfDm3nNd8C73MoMHvkyvcVZvyhgaYTi1cR4V62Wrh3BW"


def test_rsa_peer_signature_and_peer_id_known_answer() -> None:
    static = b"k" * 32
    assert noise.check_payload(
        protobuf.field_bytes(1, RSA_KEY_PROTO) + protobuf.field_bytes(2, RSA_SIG), static
    ) == PeerId.from_text(RSA_PEER)
    forged = bytearray(RSA_SIG)
    forged[-1] ^= 1
    with pytest.raises(ProtocolError, match="bad identity signature"):
        noise.check_payload(
            protobuf.field_bytes(1, RSA_KEY_PROTO) + protobuf.field_bytes(2, bytes(forged)), static
        )
    der = RSA_KEY_PROTO[5:]  # after 08 00 12 a6 02
    assert rsa.verify(der, b"noise-libp2p-static-key:" + static, RSA_SIG)
    assert not rsa.verify(der, b"another message", RSA_SIG)
    for bad in (b"", der[:-1], der + b"\0", b"\x30\x84\xff\xff\xff\xff"):
        with pytest.raises(ProtocolError):
            rsa.parse_public_key(bad)


def test_address_filter_keeps_internet_lookups_off_private_addresses() -> None:
    from phase_client.libp2p.client import address_filter
    from phase_client.libp2p.kad import dial_targets

    answer = [
        Multiaddr.from_text(a)
        for a in (
            "/ip4/10.0.0.1/tcp/4001",
            "/ip4/127.0.0.1/tcp/4001",
            "/ip6/fe80::1/tcp/4001",
            "/ip4/198.51.100.1/udp/4001/quic-v1",
            "/ip4/8.8.8.8/tcp/4001",
            "/dns4/peer.example/tcp/4001",
        )
    ]
    private, allow = address_filter([Multiaddr.from_text(f"/ip4/8.8.4.4/tcp/4001/p2p/{SEED_PEER}")])
    assert not private
    assert dial_targets(answer, allow) == [("8.8.8.8", 4001), ("peer.example", 4001)]
    private, allow = address_filter([Multiaddr.from_text("/ip4/127.0.0.1/tcp/4001")])
    assert private
    assert ("10.0.0.1", 4001) in dial_targets(answer, allow)


def test_yamux_inbound_streams_beyond_the_cap_are_reset() -> None:
    async def main() -> list[yamux.Header]:
        inbox: asyncio.Queue[bytes] = asyncio.Queue()
        outbox: asyncio.Queue[bytes] = asyncio.Queue()

        async def hold(stream: yamux.Stream) -> None:
            await asyncio.sleep(5)

        session = yamux.Session(_Pipe(inbox, outbox), client=True, handler=hold)
        session.start()
        for i in range(yamux.MAX_INBOUND + 4):
            inbox.put_nowait(yamux.Header(yamux.TYPE_WINDOW, yamux.SYN, 2 + 2 * i, 0).encode())
        for _ in range(100):
            if outbox.qsize() >= yamux.MAX_INBOUND + 4:
                break
            await asyncio.sleep(0.01)
        replies = [yamux.Header.decode(outbox.get_nowait()) for _ in range(outbox.qsize())]
        await session.close()
        return replies

    replies = asyncio.run(main())
    assert sum(1 for h in replies if h.flags == yamux.ACK) == yamux.MAX_INBOUND
    assert sum(1 for h in replies if h.flags == yamux.RST) == 4


def test_plasmd_config_takes_multiaddr_bootstraps_from_file_and_flags(tmp_path: Path) -> None:
    from phase_client.provider.config import ConfigError, load_config_file, resolve

    ma = f"/ip4/127.0.0.1/tcp/4001/p2p/{SEED_PEER}"
    config = tmp_path / "plasmd.toml"
    config.write_text(f'[dht]\nbootstrap = ["127.0.0.1:4002", "{ma}"]\n')
    (tmp_path / "art").mkdir()
    from_file = resolve({"artifacts": str(tmp_path / "art")}, load_config_file(config))
    assert from_file.dht_settings.bootstrap == (("127.0.0.1", 4002),)
    assert from_file.dht_settings.libp2p_bootstrap == (ma,)
    other = ma.replace("4001", "4005")
    flags = {"artifacts": str(tmp_path / "art"), "bootstrap": [other]}
    merged = resolve(flags, load_config_file(config))  # each kind: the flags' if any
    assert merged.dht_settings.libp2p_bootstrap == (other,)
    assert merged.dht_settings.bootstrap == (("127.0.0.1", 4002),)
    config.write_text('[dht]\nbootstrap = ["/ip4/1.2.3.4/udp/4001/quic-v1"]\n')
    with pytest.raises(ConfigError, match="not a TCP multiaddr"):
        load_config_file(config)
    with pytest.raises(UsageError, match="invalid port"):
        resolve({"artifacts": str(tmp_path / "art"), "bootstrap": ["/ip4/1.2.3.4/tcp/x"]})
