"""Streaming, verified transfer of one artifact into its part file.

Every byte is counted against the signed size as it arrives (a source that sends more is dropped at
once), hashed in the same pass, and written with ``os.write``/``os.pwrite``. A cut connection is
resumed with ``Range``; a source that drips too slowly is dropped; a source whose bytes hash wrong
is reported as bad so the caller never uses it again.
"""

from __future__ import annotations

import collections
import email.utils
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from ..byterange import ByteRange
from ..errors import LocalError
from ..fsutil import open_regular
from ..httpdeadline import HeaderDeadlineError, pool_classes
from ..manifest import Artifact
from .pipeline import HashWritePipeline, PrefixHasher, RangeWriter, Sink, WriteError
from .plan import (
    RangeReplyError,
    RateGuard,
    backoff_delay,
    check_partial_reply,
    declared_length_ok,
    remaining_range,
    split_ranges,
)
from .progress import Progress
from .sources import Source
from .u3compat import raw_body

log = logging.getLogger(__name__)

MiB = 1024 * 1024


class Settings(NamedTuple):
    connect_timeout: float = 5.0
    read_timeout: float = 20.0
    retries: int = 3  # resume attempts per source and artifact after a cut connection
    backoff: float = 0.25
    min_rate: float = 16 * 1024  # bytes/s; slower than this for `grace` seconds -> dropped
    grace: float = 20.0
    connections: int = 4  # parallel range requests in multi-source mode
    split_min: int = 16 * MiB  # below this an artifact is fetched in one stream
    chunk: int = MiB


class Cut(Exception):
    """The transfer broke off; what arrived is good and the rest can be asked for with Range."""


class RetryLater(Cut):
    """503 with ``Retry-After``: the source is busy (a provider re-hashing a replaced file);
    ask again after ``delay`` seconds."""

    def __init__(self, reason: str, delay: float) -> None:
        super().__init__(reason)
        self.delay = delay


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or an HTTP date), or None."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(min(int(text[:12]), 10**9))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def wait_before_retry(cut: Cut, attempt: int, backoff: float) -> float:
    """The backoff for resume attempt ``attempt``, or longer if the server asked for it."""
    return max(backoff_delay(attempt, backoff), getattr(cut, "delay", 0.0))


class Restart(Exception):
    """The server ignored our Range and sent the whole file (200): start over from byte 0."""

    def __init__(self, response: Any) -> None:
        super().__init__("server ignored Range")
        self.response = response  # the 200 response, its body not read yet


class SourceFailed(Exception):
    """This source cannot deliver this artifact. ``bad``: it sent wrong or too many bytes."""

    def __init__(
        self, source: Source, reason: str, *, bad: bool = False, unreachable: bool = False
    ) -> None:
        super().__init__(reason)
        self.source = source
        self.reason = reason
        self.bad = bad
        self.unreachable = unreachable


class Stats:
    """Per-artifact facts for the --json summary, updated by the download's threads."""

    __slots__ = (
        "bytes_from",
        "failures",
        "lock",
        "received",
        "restarted",
        "resumed",
        "retries",
        "split",
    )

    def __init__(self) -> None:
        self.retries = 0
        self.resumed = False
        self.restarted = False
        self.split = False
        self.bytes_from: dict[str, int] = {}  # of the copy that verified
        self.received = 0  # every byte read, wasted ones included
        self.failures: list[str] = []
        self.lock = threading.Lock()

    def add_bytes(self, source: Source, count: int) -> None:
        with self.lock:
            self.bytes_from[source.location] = self.bytes_from.get(source.location, 0) + count
            self.received += count

    def start_over(self) -> None:
        """The bytes so far were thrown away: they no longer count as delivered by anyone."""
        with self.lock:
            self.bytes_from.clear()

    def fail(self, failure: SourceFailed) -> None:
        with self.lock:
            self.failures.append(f"{failure.source}: {failure.reason}")


