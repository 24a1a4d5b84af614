"""Where an artifact can come from, in which order, and which sources this run no longer trusts.

Pure: builds URLs and keeps the books; nothing here opens a socket or a file.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from ..manifest import Artifact


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


class Source(NamedTuple):
    """One place to get one artifact: an http(s) URL or a local file path."""

    location: str
    role: str = "provider"  # provider | mirror | extra-provider

    @property
    def is_http(self) -> bool:
        return is_url(self.location)

    @property
    def origin(self) -> str:
        """What gets banned or written off as a whole: scheme://host:port, or a directory."""
        if self.is_http:
            parts = urllib.parse.urlsplit(self.location)
            return f"{parts.scheme}://{parts.netloc}"
        return os.path.dirname(os.path.abspath(self.location))

    def __str__(self) -> str:
        return self.location


def artifact_location(base: str, path: str) -> str:
    """``path`` resolved against a manifest URL/file or a mirror base (URL or directory)."""
    if is_url(base):
        return urllib.parse.urljoin(base, path)
    return os.path.join(os.path.dirname(base) if not base.endswith(os.sep) else base, path)


def mirror_base(base: str) -> str:
    """A ``--mirror`` base is a directory: make sure joining keeps its last segment."""
    return base if base.endswith("/") else base + "/"


def sources_for(
    artifact: Artifact,
    manifest_location: str,
    mirrors: Sequence[str] = (),
    other_manifests: Sequence[str] = (),
) -> list[Source]:
    """Sources, in this order: the manifest's own provider, the manifest's ``urls``,
    ``--mirror`` bases, then the other providers that serve the same signed manifest."""
    ordered: list[Source] = [
        Source(artifact_location(manifest_location, artifact.path), "provider")
    ]
    ordered += [Source(url, "mirror") for url in artifact.urls]
    ordered += [
        Source(artifact_location(mirror_base(base), artifact.path), "mirror") for base in mirrors
    ]
    ordered += [
        Source(artifact_location(other, artifact.path), "extra-provider")
        for other in other_manifests
    ]
    return dedupe(ordered)


def dedupe(sources: Iterable[Source]) -> list[Source]:
    seen: set[str] = set()
    result = []
    for source in sources:
        if source.location not in seen:
            seen.add(source.location)
            result.append(source)
    return result


class SourceBook:
    """Run-wide memory: origins that served bad bytes (never again) or were unreachable."""

    __slots__ = ("banned", "unreachable")

    def __init__(self) -> None:
        self.banned: dict[str, str] = {}
        self.unreachable: dict[str, str] = {}

    def ban(self, source: Source, reason: str) -> None:
        self.banned.setdefault(source.origin, reason)

    def mark_unreachable(self, source: Source, reason: str) -> None:
        self.unreachable.setdefault(source.origin, reason)

    def usable(self, sources: Iterable[Source]) -> list[Source]:
        return [
            s for s in sources if s.origin not in self.banned and s.origin not in self.unreachable
        ]
