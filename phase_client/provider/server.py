"""``plasmd serve`` orchestration: bind, scan, serve, watch, advertise, shut down cleanly.

The HTTP server runs in its own thread; the calling thread re-scans the artifacts every
``scan_interval`` seconds (which also re-signs manifests before they expire) until ``stop`` is
set, e.g. by a SIGTERM/SIGINT handler. Advertisers hear ``start`` once, ``update`` whenever the
offers change and ``stop`` at shutdown; a failing advertiser is logged and never stops serving.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ..errors import UsageError
from ..hostport import url_host
from ..keys import SigningKey
from ..mdns.interfaces import primary_address
from .advertise import Advertiser, Offer
from .catalog import Catalog, Snapshot, describe_changes
from .config import EVERY_ADDRESS, ServeConfig
from .hashcache import HashCache
from .http import ProviderServer
from .metrics import Family, counter, gauge
from .sdnotify import notify
from .statedir import IDENTITY_FILE, StateDir

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 5.0  # seconds running transfers get to finish before they are cut
SETTLE_STEP = 0.25  # seconds between the first scan's re-scans while files settle


# What opening an IPv6 socket on ``::`` fails with where the system has no IPv6 (booted with
# ipv6.disable=1, a kernel or container without it): the default then listens on IPv4 alone.
NO_IPV6 = frozenset({errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT})
S = TypeVar("S")


def advertised_host(config: ServeConfig) -> str:
    """The host of the offers' URLs (DHT records, status): ``--advertise-host``, else a specific
    ``--bind`` address, else this machine's first IPv4 address, else its first global or
    unique-local IPv6 address. mDNS picks per link (``mdns.records.manifest_url_for``)."""
    if config.advertise_host:
        return config.advertise_host
    if config.bind not in ("0.0.0.0", "::", EVERY_ADDRESS):
        return config.bind
    return primary_address()


def dht_listen_host(config: ServeConfig) -> str | None:
    """Where the DHT node listens: the ``--bind`` address, ``::`` (both stacks) for ``--bind
    ::``, else (no --bind) IPv4 everywhere, as before: HTTP on both families lets clients that
    only have IPv6 fetch, while the DHT's reach changes only when asked."""
    if config.bind in (EVERY_ADDRESS, "0.0.0.0"):
        return None
    return config.bind


def listen(bind: str, open_at: Callable[[str], S]) -> tuple[S, str]:
    """``open_at(host)`` for ``bind`` and that host: the address given, else ``::`` (both
    families: a client with only an IPv6 link-local address can fetch what mDNS tells it of),
    else, when the system has no IPv6, ``0.0.0.0`` with an INFO line saying why. Any other
    OSError (a busy port) is raised as it is."""
    if bind != EVERY_ADDRESS:
        return open_at(bind), bind
    if not socket.has_ipv6:
        reason = "Python was built without IPv6"
    else:
        try:
            return open_at("::"), "::"
        except OSError as exc:
            if exc.errno not in NO_IPV6:
                raise
            reason = exc.strerror or str(exc)
    log.info("No IPv6 on this system (%s): listening on IPv4 only", reason)
    return open_at("0.0.0.0"), "0.0.0.0"


def listen_error(exc: OSError, bind: str, port: int) -> UsageError:
    """The one line for a failed listen, naming the address as the user gave it."""
    if exc.errno == errno.EADDRINUSE:
        return UsageError(f"port {port} on {bind or 'every address'} is busy")
    where = f"{url_host(bind)}:{port}" if bind else f"port {port} of every address"
    return UsageError(f"cannot listen on {where}: {exc.strerror or exc}")


class DualStackServer(ProviderServer):
    """``::`` (``--bind ::``, or no --bind) serves IPv6 and IPv4 (v4-mapped) on one socket,
    whatever the system's ``net.ipv6.bindv6only`` default says; a specific IPv6 address serves
    IPv6 only."""

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6 and self.server_address[0] == "::":
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def make_mdns_advertiser(config: ServeConfig) -> Advertiser | None:
    try:
        from .advertise_mdns import MdnsAdvertiser
    except ImportError:
        log.warning("mdns advertising not available")
        return None
    advertiser: Advertiser = MdnsAdvertiser(
        advertise_host=config.advertise_host, interfaces=list(config.mdns_interfaces) or None
    )
    return advertiser


def make_dht_advertiser(config: ServeConfig, identity: SigningKey) -> Advertiser | None:
    try:
        from .advertise_dht import DhtAdvertiser
    except ImportError:
        log.warning("dht advertising not available")
        return None
    settings = config.dht_settings
    options: dict[str, Any] = {
        "identity": identity,
        "provider_name": config.name,
        "port": settings.port,
        "bootstrap": list(settings.bootstrap),
        "state_file": config.state_dir / "dht-routing.json",  # contacts kept across restarts
    }
    listen_host = dht_listen_host(config)
    if listen_host is not None:
        options["listen_host"] = listen_host
    if settings.ttl is not None:
        options["ttl"] = settings.ttl
    if settings.republish_interval is not None:
        options["republish_interval"] = settings.republish_interval
    advertiser: Advertiser = DhtAdvertiser(**options)
    return advertiser


