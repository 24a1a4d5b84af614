"""Ranking, probing and the auto-mode flow of phase-discover."""

from __future__ import annotations

import http.server
import logging
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence

import pytest

from phase_client.discovery import orchestrate
from phase_client.discovery.model import Candidate, LanWatch, Query
from phase_client.discovery.orchestrate import find_providers
from phase_client.discovery.probe import probe_all
from phase_client.discovery.rank import deduplicate, rank, version_key

from .fetch_servers import HeaderDripServer


def cand(url: str, source: str = "mdns", rtt: float | None = None, version: str = "1") -> Candidate:
    return Candidate(
        source=source, url=url, channel="stable", arch="x86_64", version=version, rtt_ms=rtt
    )


def test_version_key_is_natural() -> None:
    assert version_key("2025.11.9") < version_key("2025.11.26")
    assert version_key("2025.11.26") < version_key("2025.11.26.1")
    assert version_key(None) < version_key("0")


def test_lan_before_wan_even_when_slower() -> None:
    ranked = rank([cand("http://wan/", "dht", rtt=1.0), cand("http://lan/", "mdns", rtt=80.0)])
    assert [c.url for c in ranked] == ["http://lan/", "http://wan/"]


def test_rtt_then_newest_version() -> None:
    ranked = rank(
        [
            cand("http://slow/", rtt=50.0, version="2025.12.01"),
            cand("http://old/", rtt=1.0, version="2025.11.09"),
            cand("http://new/", rtt=2.0, version="2025.11.26"),
            cand("http://unprobed/", rtt=None, version="2026.01.01"),
        ]
    )
    assert [c.url for c in ranked] == [
        "http://new/",
        "http://old/",
        "http://slow/",
        "http://unprobed/",
    ]


def test_equals_are_spread_at_random() -> None:
    equals = [cand(f"http://p{i}/", rtt=1.0) for i in range(3)]
    firsts = Counter(rank(equals, random.Random(seed))[0].url for seed in range(300))
    assert set(firsts) == {"http://p0/", "http://p1/", "http://p2/"}
    assert min(firsts.values()) > 60  # roughly a third each


