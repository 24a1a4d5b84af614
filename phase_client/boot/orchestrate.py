"""phase-boot's flow in one process: discover -> fetch and verify -> stage -> hand off to kexec.

The boot ran three Python processes (phase-discover, phase-fetch, and phase-verify inside
kexec-boot), each paying the interpreter's start, its imports and the native unpack. Here the
same steps run once, in order, each the code its tool runs:

1. ``discover``: ``discovery.orchestrate.find_providers`` (mDNS, then the DHT), as
   ``phase-discover --list``, when no manifest URL was given.
2. ``fetch``: the root chain walk (``fetch.rootchain.update_root``) and ``fetch.fetcher.fetch``,
   as ``phase-fetch``: the manifest's signatures, freshness, channel/arch and rollback state are
   checked once, before any artifact byte is asked for; each artifact is hashed as it arrives
   and kept only if it matches; the rollback state is recorded.
3. ``stage``: ``boot.stage.stage``, as ``phase-verify --check-dir --stage-into``: the memory
   check, then every byte kexec will load is read from the fetch directory, hashed and copied
   into a fresh private (0700) directory, compared with the verified manifest's sizes and
   sha256. Those copies are what is handed to kexec (``handoff.py``); nothing re-reads the
   fetch directory after they were hashed.

   Without a fetch directory (``BootRequest.output`` None: the initramfs's way) the private
   directory is made first and the fetch writes straight into it, after the memory check on
   the verified manifest: the bytes hashed as they arrived are the bytes kexec loads, in a
   directory nobody else can write, so ``boot.stage.stage_in_place`` reads none of them again
   (only a carried rootfs is copied, and hashed again, into the initrd). The one check of
   every byte still happens, once, in one place: as it arrives.

What is no longer done is the second verification of the same manifest by a second process
(kexec-boot's phase-verify read back ``DIR/manifest.json``, which this process wrote after
verifying it): the verified manifest never leaves memory. Every check still happens, once.

Each step is a method, so a caller (the CLI) can say which one failed; ``Booter`` holds no
argument parsing and prints nothing: progress goes to the ``say`` callback.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import NoSourceError
from ..hostport import Contact, split_contacts

if TYPE_CHECKING:
    from ..discovery.model import Candidate, Query
    from ..fetch.download import Settings
    from ..fetch.result import FetchResult
    from ..root import Root
    from ..state import StateStore
    from ..trust import VerifiedManifest

log = logging.getLogger(__name__)


def describe_sources(source: str, bootstrap: Sequence[Contact]) -> str:
    """Where discovery looked, for the one line that says nothing was found."""
    if source != "auto":
        return {"mdns": "mDNS", "dht": "DHT", "libp2p": "libp2p DHT"}.get(source, source)
    contacts, multiaddrs = split_contacts(bootstrap)
    return ", ".join(
        ["mDNS", *(["DHT"] if contacts else []), *(["libp2p DHT"] if multiaddrs else [])]
    )


STAGE_PREFIX = "phase-boot."


class BootRequest(NamedTuple):
    """Everything one boot needs. With ``manifests`` empty, providers are discovered."""

    channel: str
    arch: str
    output: Path | None  # the fetch directory (phase-fetch --output); None: fetch into ``stage``
    start: Root  # the root of trust the chain walk starts from
    manifests: Sequence[str] = ()
    state: StateStore | None = None
    source: str = "auto"  # discovery: auto | mdns | dht
    bootstrap: Sequence[Contact] = ()  # (host, port) of the private DHT, libp2p multiaddrs
    discover_timeout: float = 10.0
    probe: bool = True
    settings: Settings | None = None
    stage: Path | None = None  # the private directory to create; None: stage_path()
    meminfo: Path | None = Path("/proc/meminfo")
    consume: bool = False


class Staged(NamedTuple):
    """What kexec loads, all in the private directory ``directory``, every byte hashed."""

    directory: Path
    kernel: Path
    initrd: Path | None
    dtb: Path | None
    cmdline: str  # the staged command line (signed cmdline, phase.version=, ...)
    consumed: tuple[str, ...] = ()  # artifacts whose fetched file --consume removed

    def to_json(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "kernel": str(self.kernel),
            "initrd": str(self.initrd) if self.initrd else None,
            "dtb": str(self.dtb) if self.dtb else None,
            "cmdline": self.cmdline,
            "consumed": list(self.consumed),
        }


# What the boot imports once a provider is found, in small steps (each a few ms on a host, a tenth
# of a second or less under TCG emulation), dependencies first: the root of trust (PyNaCl, the
# manifest's parser), the fetch (urllib3 with http.client and email: ~40 ms on a host, about half
# a second under emulation, imported by the fetch's first request when not before) and the
# staging. Discovery mostly waits on the network (mDNS answers, the window for other LAN
# providers, the probe): phase-boot --start-when imports these in the time it waits for the
# network, and what is left while discovery runs, never ahead of it.
FETCH_STEPS = (
    "nacl.bindings",
    "nacl.signing",
    "phase_client.keys",
    "phase_client.timefmt",
    "phase_client.manifest",
    "phase_client.trust",
    "phase_client.root",
    "phase_client.state",
    "phase_client.fetch.rootchain",
    "email.utils",
    "phase_client.fetch.download",
    "phase_client.fetch.fetcher",
    "phase_client.fetch.progress",
    "http.client",
    "urllib3.exceptions",
    "urllib3.util",
    "importlib.metadata",
    "urllib3.connection",
    "urllib3.response",
    "urllib3.connectionpool",
    "urllib3",
    "phase_client.httpdeadline",
)
STAGE_MODULES = ("phase_client.boot.stage", "phase_client.boot.carry")
# Everything the boot imports after discovery.
AFTER_DISCOVERY = (*FETCH_STEPS, *STAGE_MODULES)


# What discovery imports on its way to a LAN answer (zeroconf with asyncio): the largest share of
# the start-up.
DISCOVERY_MODULES = ("phase_client.discovery.orchestrate", "phase_client.discovery.mdns")
# What the DHT adds (kademlia, rpcudp, umsgpack): auto mode asks it only when the LAN has no
# provider. Under emulation these are ~0.5 s of start-up, so before the boot they are imported
# only in time that is idle anyway (waiting for the network), never ahead of the LAN's path.
DHT_MODULES = ("phase_client.discovery.dht", "phase_client.dht.node", "phase_client.dht.records")
# The same in small steps, each a few ms on a host (a tenth of a second or so under emulation):
# the go is looked for between two steps, so none may be long.
DHT_STEPS = (
    "phase_client.discovery.dht",
    "pickle",
    "umsgpack",
    "rpcudp.protocol",
    "kademlia.routing",
    "kademlia.network",
    "phase_client.dht.records",
    "phase_client.dht.admission",
    "phase_client.dht.crawler",
    "phase_client.dht.node",
)


def preload_plan(discover: bool, source: str = "auto") -> tuple[list[str], list[str]]:
    """What a caller with idle time before the boot imports first, and what only while it still
    waits: ``(needed, idle)``. With discovery, only its own modules are needed at the go: the
    rest (``AFTER_DISCOVERY``, then in auto mode the DHT's) is imported while waiting, and what
    is left of it while discovery runs. Without discovery everything is needed at once."""
    needed: list[str] = []
    idle: list[str] = []
    if not discover:
        return list(AFTER_DISCOVERY), idle
    if source in ("auto", "mdns"):
        needed += DISCOVERY_MODULES
    if source == "dht":
        needed += (DISCOVERY_MODULES[0], *DHT_MODULES)  # the orchestrator, then the DHT
    idle += AFTER_DISCOVERY
    if source == "auto":
        idle += DHT_STEPS
    return needed, idle


def preload(modules: Sequence[str]) -> None:
    """Import ``modules`` now: for a caller that has idle time before the boot may start
    (docs/boot.md: the init runs phase-boot while DHCP waits for its lease)."""
    for name in modules:
        importlib.import_module(name)


def wait_for_network(
    path: Path,
    timeout: float,
    poll: float = 0.05,
    idle: Sequence[str] = (),
    link: Callable[[], object] | None = None,
) -> str:
    """Wait until ``path`` exists (``timeout`` seconds at most) and say what it says: ``go``
    (the network is up) or ``stop`` (for anything else: the caller gave up, no network); or
    ``link`` as soon as ``link()`` is true before either (a usable link-local address: stage
    1's look at the link, docs/boot.md). TimeoutError when none came. Meanwhile ``idle`` is
    imported, one module between two looks: what is left when it comes is imported later,
    where it is needed (a failure here is only a failure of the warm-up: the real import
    raises it again where it belongs)."""
    deadline = time.monotonic() + timeout
    pending = list(idle)
    while True:
        try:
            with open(path, "rb") as f:
                return "go" if f.read(16).strip() == b"go" else "stop"
        except FileNotFoundError:
            pass
        if link is not None and link():
            return "link"
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{path} did not appear within {timeout:g} s")
        if pending:
            try:
                importlib.import_module(pending.pop(0))
            except Exception:  # see above
                pending.clear()
            continue
        time.sleep(poll)


def warm_up(modules: Sequence[str]) -> threading.Thread:
    """Import ``modules`` in a daemon thread; a later import of one waits for it (the import
    system's per-module locks), and a failure here is only a failure of the warm-up: the real
    import raises it again where it belongs."""

    def load() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # the step's own import reports it
                return

    thread = threading.Thread(target=load, name="warm-up", daemon=True)
    thread.start()
    return thread


class Discovery:
    """Discovery (``discovery.orchestrate.find_providers``) in a daemon thread, so that its
    caller can go on meanwhile: it mostly waits on the network. Daemon: a caller that fails
    (an unreadable root of trust) exits without waiting for it."""

    def __init__(
        self,
        query: Query,
        *,
        source: str = "auto",
        bootstrap: Sequence[Contact] = (),
        probe: bool = True,
        until_quiet: bool = False,
    ) -> None:
        self.query = query
        self.source = source
        self.bootstrap = bootstrap
        self.probe = probe
        self.until_quiet = until_quiet
        self._found: list[Candidate] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="discover", daemon=True)

    @classmethod
    def of(cls, request: BootRequest) -> Discovery:
        from ..discovery.model import Query

        query = Query(channel=request.channel, arch=request.arch, timeout=request.discover_timeout)
        return cls(query, source=request.source, bootstrap=request.bootstrap, probe=request.probe)

    def start(self) -> Discovery:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            from ..discovery.orchestrate import find_providers

            self._found = find_providers(
                self.query,
                source=self.source,
                bootstrap=self.bootstrap,
                probe=self.probe,
                until_quiet=self.until_quiet,
            )
        except BaseException as exc:  # raised again by result(), in the caller's thread
            self._error = exc

    def result(self) -> list[Candidate]:
        """The candidates found, best first (empty: none); what discovery raised, raised."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._found


def stage_path(environ: dict[str, str] | None = None) -> Path:
    """A new, unguessable name for the private directory: under $TMPDIR, else /run (when
    writable), else /tmp, as kexec-boot names its own."""
    env = os.environ if environ is None else environ
    parent = env.get("TMPDIR") or ("/run" if os.access("/run", os.W_OK) else "/tmp")
    return Path(parent) / f"{STAGE_PREFIX}{os.urandom(8).hex()}"


class Booter:
    """The boot's steps over one ``BootRequest``; ``say`` hears one line per step."""

    def __init__(self, request: BootRequest, say: Callable[[str], None] | None = None) -> None:
        self.request = request
        self.say = say or (lambda message: log.info("%s", message))
        # The private directory the fetch wrote straight into (no fetch directory), once made.
        self.fetched_into: Path | None = None

    def discover(self, running: Discovery | None = None, must_find: bool = True) -> list[str]:
        """Manifest URLs of the reachable providers, best first (phase-discover --list).
        NoSourceError when none answered within the timeout (empty without ``must_find``).
        ``running``: the discovery the caller started already (``Discovery.start``), having
        imported the fetch side meanwhile; without it one starts here, and the fetch side is
        imported beside it."""
        request = self.request
        if running is None:
            running = Discovery.of(request).start()
            warm_up(AFTER_DISCOVERY)
        found = running.result()
        if not found and not must_find:
            return []
        if not found:
            where = describe_sources(request.source, request.bootstrap)
            raise NoSourceError(
                f"discovery: no provider of {request.channel}/{request.arch} found ({where})"
            )
        for candidate in found:
            self.say(
                f"discovered {candidate.url} via {candidate.source} "
                f"(version {candidate.version or '-'})"
            )
        return [candidate.url for candidate in found]

    def fetch(self, manifests: list[str]) -> FetchResult:
        """phase-fetch's work: walk the root chain, verify the first manifest that verifies,
        stream and hash its artifacts into ``output``, record the rollback state."""
        from ..fetch.download import Settings
        from ..fetch.fetcher import FetchRequest, fetch
        from ..fetch.progress import Progress
        from ..fetch.rootchain import places_for, update_root
        from ..root import release_policy

        request = self.request
        settings = request.settings or Settings()
        self.say(f"fetching {' '.join(manifests)}")
        update = update_root(
            request.start,
            places_for(manifests, request.state, settings),
            request.state,
            persist=True,
        )
        private = request.stage or stage_path()
        in_place = request.output is None

        def make_private_dir(verified: VerifiedManifest) -> None:
            self._make_private_dir(verified, private)

        fetch_request = FetchRequest(
            manifests=manifests,
            output=request.output or private,
            policy=release_policy(update.root, request.channel, request.arch),
            state=request.state,
            settings=settings,
            before_commit=update.keep_in if request.start.document is not None else None,
            on_verified=make_private_dir if in_place else None,
        )
        try:
            result = fetch(fetch_request, Progress(enabled=False))
            self.say("manifest verified, artifacts fetched and checked")
        except BaseException:
            self.discard()
            raise
        return result

    def _make_private_dir(self, verified: VerifiedManifest, private: Path) -> None:
        """Once the manifest verified, before its first artifact byte: the memory check (room
        in RAM for the image, an initrd built beside it and kexec's copies:
        ``memory_needed_in_place``), then the fresh private directory the fetch writes into
        (``stage.make_private_dir``)."""
        from ..errors import StageError
        from ..manifest import dump_document
        from .stage import boot_plan, check_memory, make_private_dir, memory_needed_in_place

        request = self.request
        manifest = verified.manifest
        if request.meminfo is not None:
            try:
                plan = boot_plan(manifest, dump_document(dict(manifest.document)))
            except ValueError as exc:
                raise StageError(str(exc)) from exc
            needed = memory_needed_in_place(plan, manifest, request.consume)
            check_memory(needed, request.meminfo)
        make_private_dir(private)
        self.fetched_into = private

    def discard(self) -> None:
        """Remove the private directory the fetch wrote into, if any (a failed boot)."""
        if self.fetched_into is not None:
            import shutil

            shutil.rmtree(self.fetched_into, ignore_errors=True)
            self.fetched_into = None

    def stage(self, result: FetchResult) -> Staged:
        """What kexec loads, in the private directory (boot/stage.py): the files fetched
        straight into it (``stage_in_place``), else every byte copied there from the fetch
        directory, hashed as it is copied (``stage``)."""
        from ..manifest import dump_document
        from .stage import boot_plan, consumed, stage, stage_in_place, staged_cmdline

        request = self.request
        manifest = result.verified.manifest
        # The bytes phase-fetch wrote as DIR/manifest.json: what travels with a rootfs.
        manifest_bytes = dump_document(dict(manifest.document))
        if self.fetched_into is not None:
            private = self.fetched_into
            try:
                initrd = stage_in_place(manifest, manifest_bytes, private, request.consume)
            except BaseException:
                self.discard()
                raise
        else:
            assert request.output is not None
            private = request.stage or stage_path()
            stage(
                manifest,
                manifest_bytes,
                request.output,
                private,
                request.meminfo,
                consume=request.consume,
            )
            initrd = private / "initrd" if (private / "initrd").exists() else None
        removed: list[str] = []
        if request.consume:
            # Staging made this plan already, from the same bytes: it cannot fail here.
            plan = boot_plan(manifest, manifest_bytes)
            removed = consumed(plan, manifest, in_place=self.fetched_into is not None)
        signed_by = ", ".join(result.verified.signed_by)
        self.say(
            f"VERIFIED {manifest.channel}/{manifest.arch} version {manifest.version} sequence "
            f"{manifest.sequence} signed by {signed_by}; files match; staged in {private}"
        )
        return Staged(
            directory=private,
            kernel=private / "kernel",
            initrd=initrd,
            dtb=private / "dtb" if (private / "dtb").exists() else None,
            cmdline=staged_cmdline(manifest),
            consumed=tuple(removed),
        )

    def run(self) -> tuple[FetchResult, Staged]:
        """Every step, in order."""
        manifests = list(self.request.manifests) or self.discover()
        result = self.fetch(manifests)
        return result, self.stage(result)
