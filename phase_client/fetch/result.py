"""What one phase-fetch run did: typed results, turned into JSON only by ``to_json``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from ..trust import VerifiedManifest


class ArtifactResult(NamedTuple):
    """One artifact, verified and in place."""

    name: str
    file: Path
    size: int
    sha256: str
    source: str  # the source that delivered most of the verified copy, or "cache"
    # bytes of the verified copy by source
    sources: Mapping[str, int] = MappingProxyType({})
    received: int = 0  # every byte read, wasted ones included
    seconds: float = 0.0
    retries: int = 0
    resumed: bool = False
    restarted: bool = False
    split: bool = False
    cached: bool = False
    failures: tuple[str, ...] = ()

    @property
    def mb_per_s(self) -> float:
        return self.size / max(self.seconds, 1e-9) / 1e6

    def to_json(self) -> dict[str, Any]:
        return {
            "file": str(self.file),
            "source": self.source,
            "sources": dict(self.sources),
            "bytes": self.size,
            "received": self.received,
            "sha256": self.sha256,
            "seconds": round(self.seconds, 3),
            "mb_per_s": round(self.mb_per_s, 1),
            "retries": self.retries,
            "resumed": self.resumed,
            "restarted": self.restarted,
            "split": self.split,
            "cached": self.cached,
            "failures": list(self.failures),
        }


class FetchResult(NamedTuple):
    """The verified manifest, where it came from, and every artifact written to ``output``."""

    verified: VerifiedManifest
    source: str  # where the chosen manifest was read
    extra_sources: tuple[str, ...]  # other manifest locations serving the same signed content
    output: Path
    artifacts: dict[str, ArtifactResult]

    def to_json(self) -> dict[str, Any]:
        manifest = self.verified.manifest
        return {
            "manifest": {
                "source": self.source,
                "extra_sources": list(self.extra_sources),
                "channel": manifest.channel,
                "arch": manifest.arch,
                "version": manifest.version,
                "sequence": manifest.sequence,
                "signed_by": list(self.verified.signed_by),
                "digest": self.verified.digest,
            },
            "output": str(self.output),
            "artifacts": {name: a.to_json() for name, a in self.artifacts.items()},
        }
