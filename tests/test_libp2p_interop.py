"""phase_client/libp2p against js-libp2p (tests/libp2p_js: libp2p 2.10, kad-dht 15.1, Noise,
Yamux; five nodes on 127.0.0.1, the standard /ipfs/kad/1.0.0), both ways, with real plasmd
serve processes behind the HTTP addresses; and hostile peers (silent, garbage, oversized
messages, the wrong peer id), which cost one bounded timeout and are reported in one line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from phase_client.discovery.model import Candidate, Query
from phase_client.discovery.orchestrate import find_providers
from phase_client.keys import SigningKey
from phase_client.libp2p import client, kadmsg, multistream, noise, protobuf, varint, yamux
from phase_client.libp2p.conn import SecureConn, _Plain, _read_noise_message
from phase_client.libp2p.multiaddr import Multiaddr
from phase_client.libp2p.peerid import PeerId

from .conftest import run_tool
from .libp2p_js.jsnet import JsNet, node_available
from .provider_helpers import ServerProcess, make_tree, serve_args

KEY_TEXT = "/phase/stable/x86_64/manifest"
pytestmark = pytest.mark.skipif(node_available() is not None, reason=str(node_available()))


@pytest.fixture(scope="module")
def jsnet() -> Iterator[JsNet]:
    with JsNet(5) as net:
        yield net


@contextlib.contextmanager
def provider(tmp_path: Path, *extra: str) -> Iterator[ServerProcess]:
    make_tree(tmp_path / "art", {"stable/x86_64": 4096})
    args = serve_args(tmp_path / "art", tmp_path / "state", "--settle-time", "0", *extra)
    server = ServerProcess(args)
    try:
        yield server.started()
    finally:
        server.stop()


def test_js_provider_record_is_found_by_phase_discover(jsnet: JsNet, tmp_path: Path) -> None:
    with provider(tmp_path) as server:
        http = f"/ip4/127.0.0.1/tcp/{server.port}/http"
        js = jsnet.request("spawn", announce=[http])
        jsnet.request("provide", node=js["node"], key=KEY_TEXT)
        result = run_tool(
            "discover",
            "--source",
            "libp2p",
            "--bootstrap",
            jsnet.bootstrap(1),
            "--arch",
            "x86_64",
            "--timeout",
            "20",
            "--json",
        )
        assert result.returncode == 0, result.stderr.decode()
        (found,) = json.loads(result.stdout)["providers"]
        assert found["url"] == f"{server.url}/stable/x86_64/manifest.json"
        assert found["source"] == "libp2p"
        assert found["peer_id"] == js["peer_id"]
        assert found["rtt_ms"] is not None  # the probe reached the real plasmd behind it
        assert b"libp2p: 1 provider(s) of stable/x86_64" in result.stderr


def test_plasmd_serve_publishes_and_js_find_providers_sees_it(jsnet: JsNet, tmp_path: Path) -> None:
    with provider(tmp_path, "--bootstrap", jsnet.bootstrap(0)) as server:
        peer = server.wait_for(r"^INFO Peer id (12D3KooW\w+)").group(1)
        provided = server.wait_for(r"libp2p: stable/x86_64 provided to (\d+) peer\(s\)")
        assert int(provided.group(1)) >= 1
        http = f"/ip4/127.0.0.1/tcp/{server.port}/http"
        for node in (2, 4):  # any node finds it, through the DHT
            found = jsnet.request("find", node=node, key=KEY_TEXT, timeout_ms=5000, want=20)
            ours = [p for p in found["providers"] if p["peer_id"] == peer]
            assert ours and http in ours[0]["addrs"], found


def test_auto_uses_libp2p_beside_mdns_when_a_multiaddr_is_given() -> None:
    seen: list[tuple[str, object]] = []
    ma = f"/ip4/127.0.0.1/tcp/9/p2p/{PeerId.from_ed25519(bytes(32)).__str__()}"

    def mdns(query: Query, interfaces: object, quiet: object = None) -> list[Candidate]:
        seen.append(("mdns", None))
        return []

    def dht(query: Query, contacts: object) -> list[Candidate]:
        seen.append(("dht", contacts))
        return []

    def p2p(query: Query, multiaddrs: object) -> list[Candidate]:
        seen.append(("libp2p", multiaddrs))
        return [
            Candidate(
                "libp2p", "http://192.0.2.9:80/stable/x86_64/manifest.json", "stable", "x86_64"
            )
        ]

    found = find_providers(
        Query(timeout=2),
        bootstrap=[ma, ("192.0.2.1", 4001)],
        probe=False,
        mdns_lookup=mdns,
        dht_lookup=dht,
        libp2p_lookup=p2p,
        networks=[],
    )
    assert [c.source for c in found] == ["libp2p"]
    assert sorted(seen, key=str) == sorted(
        [("mdns", None), ("dht", [("192.0.2.1", 4001)]), ("libp2p", [ma])], key=str
    )


# -- hostile peers ----------------------------------------------------------------------------
class Hostile:
    """A TCP listener on 127.0.0.1 doing one bad thing per connection (in its own thread)."""

    def __init__(self, behaviour: str, silent_port: int = 9) -> None:
        self.behaviour = behaviour
        self.silent_port = silent_port
        self.identity = SigningKey.generate()
        self.loop = asyncio.new_event_loop()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    @property
    def multiaddr(self) -> str:
        peer = PeerId.from_ed25519(self.identity.public.raw)
        return f"/ip4/127.0.0.1/tcp/{self.port}/p2p/{peer}"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            self.server = await asyncio.start_server(self._handle, sock=self.sock)
            self.ready.set()
            await self.server.serve_forever()

        with contextlib.suppress(asyncio.CancelledError):
            self.loop.run_until_complete(main())

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await self._misbehave(reader, writer)
        writer.close()

    async def _misbehave(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.behaviour == "silent":
            await asyncio.sleep(60)
            return
        if self.behaviour == "garbage":
            writer.write(bytes(range(256)) * 16)
            await writer.drain()
            await asyncio.sleep(60)
            return
        if self.behaviour == "huge-multistream":
            writer.write(varint.encode(1 << 30) + b"/multistream/1.0.0\n")
            await writer.drain()
            await asyncio.sleep(60)
            return
        # A real libp2p responder whose Kademlia answer announces a 50 MB message.
        await multistream.handle(_Plain(reader, writer), ["/noise"])
        handshake = noise.HandshakeState(False, self.identity)
        handshake.read(await _read_noise_message(reader))
        writer.write(noise.frame(handshake.write()))
        handshake.read(await _read_noise_message(reader))
        assert handshake.result is not None
        secure = SecureConn(reader, writer, handshake.result.send, handshake.result.recv)
        await multistream.handle(secure, ["/yamux/1.0.0"])

        async def kad(stream: yamux.Stream) -> None:
            await multistream.handle(stream, ["/ipfs/kad/1.0.0"])
            request = kadmsg.decode(await multistream.read_length_prefixed(stream, 4096))
            if self.behaviour == "liar":  # 20 made-up peers on a silent port, junk providers
                fake = [
                    kadmsg.PeerInfo(
                        PeerId.from_ed25519(SigningKey.generate().public.raw),
                        (Multiaddr.from_text(f"/ip4/127.0.0.1/tcp/{self.silent_port}"),),
                    )
                    for _ in range(20)
                ]
                providers = protobuf.field_bytes(9, fake[0].encode()) + protobuf.field_bytes(
                    9, protobuf.field_bytes(1, b"junk") + protobuf.field_bytes(2, b"\xff")
                )
                answer = kadmsg.encode(request.type, request.key) + providers
                answer += b"".join(protobuf.field_bytes(8, f.encode()) for f in fake)
                await stream.send(protobuf.length_prefixed(answer))
            else:
                await stream.send(varint.encode(50_000_000) + bytes(1000))
            await asyncio.sleep(60)

        session = yamux.Session(secure, client=False, handler=kad)
        session.start()
        await asyncio.sleep(60)

    def close(self) -> None:
        def stop() -> None:
            self.server.close()
            for task in asyncio.all_tasks(self.loop):
                task.cancel()

        self.loop.call_soon_threadsafe(stop)
        self.thread.join(10)
        self.sock.close()


@pytest.fixture
def hostile() -> Iterator[dict[str, Hostile]]:
    peers = {b: Hostile(b) for b in ("silent", "garbage", "huge-multistream", "huge-kad")}
    try:
        yield peers
    finally:
        for peer in peers.values():
            peer.close()


def test_hostile_peers_cost_one_bounded_timeout_each(
    hostile: dict[str, Hostile], jsnet: JsNet
) -> None:
    expected = {
        "silent": "no answer within 1 s",
        "garbage": "multistream message without its newline",
        "huge-multistream": "exceeds the limit of 1024",
        "huge-kad": "message of 50000000 bytes exceeds the limit",
    }
    for name, peer in hostile.items():
        boot = [Multiaddr.from_text(peer.multiaddr)]
        result = asyncio.run(
            client.find_providers(boot, "stable", "x86_64", timeout=5, rpc_timeout=1)
        )
        assert result.providers == [] and result.stats.answered == 0
        assert expected[name] in result.stats.errors[0], (name, result.stats.errors)
    # A peer that answers with 20 made-up peers (all silent) and junk provider records: the
    # walk asks them, each costs one timeout, and the lookup ends at its deadline with nothing
    # usable (a provider without an HTTP address gives no URL).
    liar = Hostile("liar", silent_port=hostile["silent"].port)
    try:
        boot = [Multiaddr.from_text(liar.multiaddr)]
        result = asyncio.run(
            client.find_providers(boot, "stable", "x86_64", timeout=3, rpc_timeout=0.5)
        )
    finally:
        liar.close()
    assert result.stats.answered == 1 and result.stats.dropped == 1
    assert 3 <= result.stats.contacted <= 60
    assert all(p.url is None for p in result.providers)
    # A real js node that is not the peer its /p2p/ id names: refused after the handshake.
    other = jsnet.nodes[1]["peer_id"]
    wrong = Multiaddr.from_text(re.sub(r"/p2p/\w+$", f"/p2p/{other}", jsnet.bootstrap(0)))
    result = asyncio.run(
        client.find_providers([wrong], "stable", "x86_64", timeout=5, rpc_timeout=2)
    )
    assert result.stats.answered == 0 and f"not the expected {other}" in result.stats.errors[0]


def test_phase_discover_with_only_hostile_bootstraps_says_so_and_exits_3(
    hostile: dict[str, Hostile],
) -> None:
    argv = ["discover", "--source", "libp2p", "--timeout", "3"]
    for peer in hostile.values():
        argv += ["--bootstrap", peer.multiaddr]
    result = run_tool(*argv)
    assert result.returncode == 3, result.stderr.decode()
    assert b"libp2p: no peer answered (4 tried" in result.stderr
    assert b"Traceback" not in result.stderr


@pytest.mark.parametrize(
    "word",
    [
        "/ip4/127.0.0.1/tcp/99999",
        "/ip4/127.0.0.1/udp/4001/quic-v1",
        "/ip4/127.0.0.1/tcp/1/p2p/notapeer",
        "/unknown/1",
    ],
)
def test_junk_multiaddr_bootstrap_is_one_line_exit_2(word: str) -> None:
    result = run_tool("discover", "--source", "libp2p", "--bootstrap", word, "--timeout", "1")
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "bootstrap" in lines[0], lines


def test_two_providers_listed_and_the_survivor_boots_the_client(
    jsnet: JsNet, tmp_path: Path
) -> None:
    """The design documents' task 5.3 on libp2p Kademlia: two plasmd serve processes publish
    stable/arm64; ``phase-discover --all`` lists both; one is killed; discovery and a fetch
    still succeed through the other (the dead one's record stays until it expires: the probe
    drops it)."""
    release = SigningKey.generate()
    (tmp_path / "release.key").write_bytes(release.file_bytes())
    boot = jsnet.bootstrap(2)
    servers = []
    with contextlib.ExitStack() as stack:
        for name, via in (("a", 0), ("b", 3)):
            make_tree(tmp_path / name / "art", {"stable/arm64": 8192})
            args = serve_args(
                tmp_path / name / "art",
                tmp_path / name / "state",
                *("--settle-time", "0", "--key", str(tmp_path / "release.key")),
                *("--bootstrap", jsnet.bootstrap(via), "--default-arch", "arm64"),
            )
            server = ServerProcess(args)
            stack.callback(server.stop)
            servers.append(server.started())
        for server in servers:
            server.wait_for(r"libp2p: stable/arm64 provided to [1-9]\d* peer\(s\)")
        urls = {f"{s.url}/stable/arm64/manifest.json" for s in servers}
        common = ["--source", "libp2p", "--bootstrap", boot, "--arch", "arm64"]
        listed = run_tool("discover", *common, "--all", "--timeout", "10", "--json")
        assert listed.returncode == 0, listed.stderr.decode()
        assert {p["url"] for p in json.loads(listed.stdout)["providers"]} == urls

        servers[0].stop(signal.SIGKILL)
        found = run_tool("discover", *common, "--all", "--timeout", "10", "--json")
        assert found.returncode == 0, found.stderr.decode()
        (alive,) = json.loads(found.stdout)["providers"]
        assert alive["url"] == f"{servers[1].url}/stable/arm64/manifest.json"
        fetched = run_tool(
            "fetch",
            "--discover",
            *common,
            "--discover-timeout",
            "10",
            "--key",
            release.public.keyid,
            "--output",
            str(tmp_path / "boot"),
            "--json",
        )
        assert fetched.returncode == 0, fetched.stderr.decode()
        assert (tmp_path / "boot" / "kernel").read_bytes() == (
            tmp_path / "b" / "art" / "stable" / "arm64" / "vmlinuz"
        ).read_bytes()


def test_an_rsa_keyed_peer_is_a_bootstrap_and_a_provider(jsnet: JsNet) -> None:
    """Most long-lived go-ipfs nodes, the public bootstrap peers among them, have RSA identity
    keys (``Qm...`` ids): their Noise payloads are checked with PKCS #1 v1.5 (libp2p/rsa.py)."""
    js = jsnet.request("spawn", key_type="RSA", announce=["/ip4/127.0.0.1/tcp/8099/http"])
    assert js["peer_id"].startswith("Qm")
    jsnet.request("provide", node=js["node"], key="/phase/rsa/x86_64/manifest")
    result = run_tool(
        *("discover", "--source", "libp2p", "--bootstrap", js["addrs"][0]),
        *("--channel", "rsa", "--arch", "x86_64", "--no-probe", "--timeout", "10", "--json"),
    )
    assert result.returncode == 0, result.stderr.decode()
    (found,) = json.loads(result.stdout)["providers"]
    assert found["peer_id"] == js["peer_id"]
    assert found["url"] == "http://127.0.0.1:8099/rsa/x86_64/manifest.json"


