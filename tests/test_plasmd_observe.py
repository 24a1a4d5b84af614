"""What a sysadmin watches: /metrics (parsed by a strict Prometheus text-format parser written
here), the access log, timestamps and JSON log lines, and ``plasmd status``."""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from phase_client.cli.plasmd_serve import DaemonFormatter, timestamp, under_systemd
from phase_client.provider.metrics import Family, render
from tests.conftest import run_tool
from tests.provider_helpers import (
    ServerProcess,
    make_tree,
    raw_request,
    running_server,
    serve_args,
)

# -- a strict parser of the Prometheus text format (0.0.4) ------------------------------------

METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
LABEL_VALUE = r'"(?:[^"\\\n]|\\\\|\\"|\\n)*"'
SAMPLE_RE = re.compile(
    rf"^(?P<name>{METRIC_NAME})"
    rf"(?:\{{(?P<labels>(?:{LABEL_NAME}={LABEL_VALUE})(?:,{LABEL_NAME}={LABEL_VALUE})*)?,?\}})?"
    r" (?P<value>\S+)(?: (?P<ts>-?\d+))?$"
)
LABEL_RE = re.compile(rf"({LABEL_NAME})=({LABEL_VALUE})")
HELP_RE = re.compile(rf"^# HELP ({METRIC_NAME}) (.*)$")
TYPE_RE = re.compile(rf"^# TYPE ({METRIC_NAME}) (counter|gauge|histogram|summary|untyped)$")
SUFFIXES = {"summary": ("", "_sum", "_count"), "histogram": ("_bucket", "_sum", "_count")}


@dataclass
class Parsed:
    kind: str = "untyped"
    help: str | None = None
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)


def parse_value(text: str) -> float:
    if text in ("NaN", "+Inf", "-Inf"):
        return float(text.replace("+", ""))
    if not re.fullmatch(r"-?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", text):
        raise ValueError(f"not a sample value: {text!r}")
    return float(text)


def unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value[1:-1])


def parse_exposition(text: str) -> dict[str, Parsed]:
    """Every family; raises on anything the format does not allow: a line that is not a
    comment or a sample, TYPE after samples, a family split in two, a sample of an unknown
    suffix, a duplicate sample, a bad value, no final newline."""
    if not text.endswith("\n"):
        raise ValueError("the exposition must end with a newline")
    families: dict[str, Parsed] = {}
    current: str | None = None
    closed: set[str] = set()
    for number, line in enumerate(text[:-1].split("\n"), start=1):
        where = f"line {number}: {line!r}"
        if not line:
            raise ValueError(f"empty {where}")
        if line.startswith("#"):
            match = HELP_RE.match(line) or TYPE_RE.match(line)
            if match is None:
                if line.startswith(("# HELP", "# TYPE")):
                    raise ValueError(f"malformed {where}")
                continue  # a plain comment
            name = match.group(1)
            if name != current:
                if name in closed or name in families:
                    raise ValueError(f"family {name} split or repeated at {where}")
                if current is not None:
                    closed.add(current)
                current = name
                families[name] = Parsed()
            family = families[name]
            if line.startswith("# TYPE"):
                if family.samples or family.kind != "untyped":
                    raise ValueError(f"TYPE after samples or twice at {where}")
                family.kind = match.group(2)
            else:
                if family.help is not None:
                    raise ValueError(f"HELP twice at {where}")
                family.help = match.group(2)
            continue
        match = SAMPLE_RE.match(line)
        if match is None:
            raise ValueError(f"not a sample: {where}")
        name = match.group("name")
        if current is None:
            raise ValueError(f"sample before any family: {where}")
        family = families[current]
        suffix = name[len(current) :] if name.startswith(current) else None
        if suffix is None or suffix not in SUFFIXES.get(family.kind, ("",)):
            raise ValueError(f"{name} does not belong to family {current}: {where}")
        labels = tuple(sorted((k, unescape(v)) for k, v in LABEL_RE.findall(match["labels"] or "")))
        if len({k for k, _ in labels}) != len(labels):
            raise ValueError(f"repeated label at {where}")
        key = (suffix, labels)
        if key in family.samples:
            raise ValueError(f"duplicate sample at {where}")
        family.samples[key] = parse_value(match.group("value"))
    return families


