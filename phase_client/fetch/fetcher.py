"""phase-fetch orchestration: manifest -> verify -> artifacts -> atomic renames -> state.

Nothing is requested from an artifact source before the manifest verified. Artifacts are kept as
``DIR/.<name>.part`` until every one of them matched its signed size and sha256; only then are they
renamed to ``DIR/<name>``, followed by ``DIR/cmdline`` and ``DIR/manifest.json`` (``_commit``). On
any failure every part file of the run is removed, so a final file exists only if it was verified.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import re
import stat
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from ..byterange import ByteRange
from ..errors import (
    IntegrityError,
    LocalError,
    ManifestError,
    NoSourceError,
    PhaseError,
    UsageError,
)
from ..fsutil import create_exclusive, fsync_dir, write_temp
from ..manifest import (
    ARTIFACT_FILES,
    MAX_MANIFEST_BYTES,
    Artifact,
    dump_document,
    manifest_too_large,
    parse_manifest,
    read_manifest_file,
)
from ..state import StateStore
from ..trust import TrustPolicy, VerifiedManifest, content_digest
from ..verification import verify_bytes
from .cache import BlobCache
from .download import (
    Delivered,
    Http,
    Settings,
    SourceFailed,
    Stats,
    Transfer,
    describe_error,
    fetch_split,
    fetch_whole,
    find_liars,
    range_digests,
)
from .progress import Progress
from .result import ArtifactResult, FetchResult
from .sources import Source, SourceBook, is_url, sources_for

log = logging.getLogger(__name__)


class FetchRequest(NamedTuple):
    """Everything one run needs. ``manifests`` are alternatives (e.g. what discovery found)."""

    manifests: Sequence[str]
    output: Path
    policy: TrustPolicy
    state: StateStore | None = None
    record_state: bool = True
    only: list[str] | None = None
    mirrors: Sequence[str] = ()
    cache: Path | None = None
    settings: Settings = Settings()
    # Called with DIR after every artifact verified, before the commit (the root chain's files).
    before_commit: Callable[[Path], None] | None = None
    # Called with the verified manifest before DIR is made or any artifact byte is asked for: a
    # PhaseError from it ends the run there (phase-boot's memory check, fetching into RAM).
    on_verified: Callable[[VerifiedManifest], None] | None = None


class ManifestChoice(NamedTuple):
    verified: VerifiedManifest
    location: str
    others: list[str]


class Unreachable(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the HTTP status, when the server answered with one


def read_manifest(
    http: Http | None,
    location: str,
    time_limit: float = 60.0,
    limit: int = MAX_MANIFEST_BYTES,
    too_large: Callable[..., PhaseError] = manifest_too_large,
) -> bytes:
    """Manifest bytes from a URL or file, refusing more than 1 MiB before reading it all
    (another document: its ``limit`` and ``too_large(size, where)`` error; a URL only).

    ``time_limit`` bounds the whole body: a server dripping a byte just before each read
    timeout would otherwise hold the boot for hours.
    """
    if not is_url(location):
        try:
            return read_manifest_file(location)
        except OSError as exc:
            raise Unreachable(f"cannot read {location}: {exc.strerror or exc}") from exc
    else:
        assert http is not None
        u3 = http.urllib3
        try:
            response = http.get(location)
        except (u3.exceptions.HTTPError, OSError) as exc:
            raise Unreachable(f"{location}: {describe_error(exc)}") from exc
        try:
            if response.status != 200:
                raise Unreachable(f"{location}: HTTP {response.status}", response.status)
            length = response.headers.get("Content-Length")
            if length is not None and length.isascii() and length.isdigit() and int(length) > limit:
                raise too_large(int(length), location)
            parts: list[bytes] = []
            got = 0
            deadline = time.monotonic() + time_limit
            while got <= limit:
                if time.monotonic() > deadline:
                    raise Unreachable(f"{location}: too slow (no manifest after {time_limit:g}s)")
                data = response.read1(limit + 1 - got, decode_content=False)
                if not data:
                    break
                parts.append(data)
                got += len(data)
            data = b"".join(parts)
        except (u3.exceptions.HTTPError, OSError) as exc:
            raise Unreachable(f"{location}: {describe_error(exc)}") from exc
        finally:
            response.close()
    if len(data) > limit:
        raise too_large(where=location)
    return data


ALTERNATIVE_GRACE = 0.5  # seconds the other alternatives get once one manifest has verified


def choose_manifest(
    http: Http | None,
    locations: Sequence[str],
    policy: TrustPolicy,
    state: StateStore | None,
    time_limit: float = 60.0,
    grace: float = ALTERNATIVE_GRACE,
) -> ManifestChoice:
    """The earliest-listed location whose manifest verifies; the others that carry the same
    signed content become extra artifact sources.

    All are fetched at once, each in a daemon thread bounded by its own deadlines. Once one has
    verified, the others still out get ``grace`` seconds, then are left behind: a dripping or
    dead alternative never holds the boot. Any failure to read, parse or verify a document is
    that source's failure, never the run's.
    """
    answers: queue.SimpleQueue[tuple[int, bytes | BaseException]] = queue.SimpleQueue()

    def load(index: int, location: str) -> None:
        try:
            answers.put((index, read_manifest(http, location, time_limit)))
        except BaseException as exc:  # reported by the main thread; a thread never raises
            answers.put((index, exc))

    for index, location in enumerate(locations):
        threading.Thread(
            target=load, args=(index, location), name=f"manifest-{index}", daemon=True
        ).start()

    results: dict[int, bytes | BaseException] = {}
    verified: dict[int, VerifiedManifest] = {}
    errors: dict[int, PhaseError] = {}
    deadline: float | None = None
    # Each reader is bounded by its own deadlines; this outer bound is only a backstop.
    backstop = time.monotonic() + time_limit + 30
    while len(results) < len(locations):
        timeout = max(0.0, (deadline or backstop) - time.monotonic())
        try:
            index, result = answers.get(timeout=timeout)
        except queue.Empty:
            break
        results[index] = result
        # Verify what could still be chosen: anything listed before the best verified so far.
        if isinstance(result, bytes) and index < min(verified, default=len(locations)):
            try:
                verified[index] = verify_bytes(result, policy, state)
            except Exception as exc:
                errors[index] = _as_phase_error(exc, locations[index])
        if verified and deadline is None:
            deadline = time.monotonic() + grace
    for index in sorted(set(range(len(locations))) - set(results)):
        log.warning("skipping manifest %s: no answer in time", locations[index])

    chosen: ManifestChoice | None = None
    unreachable: list[str] = []
    best = min(verified, default=None)
    for index in sorted(results):
        location, result = locations[index], results[index]
        if isinstance(result, Unreachable):
            unreachable.append(str(result))
            if len(locations) > 1:  # fallback happens: say which provider was skipped, and why
                log.warning("skipping manifest %s", result)
        elif isinstance(result, BaseException):
            errors[index] = _as_phase_error(result, location)
        elif index == best:
            chosen = ManifestChoice(verified[index], location, [])
        elif chosen is not None:
            if _same_content(result, chosen.verified.digest):
                chosen.others.append(location)
            else:
                log.info("manifest %s differs from the one chosen; not used as a source", location)
    for index, error in sorted(errors.items()):
        log.warning("manifest %s: %s", locations[index], error)
    if chosen is not None:
        return chosen
    if errors:
        raise errors[min(errors)]
    raise NoSourceError("no manifest reachable: " + "; ".join(unreachable))


def _same_content(data: bytes, digest: str) -> bool:
    try:
        return content_digest(parse_manifest(data)) == digest
    except Exception:  # an alternative that does not even parse is simply not the same
        return False


def _as_phase_error(exc: BaseException, location: str) -> PhaseError:
    """One source's failure as the error a user sees, with the source named in it."""
    if not isinstance(exc, PhaseError):
        # A parser bug or a library error on hostile input: still only this source's failure.
        log.debug("manifest %s", location, exc_info=exc)
        return ManifestError(f"{location}: cannot read the manifest: {type(exc).__name__}")
    return _located(exc, location)