def test_advertiser_republishes_on_change(jsnet: JsNet) -> None:
    from phase_client.provider.advertise import Offer
    from phase_client.provider.advertise_libp2p import Libp2pAdvertiser, parse_bootstrap

    def offer(channel: str, port: int) -> Offer:
        path = f"/{channel}/x86_64/manifest.json"
        return Offer(channel, "x86_64", "1", 1, port, path, f"http://127.0.0.1:{port}{path}")

    identity = SigningKey.generate()
    advertiser = Libp2pAdvertiser(identity, parse_bootstrap([jsnet.bootstrap(1)]), rpc_timeout=5)
    advertiser.start([offer("chg1", 8101)])
    try:
        assert advertiser.wait_rounds(1, 60)
        assert advertiser.accepted["chg1/x86_64"] >= 1
        advertiser.update([offer("chg1", 8101)])  # nothing changed: no new round
        advertiser.update([offer("chg1", 8101), offer("chg2", 8101)])
        assert advertiser.wait_rounds(2, 60)
        assert advertiser.rounds == 2 and advertiser.accepted["chg2/x86_64"] >= 1
    finally:
        advertiser.stop()
    found = jsnet.request("find", node=3, key="/phase/chg2/x86_64/manifest", timeout_ms=5000)
    (ours,) = [p for p in found["providers"] if p["peer_id"] == identity.public.peer_id]
    assert "/ip4/127.0.0.1/tcp/8101/http" in ours["addrs"]


