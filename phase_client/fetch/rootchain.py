"""Where the root chain comes from, and where it is kept (docs/trust.md). The rules are the pure
``phase_client.root``; this module only hands it documents and stores what it accepted.

A *place* holds roots by version: a directory (``root.<N>.json`` files: the state directory,
the directory of a manifest file, a fetch directory) or a provider (``/root/<N>.json`` on the
host of a manifest URL). For each next version the directories are asked first, in order, then
every provider at once; the first copy that verifies wins. A copy that cannot be read or does
not verify is that place's failure only (logged); once one provider has answered, the others get
``grace`` seconds, so a dripping provider never holds the walk. Each root is verified before the
next is asked for, and a walk makes at most ``MAX_CHAIN_STEPS`` steps.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from ..buildinfo import BUILD_TIME
from ..errors import LocalError, PhaseError, StateError, UsageError
from ..fsutil import atomic_write, read_regular_file
from ..manifest import dump_document
from ..root import (
    MAX_ROOT_BYTES,
    Root,
    Walk,
    check_fresh,
    check_self_signed,
    parse_root,
    root_too_large,
    walk,
)
from ..state import StateStore
from ..timefmt import parse_utc

if TYPE_CHECKING:  # imported when a URL is asked: phase-verify (local files only) stays light
    from .download import Http, Settings

log = logging.getLogger(__name__)

ROOT_NAME = "root.json"  # the root a keys directory holds (docs/trust.md)
CHAIN_FILE_RE = re.compile(r"root\.([1-9][0-9]{0,18})\.json\Z")
ALTERNATIVE_GRACE = 0.5


def chain_file(directory: Path, version: int) -> Path:
    return directory / f"root.{version}.json"


class PlaceFailed(Exception):
    """A place could not say whether it has a root (unreadable, unreachable, HTTP error)."""


class Place(Protocol):
    @property
    def label(self) -> str: ...

    def get(self, version: int) -> bytes | None:
        """Root ``version``'s bytes, None if this place has none; PlaceFailed (or a
        PhaseError such as an oversized document) when it cannot tell."""
        ...


class DirPlace(NamedTuple):
    directory: Path
    label: str

    def get(self, version: int) -> bytes | None:
        path = chain_file(self.directory, version)
        try:  # a regular file, never through a link, a FIFO fails at once
            return read_regular_file(path, MAX_ROOT_BYTES + 1, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PlaceFailed(f"{path}: {exc.strerror or exc}") from exc


class UrlPlace(NamedTuple):
    origin: str  # scheme://host:port
    http: Http
    time_limit: float

    @property
    def label(self) -> str:
        return self.origin

    def get(self, version: int) -> bytes | None:
        from .fetcher import Unreachable, read_manifest

        url = f"{self.origin}/root/{version}.json"
        try:
            return read_manifest(
                self.http, url, self.time_limit, limit=MAX_ROOT_BYTES, too_large=root_too_large
            )
        except Unreachable as exc:
            if exc.status == 404:
                return None
            raise PlaceFailed(str(exc)) from exc


def read_root_file(path: str | os.PathLike[str]) -> Root:
    """A root a client starts from (``--root FILE``, ``DIR/root.json``): readable, well formed
    and signed by a threshold of its own root keys, else a usage error (exit 2)."""
    try:
        data = read_regular_file(path, MAX_ROOT_BYTES + 1)
        root = parse_root(data)
        check_self_signed(root)
    except OSError as exc:
        raise UsageError(f"cannot read root {path}: {exc.strerror or exc}") from exc
    except PhaseError as exc:
        raise UsageError(f"root {path}: {exc}") from exc
    return root


def origin_of(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def places_for(
    locations: Sequence[str],
    state: StateStore | None = None,
    settings: Settings | None = None,
) -> list[Place]:
    """The state directory, then the directory of each manifest file, then the host of each
    manifest URL (once each); URLs only with ``settings`` (phase-fetch)."""
    places: list[Place] = []
    if state is not None:
        places.append(DirPlace(state.directory, f"state {state.directory}"))
    dirs: dict[Path, None] = {}
    origins: dict[str, None] = {}
    for location in locations:
        if location.startswith(("http://", "https://")):
            origins[origin_of(location)] = None
        elif location != "-":
            dirs[Path(location).parent] = None
    places += [DirPlace(d, str(d)) for d in dirs]
    if settings is not None and origins:
        from .download import Http

        http = Http(settings)
        places += [UrlPlace(o, http, 3 * settings.read_timeout) for o in origins]
    return places


class ChainReader:
    """``candidates(N)`` for ``root.walk`` over places; ``won[N]`` is the place whose copy of
    root N was the last handed out (the walk stops at the first that verifies, so for every
    root it accepted, this is where that root came from)."""

    def __init__(self, places: Sequence[Place], grace: float = ALTERNATIVE_GRACE) -> None:
        self.local = [p for p in places if isinstance(p, DirPlace)]
        self.remote = [p for p in places if not isinstance(p, DirPlace)]
        self.grace = grace
        self.won: dict[int, Place] = {}

    def _ask(self, place: Place, version: int) -> bytes | None:
        try:
            return place.get(version)
        except (PlaceFailed, PhaseError) as exc:
            log.warning("root %d from %s: %s", version, place.label, exc)
            return None

    def __call__(self, version: int) -> Iterator[tuple[str, bytes]]:
        for place in self.local:
            data = self._ask(place, version)
            if data is not None:
                self.won[version] = place
                yield place.label, data
        yield from self._remote(version)

    def _remote(self, version: int) -> Iterator[tuple[str, bytes]]:
        if not self.remote:
            return
        answers: queue.SimpleQueue[tuple[Place, bytes | None]] = queue.SimpleQueue()

        def load(place: Place) -> None:
            answers.put((place, self._ask(place, version)))

        for place in self.remote:
            threading.Thread(target=load, args=(place,), name="root-chain", daemon=True).start()
        # Each provider is bounded by its own deadlines; this is only a backstop.
        limits = [p.time_limit for p in self.remote if isinstance(p, UrlPlace)]
        deadline = time.monotonic() + max(limits, default=60.0) + 30
        for _ in self.remote:
            try:
                place, data = answers.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                log.warning("root %d: no answer in time from the other providers", version)
                return
            deadline = min(deadline, time.monotonic() + self.grace)
            if data is not None:
                self.won[version] = place
                yield place.label, data


def root_now(state: StateStore | None, system_now: int | None = None) -> int:
    """The effective time for the final root, by the manifests' rule: the latest of the system
    clock, the tool's build time and every clock floor of the state directory."""
    clock = int(time.time()) if system_now is None else system_now
    floors = [record.clock_floor for record in (state.records() if state else {}).values()]
    return max(clock, parse_utc(BUILD_TIME), *floors)