def test_deduplicate_prefers_lan_report() -> None:
    merged = deduplicate([cand("http://x/", "dht"), cand("http://x/", "mdns"), cand("http://y/")])
    assert sorted((c.url, c.source) for c in merged) == [
        ("http://x/", "mdns"),
        ("http://y/", "mdns"),
    ]


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:
        self.send_response(200 if self.path.endswith("manifest.json") else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/stable/x86_64/manifest.json"


def test_probe_drops_dead_and_wrong_and_measures_rtt(http_server: str) -> None:
    alive = cand(f"{http_server}/stable/x86_64/manifest.json")
    missing = cand(f"{http_server}/nothing-here")
    gone = cand(dead_url())
    result = probe_all([alive, missing, gone], timeout=2.0)
    assert [c.url for c in result] == [alive.url]
    assert result[0].rtt_ms is not None and result[0].rtt_ms >= 0


def test_probe_gives_up_on_a_header_drip_at_its_timeout() -> None:
    with HeaderDripServer() as drip:
        started = time.monotonic()
        assert probe_all([cand(drip.url)], timeout=1.0) == []
        elapsed = time.monotonic() - started
    assert elapsed < 8, f"a header drip held the probe for {elapsed:.1f}s"  # hang detector


def fake_source(found: list[Candidate], delay: float = 0.0):  # type: ignore[no-untyped-def]
    calls: list[Query] = []

    def lookup(query: Query, *_: Sequence[tuple[str, int]]) -> list[Candidate]:
        calls.append(query)
        time.sleep(delay)
        return list(found)

    lookup.calls = calls  # type: ignore[attr-defined]
    return lookup


def test_auto_prefers_lan_and_does_not_wait_for_dht(http_server: str) -> None:
    lan = cand(f"{http_server}/stable/x86_64/manifest.json", "mdns")
    wan = cand(f"{http_server}/stable/x86_64/manifest.json?wan", "dht")
    started = time.monotonic()
    result = find_providers(
        Query(timeout=10),
        bootstrap=[("127.0.0.1", 1)],
        mdns_lookup=fake_source([lan]),
        dht_lookup=fake_source([wan], delay=8),
    )
    assert [c.source for c in result] == ["mdns"]
    assert time.monotonic() - started < 5


def test_auto_falls_back_to_dht_when_lan_provider_is_dead(http_server: str) -> None:
    stale = cand(dead_url(), "mdns")  # crashed without goodbye: still in the mDNS cache
    wan = cand(f"{http_server}/stable/x86_64/manifest.json", "dht")
    result = find_providers(
        Query(timeout=5),
        bootstrap=[("127.0.0.1", 1)],
        mdns_lookup=fake_source([stale]),
        dht_lookup=fake_source([wan]),
    )
    assert [c.url for c in result] == [wan.url]


def test_all_lists_every_source_lan_first(http_server: str) -> None:
    lan = cand(f"{http_server}/a/manifest.json", "mdns")
    wan = cand(f"{http_server}/b/manifest.json", "dht")
    result = find_providers(
        Query(timeout=3, want_all=True),
        bootstrap=[("h", 1)],
        mdns_lookup=fake_source([lan]),
        dht_lookup=fake_source([wan]),
    )
    assert [c.source for c in result] == ["mdns", "dht"]
    assert all(c.rtt_ms is not None for c in result)


def test_all_keeps_a_lan_lookup_that_ends_late(http_server: str) -> None:
    """With --all, an mDNS lookup still finishing past its search window (its own start-up on a
    loaded machine) is waited for up to the overall deadline, not lost: it was once, and the
    LAN provider was then listed as the DHT's. Timeout 8 s: search window 6 s (+0.5), deadline
    8 s; the lookup ends at 7 s, 0.5 s past the one and 1 s before the other."""
    lan = cand(f"{http_server}/a/manifest.json", "mdns")
    wan = cand(f"{http_server}/a/manifest.json", "dht")
    result = find_providers(
        Query(timeout=8, want_all=True),
        bootstrap=[("h", 1)],
        mdns_lookup=fake_source([lan], delay=7.0),
        dht_lookup=fake_source([wan]),
    )
    assert [(c.url, c.source) for c in result] == [(lan.url, "mdns")]


def test_mdns_lookup_ends_when_the_orchestrator_said(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real lookup's window runs to ``lan.until``, whatever its import cost before it."""
    from phase_client.discovery import mdns

    seen: list[float] = []

    def discover(query: Query, *_: object, until_quiet: bool = False) -> list[Candidate]:
        seen.append(query.timeout)
        return []

    monkeypatch.setattr(mdns, "discover_mdns", discover)
    until = time.monotonic() + 1.0
    orchestrate._mdns_lookup(Query(timeout=30), None, LanWatch(until=until))
    assert len(seen) == 1 and 0.5 < seen[0] <= 1.0
    orchestrate._mdns_lookup(Query(timeout=30), None, LanWatch())
    assert seen[1] == 30


def test_nothing_found_respects_timeout() -> None:
    started = time.monotonic()
    assert find_providers(Query(timeout=1.0), mdns_lookup=fake_source([], delay=30)) == []
    assert time.monotonic() - started < 3


def test_no_probe_keeps_unreachable() -> None:
    gone = cand(dead_url())
    assert find_providers(Query(timeout=2), probe=False, mdns_lookup=fake_source([gone])) == [gone]


def test_dht_only_without_bootstrap_is_not_queried() -> None:
    dht = fake_source([cand("http://x/", "dht")])
    find_providers(Query(timeout=0.5), mdns_lookup=fake_source([]), dht_lookup=dht)
    assert dht.calls == []  # type: ignore[attr-defined]


def test_dht_answer_used_after_lan_grace_without_waiting_for_mdns(http_server: str) -> None:
    wan = cand(f"{http_server}/stable/x86_64/manifest.json", "dht")
    started = time.monotonic()
    result = find_providers(
        Query(timeout=10),
        bootstrap=[("127.0.0.1", 1)],
        mdns_lookup=fake_source([], delay=30),
        dht_lookup=fake_source([wan]),
    )
    assert [c.url for c in result] == [wan.url]
    assert time.monotonic() - started < 4  # LAN grace (1 s) + probe, not the 10 s timeout


def test_lan_answer_within_grace_beats_an_earlier_dht_answer(http_server: str) -> None:
    lan = cand(f"{http_server}/stable/x86_64/manifest.json", "mdns")
    wan = cand(f"{http_server}/stable/x86_64/manifest.json?wan", "dht")
    result = find_providers(
        Query(timeout=10),
        bootstrap=[("127.0.0.1", 1)],
        mdns_lookup=fake_source([lan], delay=0.5),
        dht_lookup=fake_source([wan]),
    )
    assert [c.source for c in result] == ["mdns"]


def test_probing_dht_lookup_collects_every_record(http_server: str) -> None:
    # The first record a lookup meets may be a dead provider's: with probing, ask for all.
    dht = fake_source([cand(dead_url(), "dht"), cand(f"{http_server}/x/manifest.json", "dht")])
    result = find_providers(Query(timeout=5), source="dht", bootstrap=[("h", 1)], dht_lookup=dht)
    assert dht.calls[0].want_all is True  # type: ignore[attr-defined]
    assert [c.url for c in result] == [f"{http_server}/x/manifest.json"]


def quiet_lan(delay: float, then_sleep: float, found: list[Candidate]):  # type: ignore[no-untyped-def]
    """An mDNS lookup that says "the LAN answered nothing" after ``delay`` but keeps running."""

    def lookup(query: Query, interfaces: object, lan: LanWatch) -> list[Candidate]:
        time.sleep(delay)
        lan.unanswered.set()
        lan.quiet.set()
        time.sleep(then_sleep)
        return list(found)

    return lookup


def test_quiet_lan_ends_the_grace_before_it_runs_out(
    http_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With a grace of 30 s, only the quiet signal can let the DHT answer through early.
    monkeypatch.setattr(orchestrate, "LAN_GRACE", 30.0)
    wan = cand(f"{http_server}/stable/x86_64/manifest.json", "dht")
    started = time.monotonic()
    result = find_providers(
        Query(timeout=60),
        bootstrap=[("127.0.0.1", 1)],
        mdns_lookup=quiet_lan(0.1, 30, []),
        dht_lookup=fake_source([wan]),
    )
    assert [c.url for c in result] == [wan.url]
    assert time.monotonic() - started < 20  # hang detector: the grace (30 s) did not run out


def test_a_lan_that_is_not_quiet_keeps_the_grace(
    http_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The LAN answers after 1.5 s and never says it is quiet: the DHT answer (at once) waits.
    monkeypatch.setattr(orchestrate, "LAN_GRACE", 30.0)
    lan = cand(f"{http_server}/stable/x86_64/manifest.json", "mdns")
    wan = cand(f"{http_server}/stable/x86_64/manifest.json?wan", "dht")
    result = find_providers(
        Query(timeout=60),
        bootstrap=[("127.0.0.1", 1)],
        mdns_lookup=fake_source([lan], delay=1.5),
        dht_lookup=fake_source([wan]),
    )
    assert [c.source for c in result] == ["mdns"]


def test_a_lan_that_answers_at_once_never_starts_the_dht(http_server: str) -> None:
    # The LAN's answer is accepted before its first answers are in: the DHT lookup, which
    # would only compete with it, waits for a signal that never comes.
    lan = cand(f"{http_server}/stable/x86_64/manifest.json", "mdns")
    dht = fake_source([cand(f"{http_server}/stable/x86_64/manifest.json?wan", "dht")])
    result = find_providers(
        Query(timeout=10),
        bootstrap=[("127.0.0.1", 1)],
        mdns_lookup=fake_source([lan]),
        dht_lookup=dht,
    )
    assert [c.source for c in result] == ["mdns"]
    time.sleep(0.2)
    assert dht.calls == []  # type: ignore[attr-defined]


def test_the_dht_starts_with_the_lans_first_answers_not_its_quiet(http_server: str) -> None:
    # The LAN says "nothing in the first answers" at once and is judged quiet only after the
    # DHT lookup has run: the DHT's answer is then ready and used.
    wan = cand(f"{http_server}/stable/x86_64/manifest.json", "dht")
    dht = fake_source([wan])
    before_quiet: list[bool] = []

    def lookup(query: Query, interfaces: object, lan: LanWatch) -> list[Candidate]:
        lan.unanswered.set()
        deadline = time.monotonic() + 10
        while not dht.calls and time.monotonic() < deadline:  # type: ignore[attr-defined]
            time.sleep(0.01)
        before_quiet.append(bool(dht.calls))  # type: ignore[attr-defined]
        lan.quiet.set()
        time.sleep(30)
        return []

    result = find_providers(
        Query(timeout=60), bootstrap=[("127.0.0.1", 1)], mdns_lookup=lookup, dht_lookup=dht
    )
    assert before_quiet == [True]
    assert [c.url for c in result] == [wan.url]


class _CountingHandler(_Handler):
    heads: list[str] = []
    arrived = threading.Event()

    def do_HEAD(self) -> None:
        type(self).heads.append(self.path)
        type(self).arrived.set()
        super().do_HEAD()


def test_a_lan_answer_is_probed_as_soon_as_it_is_found() -> None:
    # The probe runs while the mDNS lookup is still collecting (its grace window), once per URL.
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CountingHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/stable/x86_64/manifest.json"
    probed_while_looking: list[bool] = []

    def lookup(query: Query, interfaces: object, lan: LanWatch) -> list[Candidate]:
        assert lan.found is not None
        lan.found(cand(url))
        probed_while_looking.append(_CountingHandler.arrived.wait(10))
        return [cand(url, version="2")]  # re-announced meanwhile: the newer report is kept

    try:
        result = find_providers(Query(timeout=20), mdns_lookup=lookup)
    finally:
        server.shutdown()
        server.server_close()
    assert probed_while_looking == [True]
    assert _CountingHandler.heads == ["/stable/x86_64/manifest.json"]
    assert [(c.url, c.version) for c in result] == [(url, "2")]
    assert result[0].rtt_ms is not None


def test_waiting_past_the_lan_grace_sleeps() -> None:
    # The LAN never answers nor goes quiet, the DHT finds nothing: the orchestrator waits for
    # the timeout, asleep (it once woke itself on every turn after the grace: a busy loop).
    started_cpu = time.process_time()
    result = find_providers(
        Query(timeout=3),
        bootstrap=[("127.0.0.1", 1)],
        mdns_lookup=fake_source([], delay=30),
        dht_lookup=fake_source([]),
    )
    assert result == []
    assert time.process_time() - started_cpu < 0.5  # a busy loop burns ~1.5 s of CPU here


def test_the_interfaces_are_read_only_to_judge_a_dht_candidate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # mDNS answers are on the LAN by definition: ranking them reads no interface (a look is
    # tens of ms of a booting machine's emulated CPU). A DHT answer needs the look: a provider
    # on this machine's network ranks as a LAN one, before a faster one elsewhere.
    looks: list[int] = []

    def networks() -> list[str]:
        looks.append(1)
        return ["10.9.0.0/16"]

    monkeypatch.setattr(orchestrate, "_networks", networks)
    lan = [cand("http://10.9.0.5:8080/a/manifest.json"), cand("http://10.9.0.6:8080/b/m.json")]
    found = find_providers(Query(timeout=2), probe=False, mdns_lookup=fake_source(lan))
    assert sorted(c.url for c in found) == sorted(c.url for c in lan)
    assert looks == []
    near = cand("http://10.9.0.7:8080/c/manifest.json", "dht", rtt=40.0)
    far = cand("http://192.0.2.7:8080/d/manifest.json", "dht", rtt=5.0)
    found = find_providers(
        Query(timeout=2),
        probe=False,
        bootstrap=[("127.0.0.1", 1)],
        mdns_lookup=fake_source([]),
        dht_lookup=fake_source([far, near]),
    )
    assert [c.url for c in found] == [near.url, far.url]
    assert looks == [1]


@pytest.mark.parametrize("debug", [False, True], ids=["default", "verbose"])
def test_a_source_that_fails_unexpectedly_is_one_line_and_a_traceback_with_v(
    http_server: str, caplog: pytest.LogCaptureFixture, debug: bool
) -> None:
    """A source raising something that is no PhaseError (a bug, ours or a library's) does not
    stop the other source; it is one WARN line, and with -v (DEBUG) also where it was raised."""

    def broken(query: Query, *_: Sequence[str]) -> list[Candidate]:
        raise RuntimeError("not running")

    wan = cand(f"{http_server}/stable/x86_64/manifest.json", "dht")
    caplog.set_level(logging.DEBUG if debug else logging.INFO, logger="phase_client")
    result = find_providers(
        Query(timeout=5), bootstrap=[("127.0.0.1", 1)], mdns_lookup=broken,
        dht_lookup=fake_source([wan]),
    )  # fmt: skip
    assert [c.url for c in result] == [wan.url]
    (record,) = [r for r in caplog.records if "discovery failed" in r.getMessage()]
    assert record.getMessage() == "mdns discovery failed: RuntimeError: not running"
    assert record.levelno == logging.WARNING
    traceback = bool(record.exc_info) and record.exc_info[0] is RuntimeError  # type: ignore[index]
    assert traceback is debug
