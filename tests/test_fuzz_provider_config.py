"""Fuzz target for ``plasmd serve --config`` (phase_client/provider/config.py): the TOML text
through parse_config_text and resolve, and the file through load_config_file. docs/fuzz.md.

Property: a ServeConfig, or UsageError (one line, exit 2); never another exception.

The crashes this target found (each escaped as a traceback, fixed in provider/config.py) are
kept as explicit examples and as a plain regression test.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from phase_client.errors import UsageError
from phase_client.provider.config import (
    DHT_KEYS,
    PROVIDER_KEYS,
    ServeConfig,
    load_config_file,
    parse_config_text,
    resolve,
)
from tests.conftest import fuzz_settings

ARTIFACTS = Path(tempfile.mkdtemp(prefix="fuzz-config-"))
BASE = ARTIFACTS

FOUND_CRASHES = [
    "provider = 1",  # TypeError: dict(1) before the table check
    "[[provider]]",  # ValueError: dict([{}])
    "[provider]\nchannels.stable = 1",  # AttributeError: 'int' object has no attribute 'items'
    "[provider]\nkey = '~nosuchuser/k'",  # RuntimeError from Path.expanduser()
    "[dht]\nport = " + "9" * 5000,  # ValueError: tomllib's int() past 4300 digits
    "x = " + "[" * 2000 + "]" * 2000,  # RecursionError inside tomllib
]

scalars = st.one_of(
    st.integers(-(2**64), 2**64).map(str),
    st.sampled_from(["nan", "inf", "-inf", "-0.0", "1e400", "3.5", "0", "65536", "-1", "true"]),
    st.sampled_from(['"~nosuchuser/x"', '"~"', '""', '"\\u0000"', "'a\\b'", '"stable\\n"']),
    st.sampled_from(['"198.51.100.7:4001"', '"[::1]:1"', '"h:0"', '"x86_64"', '"amd64"']),
    st.sampled_from(["1979-05-27T07:32:00Z", "07:32:00", "{}", "[]", "{ a = 1 }"]),
    st.text(max_size=10).map(lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
    max_leaves=6,
)
keys = st.sampled_from(
    sorted({*PROVIDER_KEYS, *DHT_KEYS, "channels", "channels.stable", "enabled", "x", "provider"})
)
headers = st.sampled_from(
    [
        "[provider]",
        "[dht]",
        "[provider.channels.stable]",
        "[provider.channels.BAD]",
        "[provider.channels]",
        "[[provider]]",
        "[other]",
        "[ provider ] # comment",
    ]
)
lines = st.one_of(
    headers,
    st.builds(lambda k, v: f"{k} = {v}", keys, values),
    st.text(max_size=20),
)
config_texts = st.lists(lines, max_size=10).map("\n".join)


def check(text: str) -> None:
    try:
        settings = parse_config_text(text, BASE)
        config = resolve({"artifacts": str(ARTIFACTS)}, settings)
    except UsageError:
        event("refused")
        return
    event("accepted")
    assert isinstance(config, ServeConfig)
    assert 0 <= config.port < 65536
    assert all(0 < port < 65536 for _, port in config.dht_settings.bootstrap)


@fuzz_settings(300)
@given(config_texts)
@example(FOUND_CRASHES[0])
@example(FOUND_CRASHES[1])
@example(FOUND_CRASHES[2])
@example(FOUND_CRASHES[3])
@example(FOUND_CRASHES[4])
@example(FOUND_CRASHES[5])
def test_config_text(text: str) -> None:
    check(text)


@pytest.mark.parametrize("text", FOUND_CRASHES)
def test_known_config_crash_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError):
        parse_config_text(text, BASE)


@fuzz_settings(100)
@given(st.binary(max_size=200) | config_texts.map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_config_file_bytes(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "plasmd.toml"
        path.write_bytes(raw)
        try:
            load_config_file(path)
        except UsageError:
            return
