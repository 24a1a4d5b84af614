"""``/metrics``: the Prometheus text exposition format (version 0.0.4), written by hand.

Pure: ``Family`` holds one metric's samples, ``render`` writes families as text. No client
library: the format is a few lines of text per metric (``# HELP``, ``# TYPE``, then
``name{label="value"} number``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*\Z")
KINDS = ("counter", "gauge", "summary", "untyped")

Labels = Mapping[str, str]


@dataclass
class Family:
    """One metric: its name, type, help text and samples ``(suffix, labels, value)``; the
    suffix is ``""``, or ``_sum``/``_count`` of a summary."""

    name: str
    kind: str
    help: str
    samples: list[tuple[str, Labels, float]] = field(default_factory=list)

    def add(self, value: float, labels: Labels | None = None, suffix: str = "") -> Family:
        self.samples.append((suffix, dict(labels or {}), value))
        return self


def gauge(name: str, help_text: str, value: float) -> Family:
    return Family(name, "gauge", help_text).add(value)


def counter(name: str, help_text: str, value: float) -> Family:
    return Family(name, "counter", help_text).add(value)


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def render(families: Iterable[Family]) -> str:
    """The exposition text; each family once (a name seen twice is a programming error)."""
    lines: list[str] = []
    seen: set[str] = set()
    for family in families:
        if not NAME_RE.match(family.name) or family.kind not in KINDS or family.name in seen:
            raise ValueError(f"bad metric family {family.name!r} ({family.kind})")
        seen.add(family.name)
        lines.append(f"# HELP {family.name} {escape_help(family.help)}")
        lines.append(f"# TYPE {family.name} {family.kind}")
        for suffix, labels, value in family.samples:
            if any(not LABEL_RE.match(key) for key in labels):
                raise ValueError(f"bad label name in {family.name}: {sorted(labels)}")
            text = ",".join(f'{key}="{escape_label(labels[key])}"' for key in sorted(labels))
            lines.append(
                f"{family.name}{suffix}{{{text}}} {number(value)}"
                if text
                else f"{family.name}{suffix} {number(value)}"
            )
    return "\n".join(lines) + "\n"