def value(families: dict[str, Parsed], name: str, suffix: str = "", **labels: str) -> float:
    return families[name].samples[(suffix, tuple(sorted(labels.items())))]


def test_the_parser_is_strict() -> None:
    good = '# HELP a_total x\n# TYPE a_total counter\na_total{k="v\\"q"} 3\n'
    assert value(parse_exposition(good), "a_total", k='v"q') == 3
    for bad in (
        good[:-1],  # no final newline
        good + 'a_total{k="v\\"q"} 4\n',  # a duplicate sample
        "# TYPE a counter\n# TYPE a counter\n",
        "a{k=v} 1\n",
        "# TYPE a gauge\na 1\na 2\n",
        "# TYPE a gauge\na one\n",
        "# TYPE a gauge\na_sum 1\n",
        "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\n# HELP a again\n",
        "# TYPE a gauge\n\na 1\n",
    ):
        with pytest.raises(ValueError):
            parse_exposition(bad)


def test_render_escapes_and_numbers() -> None:
    family = Family("x_total", "counter", "help with \\ and\nnewline")
    family.add(1.5, {"path": 'a"b\\c\nd'}).add(2**60, {"path": "big"}).add(math.nan, {"path": "n"})
    parsed = parse_exposition(render([family]))["x_total"]
    assert parsed.help == "help with \\\\ and\\nnewline"
    assert value({"x_total": parsed}, "x_total", path='a"b\\c\nd') == 1.5
    assert value({"x_total": parsed}, "x_total", path="big") == 2.0**60
    assert math.isnan(value({"x_total": parsed}, "x_total", path="n"))


# -- a real server ----------------------------------------------------------------------------


def get(port: int, path: str, method: str = "GET") -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        conn.close()


