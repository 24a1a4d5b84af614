"""Fuzz target for HOST:PORT parsing (phase_client/hostport.py): --bootstrap flags, config
lists and the kernel command line's ``phase.bootstrap=``. docs/fuzz.md: make fuzz.

Property: (host, port) with 0 < port < 65536 that re-parses to itself, or UsageError.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from phase_client.errors import UsageError
from phase_client.hostport import (
    MAX_BOOTSTRAP,
    bootstrap_from_cmdline,
    parse_bootstrap_list,
    parse_host_port,
    url_host,
)
from tests.conftest import fuzz_settings

pieces = st.sampled_from(
    ["[", "]", ":", "::1", "host", "10.0.0.1", " ", "\n", "0", "65535", "65536", "\u0661", "%25"]
)
addresses = st.one_of(
    st.text(max_size=30),
    st.lists(pieces, max_size=6).map("".join),
    st.builds(lambda h, p: f"{h}:{p}", st.text(max_size=10), st.integers(-1, 70000)),
    st.builds(lambda h, p: f"[{h}]:{p}", st.text(max_size=10), st.integers(-1, 70000)),
    st.integers(6, 6000).map(lambda n: "host:" + "0" * n + "80"),
)


def check(host: str, port: int) -> None:
    assert host and 0 < port < 65536
    # Brackets keep a host as it is (spaces, colons); only a host with "]" needs the plain form.
    text = f"{host}:{port}" if "]" in host else f"[{host}]:{port}"
    assert parse_host_port(text) == (host, port)


@fuzz_settings(500)
@given(addresses)
@example("host:" + "1" * 5000)
@example("[::1]:" + "0" * 5000 + "80")
@example("host:80\n")
def test_host_port(text: str) -> None:
    try:
        host, port = parse_host_port(text)
    except UsageError:
        return
    check(host, port)


@fuzz_settings(300)
@given(st.lists(addresses | st.sampled_from(["a:1", "[::1]:2"]), max_size=MAX_BOOTSTRAP + 2))
def test_bootstrap_list(items: list[str]) -> None:
    try:
        found = parse_bootstrap_list(",".join(items))
    except UsageError:
        return
    assert len(found) <= MAX_BOOTSTRAP
    for host, port in found:
        check(host, port)


words = st.one_of(
    st.text(max_size=20),
    st.builds(
        lambda sep, value: "phase.bootstrap" + sep + value,
        st.sampled_from(["=", "==", "", " ="]),
        st.lists(addresses | st.just("198.51.100.7:4001"), max_size=3).map(",".join),
    ),
)


@fuzz_settings(300)
@given(st.lists(words, max_size=8).map(" ".join))
@example("console=ttyS0 phase.bootstrap=a:1,b:" + "9" * 5000)
def test_kernel_command_line(cmdline: str) -> None:
    try:
        found = bootstrap_from_cmdline(cmdline)
    except UsageError:
        return
    for host, port in found:
        check(host, port)


@pytest.mark.parametrize("port", ["1" * 5000, "0" * 4299 + "80", "000080"])
def test_endless_port_digits_are_a_usage_error(port: str) -> None:
    # Found by test_host_port: int() raised ValueError past 4300 digits (a crash, exit 70).
    for text in (f"host:{port}", f"[::1]:{port}", f"phase.bootstrap=a:1,b:{port}"):
        with pytest.raises(UsageError):
            if text.startswith("phase."):
                bootstrap_from_cmdline(text)
            else:
                parse_host_port(text)


def test_url_host_brackets_ipv6_once() -> None:
    assert url_host("10.0.0.1") == "10.0.0.1"
    assert url_host("provider.lan") == "provider.lan"
    assert url_host("fe80::1") == "[fe80::1]"
    assert url_host("[fe80::1]") == "[fe80::1]"