def test_a_dead_providers_record_expires_and_the_other_is_still_found() -> None:
    """Task 5.3's second half: the js nodes keep provider records ``--validity-ms`` (3 s here,
    48 h by default); the provider that stops republishing vanishes from the answers on that
    schedule, the one that republishes (every second here, 22 h in plasmd serve) stays."""
    from phase_client.provider.advertise import Offer
    from phase_client.provider.advertise_libp2p import Libp2pAdvertiser, parse_bootstrap

    def offer(port: int) -> Offer:
        path = "/stable/riscv64/manifest.json"
        return Offer("stable", "riscv64", "1", 1, port, path, f"http://127.0.0.1:{port}{path}")

    with JsNet(5, extra=["--validity-ms", "3000"]) as net:
        boot = parse_bootstrap([net.bootstrap(0)])
        dying = Libp2pAdvertiser(SigningKey.generate(), boot, republish=3600)
        staying = Libp2pAdvertiser(SigningKey.generate(), boot, republish=1)
        dying.start([offer(8201)])
        staying.start([offer(8202)])
        try:
            assert dying.wait_rounds(1, 30) and staying.wait_rounds(1, 30)

            def urls() -> set[str | None]:
                found = asyncio.run(
                    client.find_providers(boot, "stable", "riscv64", timeout=5, rpc_timeout=2)
                )
                return {p.url for p in found.providers}

            both = {f"http://127.0.0.1:{p}/stable/riscv64/manifest.json" for p in (8201, 8202)}
            assert urls() == both
            dying.stop()  # killed: no more republishing
            remaining = urls()
            for _ in range(60):  # the record lives 3 s, cleaned up every 0.6 s
                if len(remaining) < 2:
                    break
                time.sleep(0.25)
                remaining = urls()
            assert remaining == {"http://127.0.0.1:8202/stable/riscv64/manifest.json"}
            assert staying.rounds >= 2  # it kept republishing meanwhile
        finally:
            dying.stop()
            staying.stop()


def test_ipv6_bootstrap_and_provider_address(jsnet: JsNet) -> None:
    js = jsnet.request("spawn", listen=["/ip6/::1/tcp/0"], announce=["/ip6/::1/tcp/8300/http"])
    assert js["addrs"][0].startswith("/ip6/::1/tcp/")
    jsnet.request("provide", node=js["node"], key="/phase/v6/x86_64/manifest")
    result = run_tool(
        *("discover", "--source", "libp2p", "--bootstrap", js["addrs"][0]),
        *("--channel", "v6", "--arch", "x86_64", "--no-probe", "--timeout", "10", "--json"),
    )
    assert result.returncode == 0, result.stderr.decode()
    (found,) = json.loads(result.stdout)["providers"]
    assert found["url"] == "http://[::1]:8300/v6/x86_64/manifest.json"
    assert found["host"] == "::1" and found["port"] == 8300