class Http:
    """One urllib3 PoolManager for the whole run: keep-alive across artifacts and ranges."""

    def __init__(self, settings: Settings) -> None:
        import urllib3  # imported here: phase-fetch --help and local-only runs stay light

        self.urllib3 = urllib3
        self.settings = settings
        self.pool = urllib3.PoolManager(
            num_pools=16,
            maxsize=max(2, settings.connections),
            block=False,
            # No automatic retries: resume and source changes are decided here, with the bytes
            # already received in hand. Redirects are followed (a mirror may redirect).
            retries=urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=5),
            timeout=urllib3.Timeout(connect=settings.connect_timeout, read=settings.read_timeout),
            headers={"User-Agent": "phase-fetch/1", "Accept-Encoding": "identity"},
        )
        # Per-recv timeouts let a server drip headers forever: one deadline per request.
        self.pool.pool_classes_by_scheme = pool_classes(urllib3, settings.read_timeout)

    def get(self, url: str, headers: dict[str, str] | None = None) -> Any:
        """A streaming response; connection errors raise ``OSError``-like urllib3 errors."""
        return self.pool.request(
            "GET", url, headers=headers, preload_content=False, decode_content=False
        )

    def clear(self) -> None:
        self.pool.clear()


_CONNECTION_REPR = re.compile(r"(<[^>]*>|\w*Connection\([^)]*\)): ")
_URLLIB3_WORDS = {
    "NewConnectionError": "cannot connect",
    "ConnectTimeoutError": "connection timed out",
    "ReadTimeoutError": "read timed out",
    "ProtocolError": "connection broken",
    "SSLError": "TLS error",
    "ProxyError": "proxy error",
    "NameResolutionError": "cannot resolve the host name",
}