def curl(url: str) -> str:
    """``curl /metrics`` as an operator would run it (curl is installed with the test deps)."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    result = subprocess.run(
        ["curl", "-fsS", "--max-time", "60", url], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    root = tmp_path_factory.mktemp("observe")
    make_tree(root / "art", {"stable/x86_64": 200_000, "testing/x86_64": 1000})
    (root / "art/stable/arm64").mkdir()
    with running_server(serve_args(root / "art", root / "state", "--settle-time", "0")) as server:
        yield server


def test_metrics_parse_and_count_what_was_served(served: ServerProcess) -> None:
    before = parse_exposition(curl(served.url + "/metrics"))
    assert get(served.port, "/stable/x86_64/vmlinuz")[0] == 200
    assert get(served.port, "/stable/x86_64/manifest.json")[0] == 200
    assert get(served.port, "/nothing/here")[0] == 404
    status, kind, _ = get(served.port, "/metrics")
    assert status == 200 and kind == "text/plain; version=0.0.4; charset=utf-8"
    after = parse_exposition(curl(served.url + "/metrics"))

    def grew(name: str, **labels: str) -> float:
        old = before[name].samples.get(("", tuple(sorted(labels.items()))), 0.0)
        return value(after, name, **labels) - old

    assert grew("plasmd_http_requests_total", **{"class": "artifact", "status": "200"}) == 1
    assert grew("plasmd_http_response_bytes_total", **{"class": "artifact", "status": "200"}) == (
        200_000
    )
    assert grew("plasmd_http_requests_total", **{"class": "manifest", "status": "200"}) == 1
    assert grew("plasmd_http_requests_total", **{"class": "other", "status": "404"}) == 1
    assert grew("plasmd_http_requests_total", **{"class": "metrics", "status": "200"}) >= 2
    assert after["plasmd_http_requests_total"].kind == "counter"
    assert value(after, "plasmd_http_active_transfers") == 0
    assert value(after, "plasmd_catalog_combinations", state="offered") == 2
    assert value(after, "plasmd_catalog_combinations", state="missing") == 2  # */arm64
    assert value(after, "plasmd_catalog_files") == 2
    assert value(after, "plasmd_catalog_bytes") == 201_000
    assert value(after, "plasmd_sign_operations_total") == 2
    assert value(after, "plasmd_scan_duration_seconds", "_count") >= 1
    assert after["plasmd_scan_duration_seconds"].kind == "summary"
    for family in after.values():
        assert family.help, family


def test_one_access_line_per_request(served: ServerProcess) -> None:
    start = len(served.lines)
    get(served.port, "/stable/x86_64/vmlinuz")
    get(served.port, "/health", method="HEAD")
    raw_request(served.port, b'GET /odd"\x7fpath HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
    served.wait_for(
        r'^INFO 127\.0\.0\.1 "GET /stable/x86_64/vmlinuz" 200 200000 \d+\.\d{3}s$', start=start
    )
    served.wait_for(r'^INFO 127\.0\.0\.1 "HEAD /health" 200 0 \d+\.\d{3}s$', start=start)
    served.wait_for(r'^INFO 127\.0\.0\.1 "GET /odd\\"\\x7fpath" 404 \d+ ', start=start)
    stamped = [line for line in served.raw_lines if '"GET /stable/x86_64/vmlinuz"' in line]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO ", stamped[-1]), stamped


def test_plasmd_status_for_a_person_and_for_scripts(served: ServerProcess) -> None:
    result = run_tool("plasmd", "status", served.url)
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    assert "offered  2:" in text and "stable/x86_64" in text and "(default)" in text
    assert "missing  stable/arm64, testing/arm64" in text
    result = run_tool("plasmd", "status", "--json", f"127.0.0.1:{served.port}")
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert {o["channel"] for o in report["status"]["offered"]} == {"stable", "testing"}


def test_plasmd_status_of_nothing_is_exit_3(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connection refused
        result = run_tool("plasmd", "status", "--json", f"http://127.0.0.1:{port}/")
    assert result.returncode == 3
    assert json.loads(result.stdout)["error"]["reason"] == "unreachable"
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and "no plasmd answered at" in lines[0], lines
    result = run_tool("plasmd", "status", "ftp://x/")
    assert result.returncode == 2 and "not an http(s) URL" in result.stderr.decode()


def test_json_logs_and_no_timestamps_under_systemd(tmp_path: Path) -> None:
    make_tree(tmp_path / "art", {"stable/x86_64": 1000})
    args = serve_args(tmp_path / "art", tmp_path / "state", "--log-format", "json")
    server = ServerProcess(args)
    try:
        line = server.wait_for(r'^\{.*"message": "Listening on http://').string
        document = json.loads(line)
        assert document["level"] == "INFO" and document["logger"] == "phase_client.provider.server"
        port = int(re.search(r":(\d+)/$", document["message"]).group(1))  # type: ignore[union-attr]
        get(port, "/health")
        access = json.loads(server.wait_for(r'"path": "/health"').string)
        assert access["method"] == "GET" and access["status"] == 200 and access["bytes"] > 0
        assert access["client"] == "127.0.0.1" and access["duration_s"] >= 0
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", access["time"])
    finally:
        assert server.stop() == 0
    assert under_systemd({"JOURNAL_STREAM": "8:1234"}) and under_systemd({"INVOCATION_ID": "x"})
    assert not under_systemd({})
    import logging

    record = logging.LogRecord("n", logging.INFO, "f", 1, "Found %d", (2,), None)
    record.created = 0.5
    assert DaemonFormatter(False, True, 0).format(record) == "1970-01-01T00:00:00.500Z INFO Found 2"
    assert DaemonFormatter(False, False, 0).format(record) == "INFO Found 2"
    assert timestamp(86400.25) == "1970-01-02T00:00:00.250Z"
