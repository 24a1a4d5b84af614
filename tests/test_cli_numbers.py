"""Every number on a command line is finite and in range, or a usage error (exit 2) in one line:
``--timeout inf`` once meant a fetch that never gives up, ``1e308`` a crash in settimeout()."""

from __future__ import annotations

import pytest

from phase_client.cli import run_tool

fetch_main, discover_main, plasmd_main = "fetch", "discover", "plasmd"

BAD = ["inf", "-inf", "nan", "1e308", "-1", "0x10", ""]


@pytest.mark.parametrize("value", BAD)
@pytest.mark.parametrize(
    ("main", "argv"),
    [
        pytest.param(fetch_main, ["--timeout"], id="fetch-timeout"),
        pytest.param(fetch_main, ["--grace"], id="fetch-grace"),
        pytest.param(fetch_main, ["--min-rate"], id="fetch-min-rate"),
        pytest.param(fetch_main, ["--discover-timeout"], id="fetch-discover-timeout"),
        pytest.param(fetch_main, ["--retries"], id="fetch-retries"),
        pytest.param(fetch_main, ["--connections"], id="fetch-connections"),
        pytest.param(discover_main, ["--timeout"], id="discover-timeout"),
        pytest.param(plasmd_main, ["dht-node", "--rpc-timeout"], id="dht-rpc-timeout"),
        pytest.param(plasmd_main, ["dht-node", "--port"], id="dht-port"),
        pytest.param(
            plasmd_main,
            [
                *("manifest", "generate", "--artifacts", "d", "--channel", "stable"),
                *("--arch", "x86_64", "--key", "k", "--output", "o", "--expires-in"),
            ],
            id="manifest-expires-in",
        ),
    ],
)
def test_bad_numbers_are_usage_errors(
    main: str, argv: list[str], value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        run_tool(main, [*argv, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(("phase-", "plasmd")) and "error: argument" in err[-1]
    assert "Traceback" not in "\n".join(err)


def test_the_limits_themselves_are_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    # --timeout 86400 parses; the run then stops at the first missing input, not at the number.
    argv = ["--timeout", "86400", "--retries", "100", "--key", "x", "--output", "o"]
    assert run_tool("fetch", argv) == 2
    assert "no manifest given" in capsys.readouterr().err