def build_advertisers(config: ServeConfig, identity: SigningKey) -> list[Advertiser]:
    makers: list[tuple[str, bool, Callable[[], Advertiser | None]]] = [
        ("mdns", config.mdns, lambda: make_mdns_advertiser(config)),
        ("dht", config.dht, lambda: make_dht_advertiser(config, identity)),
    ]
    result = []
    for name, enabled, make in makers:
        if not enabled:
            continue
        try:
            advertiser = make()
        except UsageError:
            raise  # its settings are wrong: a configuration error like any other (exit 2)
        except Exception as exc:  # a broken advertiser must not stop the HTTP service
            log.warning("%s advertising failed to start: %s", name, exc)
            continue
        if advertiser is not None:
            result.append(advertiser)
    return result


class Provider:
    def __init__(
        self,
        config: ServeConfig,
        *,
        state: StateDir,
        identity: SigningKey,
        signing_key: SigningKey,
        advertisers: Sequence[Advertiser] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.state = state
        self.identity = identity
        self.signing_key = signing_key
        self.advertisers = list(advertisers)
        self.cache = HashCache(state.hash_cache_path)
        self.catalog = Catalog(
            root=config.artifacts_root,
            channel_dirs=config.channel_dirs,
            expected_channels=config.expected_channels,
            expected_arches=config.expected_arches,
            key=signing_key,
            hasher=self.cache.sha256,
            last_sequence=state.last_sequence,
            record_sequence=state.record_sequence,
            validity_days=config.manifest_validity_days,
            default_channel=config.default_channel,
            default_arch=config.default_arch,
            clock=clock,
            settle_time=config.settle_time,
        )
        self.server: ProviderServer | None = None
        self.started = time.monotonic()
        self.stopping = threading.Event()
        self.host = advertised_host(config)
        self._offers: list[Offer] = []
        self.scans = 0
        self.scan_seconds = 0.0  # all scans together
        self.last_scan_seconds = 0.0

    # -- what the HTTP server asks ------------------------------------------------------------

    @property
    def snapshot(self) -> Snapshot:
        return self.catalog.snapshot

    def healthy(self) -> bool:
        return bool(self.snapshot.entries) and not self.stopping.is_set()

    @property
    def port(self) -> int:
        return self.server.server_port if self.server else self.config.port

    def status(self) -> dict[str, Any]:
        snapshot = self.snapshot
        offered = []
        for offer in self._offers:
            entry = snapshot.entries.get(offer.combination)
            if entry is None:
                continue
            offered.append(
                {
                    "channel": offer.channel,
                    "arch": offer.arch,
                    "version": offer.version,
                    "sequence": offer.sequence,
                    "manifest_path": offer.manifest_path,
                    "manifest_url": offer.manifest_url,
                    "mirror": entry.mirror,
                    "expires_at": entry.manifest.document["expires_at"],
                    "artifacts": sorted(entry.manifest.artifacts),
                }
            )
        return {
            "name": self.config.name,
            "keyid": self.signing_key.public.keyid,
            "peer_id": self.identity.public.peer_id,
            "url": f"http://{url_host(self.host)}:{self.port}/",
            "offered": offered,
            "default": snapshot.default,
            "missing": list(snapshot.missing),
            "pending": dict(snapshot.pending),
            "rejected": dict(snapshot.rejected),
            "advertisers": [getattr(a, "name", type(a).__name__) for a in self.advertisers],
            "uptime_s": round(time.monotonic() - self.started, 3),
        }

    # -- life cycle ---------------------------------------------------------------------------

    def bind(self) -> None:
        try:
            self.server, host = listen(self.config.bind, self._server_at)
        except OSError as exc:
            raise listen_error(exc, self.config.bind, self.config.port) from exc
        log.info("Listening on http://%s:%d/", url_host(host), self.port)
        log.info("Signing keyid %s", self.signing_key.public.keyid)
        if self.signing_key.public == self.identity.public:
            log.info("Public key for clients: %s.pub", self.state.path / IDENTITY_FILE)
        identity = self.identity.public
        log.info("Peer id %s (identity %s)", identity.peer_id, identity.keyid)

    def _server_at(self, host: str) -> DualStackServer:
        return DualStackServer(
            (host, self.config.port),
            self,
            self.config.idle_timeout,
            header_timeout=self.config.header_timeout,
            min_send_rate=self.config.min_send_rate,
            send_grace=self.config.send_grace,
            evict_below_rate=self.config.evict_below_rate,
        )

    def offers(self, snapshot: Snapshot) -> list[Offer]:
        base = f"http://{url_host(self.host)}:{self.port}"
        return [
            Offer(
                channel=entry.channel,
                arch=entry.arch,
                version=entry.manifest.version,
                sequence=entry.manifest.sequence,
                port=self.port,
                manifest_path=entry.manifest_path,
                manifest_url=base + entry.manifest_path,
            )
            for entry in snapshot.entries.values()
        ]

    def scan(self, first: bool = False, stop: threading.Event | None = None) -> bool:
        """Re-scan; log what changed; True when the offers changed. The first scan waits (up to
        the settle time, unless ``stop`` is set) for files still being written."""
        before = self.catalog.snapshot
        started = time.monotonic()
        after = self.catalog.scan()
        self._scanned(time.monotonic() - started)
        if first:
            after = self._settle(after, stop or threading.Event())
        self.cache.prune({f.path for e in after.entries.values() for f in e.files.values()})
        self.cache.save()
        for level, message in describe_changes(before, after, first):
            log.log(level, "%s", message)
        offers = self.offers(after)
        changed = offers != self._offers
        self._offers = offers
        return changed

    def _settle(self, snapshot: Snapshot, stop: threading.Event) -> Snapshot:
        """Re-scan while combinations are pending, for at most the settle time and a bit."""
        step = SETTLE_STEP
        for _ in range(math.ceil(self.config.settle_time / step) + 2):
            if not snapshot.pending or stop.wait(step):
                break
            started = time.monotonic()
            snapshot = self.catalog.scan()
            self._scanned(time.monotonic() - started)
        return snapshot

    def _scanned(self, seconds: float) -> None:
        self.scans += 1
        self.scan_seconds += seconds
        self.last_scan_seconds = seconds

    def metrics(self) -> list[Family]:
        """The provider's side of /metrics (the HTTP server adds its own)."""
        snapshot = self.snapshot
        files = {f.path: f.size for e in snapshot.entries.values() for f in e.files.values()}
        combinations = Family(
            "plasmd_catalog_combinations", "gauge", "channel/arch combinations, by state"
        )
        for state, count in (
            ("offered", len(snapshot.entries)),
            ("pending", len(snapshot.pending)),
            ("missing", len(snapshot.missing)),
            ("rejected", len(snapshot.rejected)),
        ):
            combinations.add(count, {"state": state})
        scans = Family("plasmd_scan_duration_seconds", "summary", "time taken by artifact scans")
        scans.add(self.scan_seconds, suffix="_sum").add(self.scans, suffix="_count")
        families = [
            combinations,
            gauge("plasmd_catalog_files", "artifact files offered", len(files)),
            gauge(
                "plasmd_catalog_bytes", "bytes of the artifact files offered", sum(files.values())
            ),
            counter("plasmd_sign_operations_total", "manifests signed", self.catalog.signs),
            scans,
            gauge(
                "plasmd_last_scan_duration_seconds",
                "time the last scan took",
                self.last_scan_seconds,
            ),
            gauge("plasmd_uptime_seconds", "seconds since start", time.monotonic() - self.started),
        ]
        mdns = dht_held = dht_published = None
        for advertiser in self.advertisers:
            with contextlib.suppress(Exception):  # a broken advertiser costs its metrics only
                if getattr(advertiser, "name", "") == "mdns":
                    mdns = len(advertiser.instance_names())  # type: ignore[attr-defined]
                elif getattr(advertiser, "name", "") == "dht":
                    dht_held = advertiser.records_held()  # type: ignore[attr-defined]
                    dht_published = advertiser.published  # type: ignore[attr-defined]
        if mdns is not None:
            families.append(gauge("plasmd_mdns_registrations", "mDNS services registered", mdns))
        if dht_held is not None:
            families.append(gauge("plasmd_dht_records_held", "records in this DHT node", dht_held))
        if dht_published is not None:
            families.append(
                counter(
                    "plasmd_dht_records_published_total",
                    "provider records stored on at least one DHT node",
                    dht_published,
                )
            )
        return families

    def _advertise(self, method: str) -> None:
        for advertiser in list(self.advertisers):
            try:
                if method == "stop":
                    advertiser.stop()
                else:
                    getattr(advertiser, method)(list(self._offers))
            except Exception as exc:
                name = getattr(advertiser, "name", type(advertiser).__name__)
                log.warning("%s advertiser %s failed: %s", name, method, exc)

    def run(self, stop: threading.Event) -> int:
        """Serve until ``stop`` is set. ``bind`` must have been called."""
        assert self.server is not None
        self.scan(first=True, stop=stop)
        thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)
        thread.start()
        self._advertise("start")
        notify("READY=1\nSTATUS=serving and advertising")  # systemd's Type=notify
        try:
            while not stop.wait(self.config.scan_interval):
                try:
                    if self.scan():
                        self._advertise("update")
                except Exception as exc:  # keep serving the last good catalog
                    log.warning("Re-scan failed: %s", exc)
        finally:
            self.shutdown(thread)
        return 0

    def shutdown(self, thread: threading.Thread) -> None:
        log.info("Shutting down")
        notify("STOPPING=1")
        self.stopping.set()
        self._advertise("stop")
        assert self.server is not None
        self.server.shutdown()  # no new connections or requests are accepted after this
        thread.join(timeout=10)
        deadline = time.monotonic() + SHUTDOWN_GRACE
        while self.server.stats.active_transfers and time.monotonic() < deadline:
            time.sleep(0.05)
        cut = self.server.stats.active_transfers
        self.server.server_close()
        log.info("Stopped%s", f" ({cut} transfers cut)" if cut else "")