def describe_error(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    inner = reason if isinstance(reason, BaseException) else exc
    if isinstance(inner.__cause__, HeaderDeadlineError):  # clearer than urllib3's "read timeout"
        return str(inner.__cause__)
    text = str(inner)
    # urllib3 prefixes the connection object's repr; the errno text is what a user needs.
    prefix = _CONNECTION_REPR.match(text)
    if prefix:
        text = text[prefix.end() :]
    # urllib3's class names mean nothing to a user: say what failed in words.
    name = type(inner).__name__
    ours = not type(inner).__module__.startswith("urllib3")
    what = _URLLIB3_WORDS.get(name, name if ours else "")
    return f"{what}: {text}"[:200] if what else text[:200]


class Transfer:
    """Reads one HTTP body (or local file) into a sink, enforcing size and rate limits."""

    def __init__(
        self,
        http: Http | None,
        settings: Settings,
        progress: Progress,
        stats: Stats,
        abort: threading.Event | None = None,
    ) -> None:
        self.http = http
        self.settings = settings
        self.progress = progress
        self.stats = stats
        self.abort = abort

    def _open(self, source: Source, wanted: ByteRange | None, size: int) -> tuple[Any, int]:
        """(response, status) after checking status and headers; raises Cut/SourceFailed."""
        assert self.http is not None
        u3 = self.http.urllib3
        headers = {"Range": wanted.header()} if wanted is not None else None
        try:
            response = self.http.get(source.location, headers)
        except (u3.exceptions.MaxRetryError, u3.exceptions.NewConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, u3.exceptions.ReadTimeoutError | u3.exceptions.ProtocolError):
                raise Cut(describe_error(exc)) from exc
            raise SourceFailed(source, describe_error(exc), unreachable=True) from exc
        except (u3.exceptions.HTTPError, OSError) as exc:
            raise Cut(describe_error(exc)) from exc
        status = response.status
        if wanted is not None and status == 206:
            try:
                check_partial_reply(response.headers.get("Content-Range"), wanted, size)
            except RangeReplyError as exc:
                response.close()
                raise SourceFailed(source, f"bad range reply: {exc}") from exc
            expected = wanted.length
        elif status == 200:
            expected = size
        else:
            response.close()
            delay = retry_after(response.headers.get("Retry-After")) if status == 503 else None
            if delay is not None and delay <= self.settings.read_timeout:
                raise RetryLater(f"HTTP 503, asked to retry after {delay:g}s", delay)
            if delay is not None:
                raise SourceFailed(
                    source,
                    f"HTTP 503, asked to retry after {delay:g}s, beyond the "
                    f"{self.settings.read_timeout:g}s timeout",
                )
            raise SourceFailed(source, f"HTTP {status} {response.reason or ''}".strip())
        if not declared_length_ok(response.headers.get("Content-Length"), expected):
            length = response.headers.get("Content-Length")
            response.close()
            raise SourceFailed(
                source, f"declares {length} bytes, more than the {expected} signed", bad=True
            )
        return response, status

    def receive(
        self,
        source: Source,
        readinto1: Callable[[memoryview], int],
        expected: int,
        sink: Sink,
        ended: Callable[[], bool] = lambda: False,
    ) -> None:
        """Move exactly ``expected`` bytes from ``readinto1`` to ``sink`` or raise.

        Asks for one byte more than still missing, so a body longer than signed (an endless-data
        attack) is noticed in the same read that would overflow, and that read is not used.
        ``ended()`` says the body is known to be complete (Content-Length reached), which saves
        the final read.
        """
        settings = self.settings
        guard = RateGuard(settings.min_rate, settings.grace, time.monotonic())
        got = 0
        while True:
            if got == expected and ended():
                return
            if self.abort is not None and self.abort.is_set():
                raise SourceFailed(source, "aborted")
            view = sink.buffer()
            count = 0
            try:
                count = readinto1(view[: min(len(view), expected - got + 1)])
                if count == 0:
                    if got < expected:
                        raise Cut(f"connection closed after {got} of {expected} bytes")
                    return
                if got + count > expected:
                    count = 0
                    raise SourceFailed(
                        source, f"sent more than the {expected} bytes signed (aborted)", bad=True
                    )
            finally:
                sink.submit(view, count)
            got += count
            self.progress.add(count)
            self.stats.add_bytes(source, count)
            if guard.too_slow(count, time.monotonic()):
                raise SourceFailed(
                    source,
                    f"too slow: {guard.rate(time.monotonic()):.0f} B/s for "
                    f"{settings.grace:g}s (minimum {settings.min_rate:.0f} B/s)",
                )

    def body(self, source: Source, wanted: ByteRange | None, size: int, sink: Sink) -> int:
        """Fetch ``wanted`` (or the whole file) into ``sink``; returns the HTTP status used."""
        if not source.is_http:
            return self._local(source, wanted, size, sink)
        response, status = self._open(source, wanted, size)
        if status == 200 and wanted is not None:
            raise Restart(response)
        expected = size if status == 200 else (wanted.length if wanted else size)
        self.stream(source, response, expected, sink)
        return status

    def stream(self, source: Source, response: Any, expected: int, sink: Sink) -> None:
        assert self.http is not None
        u3 = self.http.urllib3
        readinto1, ended, reusable = body_reader(response)
        complete = False
        try:
            self.receive(source, readinto1, expected, sink, ended)
            complete = True
        except (u3.exceptions.HTTPError, OSError) as exc:
            raise Cut(describe_error(exc)) from exc
        finally:
            if complete and reusable and response.length_remaining == 0:
                response.release_conn()
            else:
                response.close()

    def _local(self, source: Source, wanted: ByteRange | None, size: int, sink: Sink) -> int:
        try:  # a FIFO in a local mirror directory must fail, not hang the fetch
            handle = os.fdopen(open_regular(source.location, follow_symlinks=True), "rb")
        except OSError as exc:
            raise SourceFailed(source, exc.strerror or str(exc), unreachable=True) from exc
        with handle:
            expected = wanted.length if wanted else size
            try:
                handle.seek(wanted.first if wanted else 0)
                self.receive(source, handle.readinto1, expected, sink)
            except OSError as exc:  # reading the source file; WriteError is not an OSError
                raise SourceFailed(source, exc.strerror or str(exc)) from exc
        return 206 if wanted else 200


def body_reader(response: Any) -> tuple[Callable[[memoryview], int], Callable[[], bool], bool]:
    """(readinto1, ended, connection reusable) for a urllib3 response.

    Fast path: a Content-Length body is read with ``readinto1`` straight from the socket's
    buffered reader into our ring buffers - no bytes object per read, no extra copy (urllib3's
    read1 returns new bytes; its readinto blocks until the buffer is full, which would blind the
    slow-source guard). The reader is capped at Content-Length by hand, so http.client's own
    accounting is bypassed and the connection is not reused. Otherwise (chunked, no length):
    urllib3's read1, copied into the buffer.
    """
    body = raw_body(response)  # the private urllib3 access, in one adapter (u3compat)
    if body is not None:
        reader, remaining = body.reader, body.length

        def fast(view: memoryview) -> int:
            nonlocal remaining
            if remaining <= 0:
                return 0
            count = reader.readinto1(view[:remaining])
            remaining -= count
            return count

        return fast, lambda: remaining == 0, False

    def slow(view: memoryview) -> int:
        data = response.read1(len(view), decode_content=False)
        view[: len(data)] = data
        return len(data)

    return slow, lambda: response.length_remaining == 0, True


def fetch_whole(
    transfer: Transfer, source: Source, artifact: Artifact, fd: int, stats: Stats
) -> None:
    """One source, one stream, hashed on the fly; Range-resume after cuts. Raises SourceFailed."""
    pipeline = HashWritePipeline(fd, size=transfer.settings.chunk)
    try:
        pipeline.reset()
        _fetch_whole(transfer, source, artifact, pipeline, stats)
        digest = pipeline.hexdigest()
    except WriteError as exc:  # writing the part file failed (ENOSPC...): not the source's fault
        raise LocalError(f"{artifact.name}: cannot write the part file: {exc}") from exc
    finally:
        pipeline.close()
    if digest != artifact.sha256:
        raise SourceFailed(source, f"sha256 mismatch (got {digest[:16]}...)", bad=True)


def _fetch_whole(
    transfer: Transfer,
    source: Source,
    artifact: Artifact,
    pipeline: HashWritePipeline,
    stats: Stats,
) -> None:
    size = artifact.size
    attempt = 0
    while True:
        have = pipeline.have
        wanted = ByteRange(have, size - 1) if 0 < have < size else None
        try:
            try:
                transfer.body(source, wanted, size, pipeline)
            except Restart as restart:
                # The server ignored Range: its 200 body is the whole file; take it from byte 0.
                log.info("%s: %s ignored Range; starting over", artifact.name, source)
                stats.restarted = True
                stats.start_over()
                transfer.progress.add(-have)
                pipeline.reset()
                transfer.stream(source, restart.response, size, pipeline)
            return
        except Cut as cut:
            attempt += 1
            if attempt > transfer.settings.retries:
                raise SourceFailed(
                    source, f"{cut} (gave up after {attempt - 1} resume attempts)"
                ) from cut
            stats.retries += 1
            if pipeline.have > 0:
                stats.resumed = True
            delay = wait_before_retry(cut, attempt, transfer.settings.backoff)
            log.info(
                "%s: %s: %s; resuming at byte %d in %.2fs",
                artifact.name,
                source,
                cut,
                pipeline.have,
                delay,
            )
            time.sleep(delay)


def fetch_piece(
    transfer: Transfer,
    source: Source,
    piece: ByteRange,
    writer: RangeWriter,
    size: int,
    stats: Stats,
) -> None:
    """One range from one source, resumed after cuts; raises SourceFailed."""
    attempt = 0
    while (wanted := remaining_range(piece, writer.done)) is not None:
        try:
            if transfer.body(source, wanted, size, writer) != 206:
                raise SourceFailed(source, "does not support Range requests")
        except Restart as restart:
            restart.response.close()
            raise SourceFailed(source, "ignores Range requests (answered 200)") from None
        except Cut as cut:
            attempt += 1
            if attempt > transfer.settings.retries:
                raise SourceFailed(source, f"{cut} (gave up after {attempt - 1} resumes)") from cut
            with stats.lock:
                stats.retries += 1
                stats.resumed = True
            time.sleep(wait_before_retry(cut, attempt, transfer.settings.backoff))


def delivered_range(piece: ByteRange, done: int) -> ByteRange | None:
    return ByteRange(piece.first, piece.first + done - 1) if done else None


class Delivered(NamedTuple):
    """One source's bytes in a failed multi-source copy, kept as their digest."""

    source: Source
    got: ByteRange
    sha256: bytes


def _range_sha256(fd: int, got: ByteRange) -> bytes:
    import hashlib

    digest = hashlib.sha256()
    offset = got.first
    while offset <= got.last:
        chunk = os.pread(fd, min(MiB, got.last - offset + 1), offset)
        if not chunk:
            break  # the file ends inside the range: what is there is hashed
        digest.update(chunk)
        offset += len(chunk)
    return digest.digest()


def range_digests(fd: int, delivered: list[tuple[Source, ByteRange]]) -> list[Delivered]:
    """What each source wrote into the failed copy ``fd``, as one SHA-256 per range: the copy
    itself need not stay (in RAM, on a tmpfs) while the artifact is fetched again."""
    return [Delivered(source, got, _range_sha256(fd, got)) for source, got in delivered]


def find_liars(verified_fd: int, delivered: list[Delivered]) -> dict[Source, ByteRange]:
    """Sources whose ranges in the failed multi-source copy differ from the verified file."""
    liars: dict[Source, ByteRange] = {}
    for source, got, sha256 in delivered:
        if source not in liars and _range_sha256(verified_fd, got) != sha256:
            liars[source] = got
    return liars


def fetch_split(
    transfer: Transfer,
    sources: list[Source],
    artifact: Artifact,
    fd: int,
    stats: Stats,
    on_failure: Callable[[SourceFailed], None],
    delivered: list[tuple[Source, ByteRange]] | None = None,
) -> str:
    """Ranges of one artifact fetched in parallel from several sources into one part file.

    Segments go to whichever worker asks next, so a faster provider serves more of the file;
    a failing source's unfinished remainder goes back to the queue. The whole file is hashed
    in order while ranges arrive (``PrefixHasher``). Returns the sha256 hex digest of the file
    when every byte arrived, ``""`` when the sources ran out first. ``delivered`` collects which
    source wrote which bytes, to find a liar if the digest does not match.
    """
    size = artifact.size
    settings = transfer.settings
    workers = max(len(sources), min(settings.connections, 4 * len(sources)))
    pieces = split_ranges(size, workers * 4, max(settings.chunk, settings.split_min // 8))
    queue: collections.deque[ByteRange] = collections.deque(pieces)
    lock = threading.Lock()
    alive = list(sources)
    errors: list[WriteError] = []
    abort = threading.Event()
    transfer.abort = abort
    os.ftruncate(fd, size)
    prefix = PrefixHasher(fd, size)

    def record(source: Source, piece: ByteRange, done: int) -> None:
        got = delivered_range(piece, done)
        if got is not None and delivered is not None:
            with lock:
                delivered.append((source, got))

    def work(source: Source) -> None:
        while True:
            with lock:
                if source not in alive or not queue or errors:
                    return
                piece = queue.popleft()
            writer = RangeWriter(fd, piece.first, settings.chunk, prefix.written)
            try:
                fetch_piece(transfer, source, piece, writer, size, stats)
            except SourceFailed as failure:
                record(source, piece, writer.done)
                rest = remaining_range(piece, writer.done)
                with lock:
                    if rest is not None:
                        queue.appendleft(rest)
                    if source in alive:
                        alive.remove(source)
                on_failure(failure)
                return
            except WriteError as exc:  # our pwrite failed: stop everything
                with lock:
                    errors.append(exc)
                return
            record(source, piece, writer.done)

    try:
        _run_rounds(sources, alive, workers, queue, errors, work, abort, settings)
    except BaseException:
        prefix.abandon()
        raise
    digest = prefix.finish()
    if errors:
        raise LocalError(f"{artifact.name}: cannot write the part file: {errors[0]}")
    return digest if not queue else ""


def _run_rounds(
    sources: list[Source],
    alive: list[Source],
    workers: int,
    queue: collections.deque[ByteRange],
    errors: list[WriteError],
    work: Callable[[Source], None],
    abort: threading.Event,
    settings: Settings,
) -> None:
    # Rounds: a segment handed back after the other workers finished is picked up in the next
    # round by the sources still alive. Bounded: every round with work left loses a source.
    for _ in range(len(sources) + 1):
        if not queue or not alive or errors:
            break
        assignment = [alive[i % len(alive)] for i in range(max(len(alive), workers))]
        threads = [
            threading.Thread(target=work, args=(s,), name=f"fetch-{i}", daemon=True)
            for i, s in enumerate(assignment)
        ]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
        except BaseException:
            # Ctrl-C / SIGTERM in the main thread: make the workers stop at their next read.
            abort.set()
            for thread in threads:
                thread.join(timeout=settings.read_timeout)
            raise