def _located(exc: BaseException, location: str) -> PhaseError:
    if isinstance(exc, PhaseError) and location not in str(exc):
        renamed = type(exc)(f"{location}: {exc}")
        return renamed
    assert isinstance(exc, PhaseError)
    return exc


def _open_part(path: Path) -> int:
    """A fresh part file. Whatever has the name now (a part left by a killed run, or a planted
    symlink to a file elsewhere) is unlinked, which never follows a link; O_EXCL|O_NOFOLLOW then
    refuse anything that reappears under the name instead of writing unverified bytes into it."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return create_exclusive(path, 0o644, readable=True)


class Fetcher:
    def __init__(self, request: FetchRequest, progress: Progress | None = None) -> None:
        self.request = request
        self.settings = request.settings
        self.progress = progress or Progress(enabled=False)
        self.book = SourceBook()
        self._http: Http | None = None

    @property
    def http(self) -> Http:
        if self._http is None:
            self._http = Http(self.settings)
        return self._http

    def run(self) -> FetchResult:
        request = self.request
        need_http = any(is_url(m) for m in request.manifests)
        choice = choose_manifest(
            self.http if need_http else None,
            request.manifests,
            request.policy,
            request.state,
            time_limit=3 * self.settings.read_timeout,
        )
        manifest = choice.verified.manifest
        log.info(
            "Verified manifest %s/%s version %s sequence %d from %s",
            manifest.channel,
            manifest.arch,
            manifest.version,
            manifest.sequence,
            choice.location,
        )
        names = list(manifest.artifacts)
        if request.only:
            missing = [n for n in request.only if n not in manifest.artifacts]
            if missing:
                raise UsageError(
                    f"artifact {', '.join(missing)} not in the manifest (it has {', '.join(names)})"
                )
            names = [n for n in names if n in request.only]
        if request.on_verified is not None:
            request.on_verified(choice.verified)
        try:
            request.output.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create {request.output}: {exc.strerror or exc}") from exc
        parts: dict[str, Path] = {}
        results: dict[str, ArtifactResult] = {}
        try:
            for name in names:
                part = request.output / f".{name}.part"
                parts[name] = part
                results[name] = self._artifact(manifest.artifacts[name], part, choice)
            if request.before_commit is not None:
                request.before_commit(request.output)
            self._commit(choice, parts)
        except OSError as exc:  # network errors never get here: they are Cut/SourceFailed
            where = f" {exc.filename}" if exc.filename else f" in {request.output}"
            raise LocalError(f"cannot write{where}: {exc.strerror or exc}") from exc
        finally:
            for part in parts.values():
                with contextlib.suppress(FileNotFoundError):
                    part.unlink()
        if request.state is not None and request.record_state:
            request.state.record(choice.verified)
        return FetchResult(
            verified=choice.verified,
            source=choice.location,
            extra_sources=tuple(choice.others),
            output=request.output,
            artifacts=results,
        )

    def _artifact(self, artifact: Artifact, part: Path, choice: ManifestChoice) -> ArtifactResult:
        request = self.request
        started = time.monotonic()
        stats = Stats()
        cached = False
        fd = _open_part(part)
        try:
            cache = BlobCache(request.cache) if request.cache else None
            if cache is not None and cache.copy_out(artifact.sha256, artifact.size, fd):
                cached = True
                log.info(
                    "%s: from cache (%d bytes, sha256 re-checked)", artifact.name, artifact.size
                )
            else:
                self._download(artifact, part, fd, choice, stats)
            os.fsync(fd)
        finally:
            os.close(fd)
        if cache is not None and not cached:
            cache.store(artifact.sha256, artifact.size, part)
        delivered = {k: v for k, v in stats.bytes_from.items() if v > 0}
        result = ArtifactResult(
            name=artifact.name,
            file=request.output / artifact.name,
            size=artifact.size,
            sha256=artifact.sha256,
            source="cache" if cached else max(delivered, key=lambda k: delivered[k], default=""),
            sources=delivered,
            received=stats.received,
            seconds=time.monotonic() - started,
            retries=stats.retries,
            resumed=stats.resumed,
            restarted=stats.restarted,
            split=stats.split,
            cached=cached,
            failures=tuple(stats.failures),
        )
        log.info(
            "%s: %d bytes verified in %.2fs (%.1f MB/s) from %s",
            artifact.name,
            artifact.size,
            result.seconds,
            result.mb_per_s,
            result.source,
        )
        return result

    def _failed(self, stats: Stats, failure: SourceFailed, name: str) -> None:
        stats.fail(failure)
        log.warning("%s: source %s failed: %s", name, failure.source, failure.reason)
        if failure.bad:
            self.book.ban(failure.source, failure.reason)
        elif failure.unreachable:
            self.book.mark_unreachable(failure.source, failure.reason)

    def _download(
        self, artifact: Artifact, part: Path, fd: int, choice: ManifestChoice, stats: Stats
    ) -> None:
        request = self.request
        candidates = sources_for(artifact, choice.location, request.mirrors, choice.others)
        self.progress.start(artifact.name, artifact.size)
        http = self.http if any(s.is_http for s in candidates) else None
        transfer = Transfer(http, self.settings, self.progress, stats)
        try:
            usable = self.book.usable(candidates)
            suspect: list[Delivered] | None = None
            if (
                len(usable) >= 2
                and artifact.size >= self.settings.split_min
                and self.settings.connections >= 2
            ):
                stats.split = True
                delivered: list[tuple[Source, ByteRange]] = []
                digest = fetch_split(
                    transfer,
                    usable,
                    artifact,
                    fd,
                    stats,
                    lambda f: self._failed(stats, f, artifact.name),
                    delivered,
                )
                complete = bool(digest)
                if digest == artifact.sha256:
                    return
                # A wrong hash over ranges from several sources does not say which one lied.
                # Keep a digest of each source's ranges (not the copy: in place, the artifact
                # would be in RAM twice), fetch one source at a time into a fresh part file,
                # then hash the same ranges of the verified file to find the liar.
                log.warning(
                    "%s: multi-source download %s; retrying one source at a time",
                    artifact.name,
                    "did not verify" if complete else "was incomplete",
                )
                if complete:
                    suspect = range_digests(fd, delivered)
                    part.unlink()
                    fresh = _open_part(part)
                    os.dup2(fresh, fd)
                    os.close(fresh)
                stats.split = False
                self.progress.start(artifact.name, artifact.size)
            for source in self.book.usable(candidates):
                stats.start_over()
                try:
                    fetch_whole(transfer, source, artifact, fd, stats)
                    if suspect is not None:
                        self._ban_liars(artifact, fd, suspect, stats)
                    return
                except SourceFailed as failure:
                    self._failed(stats, failure, artifact.name)
        finally:
            self.progress.finish()
        self._give_up(artifact, candidates, stats)

    def _ban_liars(
        self,
        artifact: Artifact,
        fd: int,
        delivered: list[Delivered],
        stats: Stats,
    ) -> None:
        for source, got in find_liars(fd, delivered).items():
            self._failed(
                stats,
                SourceFailed(
                    source,
                    f"served wrong bytes in range {got.first}-{got.last} (multi-source copy "
                    "compared with the verified file)",
                    bad=True,
                ),
                artifact.name,
            )

    def _give_up(self, artifact: Artifact, candidates: list[Source], stats: Stats) -> None:
        reasons = list(stats.failures)
        for source in candidates:
            origin = source.origin
            if not any(r.startswith(source.location) for r in reasons):
                why = self.book.banned.get(origin) or self.book.unreachable.get(origin)
                if why:
                    reasons.append(f"{source}: skipped, earlier {why}")
        detail = "; ".join(reasons) or "no source"
        if any(o in self.book.banned for o in {s.origin for s in candidates}):
            raise IntegrityError(f"{artifact.name}: no source delivered verified bytes: {detail}")
        raise NoSourceError(f"{artifact.name}: no source could deliver it: {detail}")

    # Names a run may leave behind: part files, and atomic_write/write_temp's temp files.
    _LEFTOVER = re.compile(r"\.[a-z0-9_-]+\.part|\.(?:cmdline|manifest\.json)\..+\.tmp")

    def _commit(self, choice: ManifestChoice, parts: dict[str, Path]) -> None:
        """Make DIR hold exactly the new set: the verified parts, cmdline, manifest.json.

        Every new byte is written and fsync'd first (the parts already are; then cmdline and
        manifest temp files), so a full disk or a write error fails before any name changes
        and leaves the old complete set as it was. Only then: manifest.json is removed (so no
        manifest describes a mix while names change), files of the old set this run did not
        write and leftovers of killed runs are removed, the parts renamed, cmdline renamed,
        and manifest.json renamed last. Unlink and rename need no new data blocks.
        """
        output = self.request.output
        manifest = choice.verified.manifest
        manifest_path = output / "manifest.json"
        temps: list[Path] = []
        try:
            cmdline_tmp = write_temp(output / "cmdline", ((manifest.cmdline or "") + "\n").encode())
            temps.append(cmdline_tmp)
            manifest_tmp = write_temp(manifest_path, dump_document(dict(manifest.document)))
            temps.append(manifest_tmp)
            stale = self._stale(set(manifest.artifacts), set(parts), {t.name for t in temps})
            # A directory under a name about to be replaced or removed would make the rename
            # or unlink fail halfway: refuse it while the old set is still whole.
            for path in [*stale, *(output / n for n in parts), output / "cmdline", manifest_path]:
                with contextlib.suppress(FileNotFoundError):
                    if stat.S_ISDIR(os.lstat(path).st_mode):
                        raise IsADirectoryError(
                            errno.EISDIR, "is a directory, not a file", str(path)
                        )
            with contextlib.suppress(FileNotFoundError):
                manifest_path.unlink()
            fsync_dir(output)  # the old set stops being a set before any of its files change
            for path in stale:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            for name, part in parts.items():
                os.replace(part, output / name)
            os.replace(cmdline_tmp, output / "cmdline")
            os.replace(manifest_tmp, manifest_path)
            fsync_dir(output)
        finally:
            for tmp in temps:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()

    def _stale(self, named: set[str], written: set[str], temps: set[str]) -> list[Path]:
        """Files in DIR that must not survive this commit: artifacts under a known name
        (kernel, initramfs, rootfs, dtb) or named by the new manifest that this run did not
        write, whatever wrote them (an earlier fetch, or someone else), and leftovers of
        killed runs. kexec-boot loads only what the manifest names, but DIR should say the same."""
        output = self.request.output
        names = set(ARTIFACT_FILES.values()) | named
        stale = [output / n for n in sorted(names - written)]
        ours = temps | {f".{name}.part" for name in written}
        with os.scandir(output) as entries:
            for entry in entries:
                if entry.name not in ours and self._LEFTOVER.fullmatch(entry.name):
                    stale.append(output / entry.name)
        return stale


def fetch(request: FetchRequest, progress: Progress | None = None) -> FetchResult:
    if not request.manifests:
        raise UsageError("no manifest given (--manifest URL|PATH)")
    return Fetcher(request, progress).run()
