"""What the provider offers: DIR/<channel>/<arch>/ combinations, their signed manifests, files.

A scan walks the artifacts directories, hashes (through the cache) and signs what changed, and
returns an immutable ``Snapshot``: the HTTP server looks URL paths up in ``Snapshot.routes`` and
serves nothing else, so a URL never becomes a filesystem path.

Self-signed combinations get a manifest generated here, re-signed only when their files change
or half of the validity has passed. A combination with its own ``manifest.json`` (signed
elsewhere: mirror mode) is served as is once its files match the hashes it names.

A file still being written is never hashed or signed: a combination whose files changed less
than ``settle_time`` seconds ago (their mtime is that recent, and their size, mtime and inode have
not stayed the same for that long across scans) is *pending*, and keeps what it offered before.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ManifestError
from ..keys import SigningKey
from ..manifest import (
    ARTIFACT_FILES,
    Manifest,
    build_document,
    dump_document,
    parse_manifest,
    read_manifest_file,
    sign_document,
)
from ..names import ARCH_RE, CHANNEL_RE, host_arch, normalize_arch
from ..root import MAX_ROOT_BYTES, servable_chain
from .signer import DAY, default_version, next_sequence

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
ROOT_DIR = "root"  # DIR/root/<N>.json: the root chain, served as is (docs/trust.md); no channel
VERSION_FILE = "version"
CMDLINE_FILE = "cmdline"
# The files of a combination that must have settled before it is (re-)signed or checked.
WATCHED_FILES = (*ARTIFACT_FILES, CMDLINE_FILE, VERSION_FILE, MANIFEST_NAME)

Hasher = Callable[[str], tuple[str, int]]


@dataclass(frozen=True)
class ServedFile:
    """One artifact as the server sends it; ``identity`` detects a file replaced since."""

    path: str
    size: int
    mtime: float
    identity: tuple[int, int, int, int]
    sha256: str


@dataclass(frozen=True)
class Entry:
    channel: str
    arch: str
    directory: str
    manifest: Manifest
    manifest_bytes: bytes
    mirror: bool
    files: Mapping[str, ServedFile]  # manifest path ("vmlinuz") -> file
    fingerprint: Any = None  # what the manifest was made from (self-signed only)

    @property
    def combination(self) -> str:
        return f"{self.channel}/{self.arch}"

    @property
    def manifest_path(self) -> str:
        return f"/{self.channel}/{self.arch}/{MANIFEST_NAME}"


@dataclass(frozen=True)
class Snapshot:
    entries: Mapping[str, Entry] = field(default_factory=dict)  # "stable/arm64" -> Entry
    routes: Mapping[str, tuple[Entry, ServedFile | None]] = field(default_factory=dict)
    missing: tuple[str, ...] = ()
    rejected: Mapping[str, str] = field(default_factory=dict)  # combination -> reason
    default: str | None = None  # combination served at /manifest.json
    pending: Mapping[str, str] = field(default_factory=dict)  # combination -> files not settled
    roots: Mapping[str, tuple[bytes, float]] = field(default_factory=dict)  # path -> (data, mtime)


@dataclass(frozen=True)
class Found:
    """A DIR/<channel>/<arch>/ directory; ``root`` is what its files must stay inside."""

    channel: str
    arch: str
    directory: Path
    root: Path


def file_identity(stat: os.stat_result) -> tuple[int, int, int, int]:
    return (stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_dev)


def _subdirs(path: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(path) if e.is_dir())
    except OSError:
        return []


def find_directories(
    root: Path | None, channel_dirs: Mapping[str, Path]
) -> tuple[list[Found], set[str], set[str]]:
    """Every channel/arch directory (with or without a kernel), and the names seen."""
    channel_paths: dict[str, tuple[Path, Path]] = {}
    if root is not None:
        for name in _subdirs(root):
            if CHANNEL_RE.match(name) and name != ROOT_DIR:
                channel_paths[name] = (root / name, root)
    for channel, path in channel_dirs.items():
        channel_paths[channel] = (path, path)  # the file's channel table wins
    found: dict[tuple[str, str], Found] = {}
    for channel, (path, base) in sorted(channel_paths.items()):
        for name in _subdirs(path):
            arch = normalize_arch(name)
            if not ARCH_RE.match(arch):
                continue
            # "amd64/" and "x86_64/" name one arch; the canonical spelling wins.
            if (channel, arch) in found and name != arch:
                continue
            found[(channel, arch)] = Found(channel, arch, path / name, base)
    seen_channels = set(channel_paths)
    seen_arches = {f.arch for f in found.values()}
    return sorted(found.values(), key=lambda f: (f.channel, f.arch)), seen_channels, seen_arches


def missing_combinations(
    expected_channels: Iterable[str],
    expected_arches: Iterable[str],
    seen_channels: Iterable[str],
    seen_arches: Iterable[str],
    offered: Iterable[str],
) -> list[str]:
    """Expected = (configured or seen channels) x (configured or seen arches), minus offered."""
    channels = sorted(set(expected_channels) | set(seen_channels))
    arches = sorted(set(expected_arches) | set(seen_arches))
    have = set(offered)
    return [f"{c}/{a}" for c in channels for a in arches if f"{c}/{a}" not in have]


def choose_default(
    offered: Sequence[str], channel: str | None, arch: str | None, host: str
) -> str | None:
    """Configured (channel default stable, arch default the host's), else stable/<host arch>,
    else the configured channel with any arch, else stable/<any arch>, else the first offered."""
    if not offered:
        return None
    ordered = sorted(offered)
    for combination in (f"{channel or 'stable'}/{arch or host}", f"stable/{host}"):
        if combination in offered:
            return combination
    for prefix in dict.fromkeys([channel or "stable", "stable"]):
        for combination in ordered:
            if combination.startswith(f"{prefix}/"):
                return combination
    return ordered[0]


def inside(path: Path, root: Path) -> str | None:
    """The real path of ``path`` if it is a regular file inside ``root`` (symlinks resolved)."""
    try:
        real = os.path.realpath(path, strict=True)
    except OSError:
        return None
    real_root = os.path.realpath(root)
    if os.path.commonpath([real, real_root]) != real_root or not os.path.isfile(real):
        return None
    return real


class Catalog:
    """Scans the artifacts and keeps the signed manifests between scans."""

    def __init__(
        self,
        *,
        root: Path | None,
        channel_dirs: Mapping[str, Path],
        expected_channels: Sequence[str],
        expected_arches: Sequence[str],
        key: SigningKey,
        hasher: Hasher,
        last_sequence: Callable[[str], int | None],
        record_sequence: Callable[[str, int], None],
        validity_days: float,
        default_channel: str | None = None,
        default_arch: str | None = None,
        clock: Callable[[], float] = time.time,
        settle_time: float = 0.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = root
        self.channel_dirs = dict(channel_dirs)
        self.expected_channels = tuple(expected_channels)
        self.expected_arches = tuple(expected_arches)
        self.key = key
        self.hasher = hasher
        self.last_sequence = last_sequence
        self.record_sequence = record_sequence
        self.validity = max(1, int(validity_days * DAY))
        self.default_channel = default_channel
        self.default_arch = default_arch
        self.clock = clock
        self.settle_time = settle_time
        self.monotonic = monotonic
        # path -> (file identity, monotonic time it was first seen with it)
        self._seen: dict[str, tuple[tuple[int, int, int, int], float]] = {}
        self.snapshot = Snapshot()
        self.signs = 0  # manifests signed (for /metrics)

    def scan(self) -> Snapshot:
        found, seen_channels, seen_arches = find_directories(self.root, self.channel_dirs)
        entries: dict[str, Entry] = {}
        rejected: dict[str, str] = {}
        pending: dict[str, str] = {}
        watched: set[str] = set()
        for item in found:
            combination = f"{item.channel}/{item.arch}"
            previous = self.snapshot.entries.get(combination)
            changing = self._unsettled(item, watched)
            if changing:
                pending[combination] = ", ".join(changing)
                if previous is not None:  # keep offering what was signed before
                    entries[combination] = previous
                continue
            try:
                if (item.directory / MANIFEST_NAME).exists():
                    entry = self._mirror_entry(item, previous)
                elif (item.directory / "vmlinuz").exists():
                    entry = self._signed_entry(item, previous)
                else:
                    continue
            except (OSError, ManifestError, ValueError) as exc:
                rejected[combination] = str(exc)
                continue
            entries[combination] = entry
        routes: dict[str, tuple[Entry, ServedFile | None]] = {}
        for entry in entries.values():
            base = f"/{entry.channel}/{entry.arch}/"
            routes[entry.manifest_path] = (entry, None)
            for name, served in entry.files.items():
                routes.setdefault(base + name, (entry, served))
        default = choose_default(
            list(entries), self.default_channel, self.default_arch, host_arch()
        )
        if default is not None:
            routes["/" + MANIFEST_NAME] = (entries[default], None)
        missing = missing_combinations(
            self.expected_channels, self.expected_arches, seen_channels, seen_arches, entries
        )
        self._seen = {path: seen for path, seen in self._seen.items() if path in watched}
        self.snapshot = Snapshot(
            entries=entries,
            routes=routes,
            missing=tuple(m for m in missing if m not in rejected and m not in pending),
            rejected=rejected,
            default=default,
            pending=pending,
            roots=self._roots(rejected),
        )
        return self.snapshot

    def _roots(self, rejected: dict[str, str]) -> dict[str, tuple[bytes, float]]:
        """The root chain of DIR/root/ as served: /root/<N>.json for the verified run,
        /root/latest.json for its newest; files refused go to ``rejected`` as root/<N>.json."""
        directory = self.root / ROOT_DIR if self.root is not None else None
        if directory is None or not directory.is_dir():
            return {}
        files: dict[int, tuple[bytes, float]] = {}
        for name in sorted(os.listdir(directory)):
            stem = name.removesuffix(".json")
            if not (name.endswith(".json") and stem.isascii() and stem.isdigit()):
                continue
            real = inside(directory / name, directory)
            if real is None or stem[0] == "0" or len(stem) > 18:
                rejected[f"root/{name}"] = "not a regular file <N>.json inside root/"
                continue
            with open(real, "rb") as handle:
                data = handle.read(MAX_ROOT_BYTES + 1)
                files[int(stem)] = (data, os.fstat(handle.fileno()).st_mtime)
        served, refused = servable_chain({v: data for v, (data, _) in files.items()})
        rejected.update((f"root/{v}.json", reason) for v, reason in refused.items())
        routes = {f"/{ROOT_DIR}/{v}.json": files[v] for v in served}
        if served:
            routes[f"/{ROOT_DIR}/latest.json"] = files[max(served)]
        return routes

    def _unsettled(self, item: Found, watched: set[str]) -> list[str]:
        """The names of ``item``'s files that may still be being written: changed less than
        ``settle_time`` seconds ago by their mtime, and not seen unchanged (size, mtime, inode)
        for that long either (an mtime in the future, a clock that jumped)."""
        if self.settle_time <= 0:
            return []
        wall, now = self.clock(), self.monotonic()
        changing = []
        for name in WATCHED_FILES:
            path = str(item.directory / name)
            try:
                info = os.stat(path)  # a symlink's target is what is being written
            except OSError:
                continue
            if not stat.S_ISREG(info.st_mode):
                continue
            identity = file_identity(info)
            seen = self._seen.get(path)
            if seen is None or seen[0] != identity:
                seen = self._seen[path] = (identity, now)
            watched.add(path)
            if wall - info.st_mtime < self.settle_time and now - seen[1] < self.settle_time:
                changing.append(name)
        return changing

    def _served(self, item: Found, relative: str) -> ServedFile:
        real = inside(item.directory / relative, item.root)
        if real is None:
            raise ValueError(f"{relative} is missing, not a file, or outside {item.root}")
        stat = os.stat(real)
        digest, size = self.hasher(real)
        return ServedFile(real, size, stat.st_mtime, file_identity(stat), digest)

    def _mirror_entry(self, item: Found, previous: Entry | None) -> Entry:
        path = item.directory / MANIFEST_NAME
        data = read_manifest_file(path)
        manifest = parse_manifest(data)
        if (manifest.channel, manifest.arch) != (item.channel, item.arch):
            raise ValueError(
                f"{path} is for {manifest.combination}, not {item.channel}/{item.arch}"
            )
        if manifest.expires_at <= self.clock():
            raise ValueError(f"{path} expired at {manifest.document['expires_at']}")
        files = {}
        for name, artifact in manifest.artifacts.items():
            served = self._served(item, artifact.path)
            if served.size != artifact.size or served.sha256 != artifact.sha256:
                raise ValueError(f"{artifact.path} does not match the {name} hash in {path}")
            files[artifact.path] = served
        if (
            previous is not None
            and previous.mirror
            and previous.manifest_bytes == data
            and previous.files == files
        ):
            return previous
        return Entry(item.channel, item.arch, str(item.directory), manifest, data, True, files)

    def _signed_entry(self, item: Found, previous: Entry | None) -> Entry:
        files: dict[str, ServedFile] = {}
        artifacts: dict[str, dict[str, Any]] = {}
        for filename, name in ARTIFACT_FILES.items():
            if not os.path.lexists(item.directory / filename):
                continue
            served = self._served(item, filename)
            files[filename] = served
            artifacts[name] = {"hash": f"sha256:{served.sha256}", "size": served.size}
            artifacts[name]["path"] = filename
        cmdline = self._read_text(item, CMDLINE_FILE)
        version = self._read_text(item, VERSION_FILE)
        fingerprint = (
            sorted((k, tuple(sorted(v.items()))) for k, v in artifacts.items()),
            cmdline,
            version,
        )
        now = int(self.clock())
        if (
            previous is not None
            and not previous.mirror
            and previous.fingerprint == fingerprint
            and now < previous.manifest.created_at + self.validity // 2
        ):
            return previous
        combination = f"{item.channel}/{item.arch}"
        document = build_document(
            version=version or default_version(now),
            sequence=next_sequence(self.last_sequence(combination), now),
            channel=item.channel,
            arch=item.arch,
            created_at=now,
            expires_at=now + self.validity,
            artifacts=artifacts,
            cmdline=cmdline,
        )
        data = dump_document(sign_document(document, self.key))
        self.signs += 1
        manifest = parse_manifest(data)
        self.record_sequence(combination, manifest.sequence)
        return Entry(
            item.channel, item.arch, str(item.directory), manifest, data, False, files, fingerprint
        )

    def _read_text(self, item: Found, filename: str) -> str | None:
        if not os.path.lexists(item.directory / filename):
            return None
        real = inside(item.directory / filename, item.root)
        if real is None:
            raise ValueError(f"{filename} is not a file inside {item.root}")
        with open(real, encoding="utf-8") as handle:
            text = " ".join(handle.read(8192).split())
        return text or None


def describe_changes(before: Snapshot, after: Snapshot, first: bool) -> list[tuple[int, str]]:
    """(log level, message) lines for what a scan changed; the seed's phrasing on the first."""
    lines: list[tuple[int, str]] = []
    if first:
        lines.append((logging.INFO, f"Found {len(after.entries)} channel/arch combinations"))
    for combination, entry in after.entries.items():
        old = before.entries.get(combination)
        if old is None:
            lines.append((logging.INFO, f"Advertising {combination}"))
        elif old is not entry:
            lines.append(
                (
                    logging.INFO,
                    f"Updated {combination}: version {entry.manifest.version} "
                    f"sequence {entry.manifest.sequence}",
                )
            )
    for combination in before.entries:
        if combination not in after.entries:
            lines.append((logging.INFO, f"Withdrawing {combination}"))
    for combination in after.missing:
        if combination not in before.missing:
            lines.append((logging.WARNING, f"Missing artifacts for {combination}"))
    for combination, reason in after.rejected.items():
        if before.rejected.get(combination) != reason:
            lines.append((logging.WARNING, f"Not offering {combination}: {reason}"))
    for combination, names in after.pending.items():
        if combination not in before.pending:
            lines.append(
                (logging.INFO, f"Waiting for {combination} to settle: {names} still changing")
            )
    return lines
