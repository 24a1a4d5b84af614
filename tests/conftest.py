"""Shared fixtures: deterministic keys and manifest documents."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from phase_client.cli._common import remove_log_handlers
from phase_client.keys import SigningKey
from phase_client.manifest import build_document, sign_document

REPO = Path(__file__).resolve().parent.parent

# Hypothesis profiles, chosen with HYPOTHESIS_PROFILE. "ci" (the default) is reproducible: the
# same examples on every run, no example database. "fuzz" (make fuzz, docs/fuzz.md) is random and
# gives each tests/test_fuzz_*.py target FUZZ_EXAMPLES examples instead of its small CI budget.
settings.register_profile("ci", database=None, derandomize=True)
settings.register_profile(
    "fuzz",
    database=None,
    derandomize=False,
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "20000")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ_DEADLINE = timedelta(seconds=2)
FUZZING = os.environ.get("HYPOTHESIS_PROFILE", "ci") == "fuzz"
settings.load_profile("fuzz" if FUZZING else "ci")


@pytest.fixture(autouse=True)
def _our_log_handlers_end_with_the_test() -> Iterator[None]:
    """A command run in-process (``main([...])``) puts its stderr handler on the root logger,
    writing to that test's captured stderr. Left there, a later test's server thread logs into
    the closed capture ("Logging error ... I/O operation on closed file"). Remove it."""
    yield
    remove_log_handlers()


def fuzz_settings(ci_examples: int) -> settings:
    """A fuzz target's settings: ``ci_examples`` in the default run, the fuzz profile's count
    under HYPOTHESIS_PROFILE=fuzz. The deadline is generous (a loaded 2-core machine must not
    make it flaky) but still catches a parser that goes quadratic on a hostile input."""
    if FUZZING:
        return settings(deadline=FUZZ_DEADLINE)
    return settings(max_examples=ci_examples, deadline=FUZZ_DEADLINE)


# 2025-11-26T12:00:00Z and thirty days later: a fixed, valid window for pure tests.
T0 = 1764158400
T_EXPIRES = T0 + 30 * 86400
SAMPLE_HASH = "sha256:" + "ab" * 32


def key_from_byte(value: int) -> SigningKey:
    return SigningKey.from_seed(bytes([value]) * 32)


@pytest.fixture
def key() -> SigningKey:
    return key_from_byte(1)


@pytest.fixture
def other_key() -> SigningKey:
    return key_from_byte(2)


def make_document(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "version": "2025.11.26",
        "sequence": 42,
        "channel": "stable",
        "arch": "x86_64",
        "created_at": T0,
        "expires_at": T_EXPIRES,
        "cmdline": "console=ttyS0 quiet",
        "artifacts": {
            "kernel": {"hash": SAMPLE_HASH, "size": 1024, "path": "vmlinuz"},
            "initramfs": {"hash": "sha256:" + "cd" * 32, "size": 2048, "path": "initramfs.img"},
        },
    }
    fields.update(overrides)
    return build_document(**fields)


def signed_document(*keys: SigningKey, **overrides: Any) -> dict[str, Any]:
    document = make_document(**overrides)
    for k in keys:
        document = sign_document(document, k)
    return document


@pytest.fixture
def make_signed() -> Callable[..., dict[str, Any]]:
    return signed_document


def run_tool(*argv: str, stdin: bytes | None = None, env: dict[str, str] | None = None) -> Any:
    """Run ``python -m phase_client ARGV`` as a user would; returns CompletedProcess."""
    import subprocess

    return subprocess.run(
        [sys.executable, "-m", "phase_client", *argv],
        input=stdin,
        capture_output=True,
        timeout=60,
        cwd=REPO,
        env=env,
    )