def keep_chain(directory: Path, roots: Sequence[Root]) -> None:
    """Write each root to ``directory/root.<N>.json`` atomically (temp file O_EXCL|O_NOFOLLOW,
    fsync, rename, fsync of the directory): a planted link is replaced, never written through."""
    for root in roots:
        assert root.document is not None
        atomic_write(chain_file(directory, root.version), dump_document(dict(root.document)))


class RootUpdate(NamedTuple):
    """The outcome of a walk from the root a client starts from."""

    walk: Walk

    @property
    def root(self) -> Root:
        return self.walk.root

    def to_json(self) -> dict[str, Any]:
        return {**self.root.to_json(), "steps": len(self.walk.steps), "bounded": self.walk.bounded}

    def keep_in(self, directory: Path) -> None:
        """Leave the chain past the starting root in a fetch directory (kexec-boot's re-check
        walks it there), and no other ``root.<N>.json``."""
        keep = {chain_file(directory, r.version).name for r in self.walk.steps}
        with os.scandir(directory) as entries:
            stale = [e.name for e in entries if CHAIN_FILE_RE.match(e.name) and e.name not in keep]
        for name in stale:
            with contextlib.suppress(FileNotFoundError):
                (directory / name).unlink()
        try:
            keep_chain(directory, self.walk.steps)
        except OSError as exc:
            raise LocalError(f"cannot write the root chain into {directory}: {exc}") from exc


def update_root(
    start: Root,
    places: Sequence[Place],
    state: StateStore | None = None,
    *,
    persist: bool = False,
    system_now: int | None = None,
    grace: float = ALTERNATIVE_GRACE,
) -> RootUpdate:
    """Walk from ``start`` over ``places``, keep the new roots in the state directory (with
    ``persist``: those that did not come from it), and refuse an expired final root.

    A root made from bare keys (``start.document`` None) walks no chain: the tools behave as
    they always did."""
    if start.document is None:
        return RootUpdate(Walk(start, ()))
    reader = ChainReader(places, grace)
    result = walk(start, reader)
    for reason in result.refused:
        log.warning("root refused: %s", reason)
    if result.bounded:
        log.warning("root chain: stopped after %d steps (the next run goes on)", len(result.steps))
    if result.steps:
        log.info("Root of trust: version %d -> %d", start.version, result.root.version)
    if persist and state is not None:
        fresh = [
            r for r in result.steps if _directory(reader.won.get(r.version)) != state.directory
        ]
        if fresh:
            try:
                state.directory.mkdir(parents=True, exist_ok=True)
                keep_chain(state.directory, fresh)
            except OSError as exc:
                raise StateError(f"cannot keep the root chain in {state.directory}: {exc}") from exc
    check_fresh(result.root, root_now(state, system_now))
    return RootUpdate(result)


def _directory(place: Place | None) -> Path | None:
    return place.directory if isinstance(place, DirPlace) else None
