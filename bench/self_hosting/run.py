"""Load distribution by self-hosting (issue 14): machines that fetched an image serve it to the
ones that come after them. How many of the bytes does the original provider still serve, and
how long until every machine has the image, against the same lab with one provider only?

    sudo python3 bench/self_hosting/run.py [--clients 8] [--mirrors 4] [--size-mib 100]
                                           [--uplink-mbit 160] [--stagger 3] [--json]

One throw-away namespace LAN (tests/netns.py). Every machine, the provider included, has the
same uplink: a token bucket (`tc tbf`) of --uplink-mbit on its eth0's egress. The provider P
runs ``plasmd serve`` (mDNS, signing with a fresh key) over one --size-mib file. Client i starts
at i x --stagger seconds: ``phase-fetch --discover --source mdns`` (every provider its mDNS
browse finds is a source; the first manifest that verifies is used and the others serving the
same bytes become extra sources, ranges split between them). Once done, the first --mirrors
clients to finish lay their verified files out as a mirror (the signed manifest beside them,
hard links, what stage 1 carries across kexec) and start ``plasmd serve`` on it: the machines
that come later find them. Measured: bytes P sent on its uplink (`tc -s`), each client's time,
and the time from the first start to the last finish. The same run with --mirrors 0 is the
peer.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.netns import Lan, Node  # noqa: E402

FETCH_DEADLINE = 900.0  # seconds for one client


def tc_cap(node: Node, mbit: int) -> None:
    subprocess.run(
        ["ip", "netns", "exec", node.netns, "tc", "qdisc", "add", "dev", "eth0", "root",
         "tbf", "rate", f"{mbit}mbit", "burst", "256kb", "latency", "50ms"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip


def sent_bytes(node: Node) -> int:
    out = subprocess.run(
        ["ip", "netns", "exec", node.netns, "tc", "-s", "qdisc", "show", "dev", "eth0"],
        check=True, capture_output=True, text=True, timeout=30,
    ).stdout  # fmt: skip
    found = re.search(r"Sent (\d+) bytes", out)
    return int(found.group(1)) if found else 0


def serve(node: Node, artifacts: Path, state: Path, log: Path, *extra: str) -> None:
    with log.open("wb") as out:
        proc = node.popen(
            node.python(
                "plasmd", "serve", "--artifacts", str(artifacts), "--state-dir", str(state),
                "--port", "8080", "--no-dht", "--settle-time", "0", *extra,
            ),
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if "mDNS: advertising stable/x86_64" in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise SystemExit(f"bench self_hosting: plasmd exited:\n{log.read_text()}")
        time.sleep(0.1)
    raise SystemExit(f"bench self_hosting: plasmd did not advertise:\n{log.read_text()}")


def mirror_from(output: Path, mirror: Path) -> None:
    """The fetched, verified files laid out as plasmd serves a mirror (hard links)."""
    manifest = json.loads((output / "manifest.json").read_bytes())
    combo = mirror / manifest["channel"] / manifest["arch"]
    combo.mkdir(parents=True)
    os.link(output / "manifest.json", combo / "manifest.json")
    for name, artifact in manifest["artifacts"].items():
        target = combo / artifact["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(output / name, target)


def one_lab(args: argparse.Namespace, mirrors: int, work: Path) -> dict[str, Any]:
    with Lan(prefix="bs") as lan:
        provider = lan.add_node("origin")
        tc_cap(provider, args.uplink_mbit)
        art = work / "art" / "stable" / "x86_64"
        art.mkdir(parents=True)
        block = os.urandom(1 << 20)
        with (art / "vmlinuz").open("wb") as out:
            for _ in range(args.size_mib):
                out.write(block)
        key = work / "release.key"
        subprocess.run(
            [sys.executable, "-m", "phase_client", "plasmd", "keygen", "--out", str(key)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        serve(provider, work / "art", work / "origin-state", work / "origin.log", "--key", str(key))
        before = sent_bytes(provider)
        clients = []
        for index in range(args.clients):
            node = lan.add_node(f"c{index}")
            tc_cap(node, args.uplink_mbit)
            clients.append(node)
        started: dict[int, float] = {}
        done: dict[int, float] = {}
        running: dict[int, subprocess.Popen[Any]] = {}
        served = 0
        t0 = time.monotonic()
        deadline = t0 + FETCH_DEADLINE + args.clients * args.stagger
        while len(done) < args.clients and time.monotonic() < deadline:
            now = time.monotonic()
            for index, node in enumerate(clients):
                if index not in started and now - t0 >= index * args.stagger:
                    started[index] = now
                    log = (work / f"c{index}.log").open("wb")
                    running[index] = node.popen(
                        node.python(
                            "fetch", "--discover", "--source", "mdns", "--discover-timeout", "2",
                            "--key", f"{key}.pub", "-o", str(work / f"out{index}"), "-q",
                        ),
                        stdout=log, stderr=subprocess.STDOUT,
                    )  # fmt: skip
            for index, proc in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[index]
                if proc.returncode != 0:
                    raise SystemExit(
                        f"client {index} failed: {(work / f'c{index}.log').read_text()}"
                    )
                done[index] = time.monotonic()
                if served < mirrors:
                    served += 1
                    mirror = work / f"mirror{index}"
                    mirror_from(work / f"out{index}", mirror)
                    serve(clients[index], mirror, work / f"m{index}-state", work / f"m{index}.log")
            time.sleep(0.05)
        if len(done) < args.clients:
            raise SystemExit("bench self_hosting: clients did not finish in time")
        origin = sent_bytes(provider) - before
    total = args.clients * args.size_mib << 20
    times = [done[i] - started[i] for i in range(args.clients)]
    return {
        "mirrors": mirrors,
        "origin_bytes": origin,
        "origin_share": round(origin / total, 3),
        "all_done_s": round(max(done.values()) - t0, 1),
        "client_median_s": round(statistics.median(times), 1),
        "client_max_s": round(max(times), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--mirrors", type=int, default=4)
    parser.add_argument("--size-mib", type=int, default=100)
    parser.add_argument("--uplink-mbit", type=int, default=160)
    parser.add_argument("--stagger", type=float, default=3.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = []
    for mirrors in (0, args.mirrors):
        with tempfile.TemporaryDirectory(prefix="bench-self-hosting.") as tmp:
            results.append(one_lab(args, mirrors, Path(tmp)))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{args.clients} clients x {args.size_mib} MiB, uplinks {args.uplink_mbit} Mbit/s, "
          f"one client every {args.stagger:g} s")  # fmt: skip
    print("| mirrors | origin served | all done | client median | client max |")
    print("|---|---|---|---|---|")
    for r in results:
        origin = f"{r['origin_bytes'] / 2**20:.0f} MiB ({r['origin_share']:.0%})"
        times = f"{r['all_done_s']} s | {r['client_median_s']} s | {r['client_max_s']} s"
        print(f"| {r['mirrors']} | {origin} | {times} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
