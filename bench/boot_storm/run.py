#!/usr/bin/env python3
"""Boot storm: many machines booting at once from one ``plasmd serve``, against nginx serving the
same files in the same run.

Every simulated client does what a booting machine does, on one keep-alive connection: a HEAD
probe of the manifest (discovery's liveness probe), a GET of the manifest, then GETs of the
kernel and the initramfs (default 26 MiB + 4 MiB, random bytes). ``--clients`` of them (default
500) start at once. The load generator is one asyncio process with a minimal HTTP/1.1 client
(the same for both servers); every response's
status and length are checked, and a client that gets a 503, a short body or an error counts as
failed. Reported per server: time until every client is done, client median and p95, failed
clients, and the server's peak threads, peak RSS and CPU seconds (from /proc) during the storm.
Runs alternate between the servers (``--runs``, median reported).

    python3 bench/boot_storm/run.py [--clients 500] [--runs 3] [--kernel-mib 26] [--initrd-mib 4]

Everything listens on 127.0.0.1 with ports picked at run time. Needs nginx (apt-packages.txt).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.provider_throughput.run import machine, nginx, plasmd

PATHS = ("stable/x86_64/manifest.json", "stable/x86_64/vmlinuz", "stable/x86_64/initramfs.img")
CLIENT_TIMEOUT = 600.0
CHUNK = 1 << 20

GENERATOR = r"""
import asyncio, json, sys, time
host, port, clients, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
paths = json.loads(sys.argv[5])  # [[method, path, expected length], ...]
CHUNK = 1 << 20

async def request(reader, writer, method, path, expected):
    writer.write(f"{method} /{path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if len(head) > 16384:
        raise ValueError("header too long")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    if status != 200:
        raise ValueError(f"status {status} for {path}")
    length = next(int(l.split(":", 1)[1]) for l in lines if l.lower().startswith("content-length:"))
    if length != expected:
        raise ValueError(f"length {length} != {expected} for {path}")
    if method == "HEAD":
        return
    left = length
    while left:
        got = len(await reader.read(min(left, CHUNK)))
        if not got:
            raise ValueError(f"short body for {path}: {length - left} of {length}")
        left -= got

async def client():
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    try:
        for method, path, expected in paths:
            await request(reader, writer, method, path, expected)
    finally:
        writer.close()
    return time.monotonic() - started

async def main():
    start = time.monotonic()
    tasks = [asyncio.create_task(asyncio.wait_for(client(), timeout)) for _ in range(clients)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    total = time.monotonic() - start
    times = sorted(r for r in results if isinstance(r, float))
    errors = [f"{type(r).__name__}: {r}" for r in results if not isinstance(r, float)]
    print(json.dumps({"total": total, "times": times, "errors": errors[:5], "failed": len(errors)}))

asyncio.run(main())
"""


def write_random(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    block = os.urandom(CHUNK)
    with open(path, "wb") as handle:
        for _ in range(size // CHUNK):
            handle.write(block)
        handle.write(block[: size % CHUNK])


class ProcessSampler:
    """Peak threads and RSS of a server's process tree, and its CPU seconds, from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.threads = 0
        self.rss_kib = 0
        self._cpu_start = self._cpu()

    def _tree(self) -> list[int]:
        pids = [self.pid]
        with contextlib.suppress(OSError):
            for child in Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split():
                pids.append(int(child))
        return pids

    def _cpu(self) -> float:
        ticks = 0
        for pid in self._tree():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])  # utime + stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def sample(self) -> None:
        threads = rss = 0
        for pid in self._tree():
            with contextlib.suppress(OSError):
                text = Path(f"/proc/{pid}/status").read_text()
                found_threads = re.search(r"^Threads:\s+(\d+)", text, re.M)
                found_rss = re.search(r"^VmRSS:\s+(\d+)", text, re.M)
                threads += int(found_threads.group(1)) if found_threads else 0
                rss += int(found_rss.group(1)) if found_rss else 0
        self.threads = max(self.threads, threads)
        self.rss_kib = max(self.rss_kib, rss)

    def cpu_seconds(self) -> float:
        return self._cpu() - self._cpu_start


def storm(base: str, pid: int, clients: int, sizes: dict[str, int]) -> dict[str, Any]:
    host, port = base.removeprefix("http://").rsplit(":", 1)
    plan = [["HEAD", PATHS[0], sizes[PATHS[0]]]] + [["GET", p, sizes[p]] for p in PATHS]
    argv = [sys.executable, "-c", GENERATOR, host, port, str(clients), str(CLIENT_TIMEOUT)]
    sampler = ProcessSampler(pid)
    proc = subprocess.Popen([*argv, json.dumps(plan)], stdout=subprocess.PIPE, text=True)
    while proc.poll() is None:
        sampler.sample()
        time.sleep(0.05)
    out, _ = proc.communicate(timeout=60)
    if proc.returncode != 0:
        raise SystemExit(f"bench: the load generator failed against {base}")
    result: dict[str, Any] = json.loads(out)
    times = result.pop("times")
    result["median"] = statistics.median(times) if times else None
    result["p95"] = times[int(0.95 * (len(times) - 1))] if times else None
    result["threads"] = sampler.threads
    result["rss_mib"] = sampler.rss_kib / 1024
    result["cpu_s"] = sampler.cpu_seconds()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=500, help="clients at once (default 500)")
    parser.add_argument("--runs", type=int, default=3, help="storms per server (default 3)")
    parser.add_argument("--kernel-mib", type=int, default=26)
    parser.add_argument("--initrd-mib", type=int, default=4)
    parser.add_argument("--json", action="store_true", help="print every run as JSON")
    args = parser.parse_args()
    if not 1 <= args.clients <= 2000 or not 1 <= args.runs <= 20:
        parser.error("--clients must be 1..2000 and --runs 1..20")
    if args.kernel_mib < 1 or args.initrd_mib < 1:
        parser.error("--kernel-mib and --initrd-mib must be >= 1")
    with tempfile.TemporaryDirectory(prefix="bench-storm-") as tmp_name:
        tmp = Path(tmp_name)
        tmp.chmod(0o755)  # nginx workers run as an unprivileged user and must read the files
        root = tmp / "artifacts"
        write_random(root / PATHS[1], args.kernel_mib << 20)
        write_random(root / PATHS[2], args.initrd_mib << 20)
        # plasmd signs the manifest of what it finds; nginx serves the same bytes beside the
        # same files (hard links).
        static = tmp / "static"
        (tmp / "plasmd").mkdir()
        with (
            plasmd(root, tmp / "plasmd") as (base, _),
            urllib.request.urlopen(f"{base}/{PATHS[0]}", timeout=30) as response,
        ):
            manifest = response.read()
        (static / PATHS[0]).parent.mkdir(parents=True)
        (static / PATHS[0]).write_bytes(manifest)
        for path in PATHS[1:]:
            os.link(root / path, static / path)
        sizes = {p: (static / p).stat().st_size for p in PATHS}
        roots = {"plasmd": root, "nginx": static}
        runs: dict[str, list[dict[str, Any]]] = {"plasmd": [], "nginx": []}
        for number in range(args.runs):
            for name, server in (("plasmd", plasmd), ("nginx", nginx)):
                (tmp / name).mkdir(exist_ok=True)
                with server(roots[name], tmp / name) as (base, pid):
                    result = storm(base, pid, args.clients, sizes)
                runs[name].append(result)
                print(
                    f"# run {number + 1} {name}: all done in {result['total']:.2f} s, "
                    f"{result['failed']} failed, {result['threads']} threads, "
                    f"{result['rss_mib']:.0f} MiB, {result['cpu_s']:.1f} s CPU",
                    file=sys.stderr,
                    flush=True,
                )
    summary = {
        name: {
            "all_done_s": statistics.median(r["total"] for r in rs),
            "client_median_s": statistics.median(r["median"] or 0 for r in rs),
            "client_p95_s": statistics.median(r["p95"] or 0 for r in rs),
            "failed": sum(r["failed"] for r in rs),
            "threads_peak": max(r["threads"] for r in rs),
            "rss_peak_mib": max(r["rss_mib"] for r in rs),
            "cpu_s": statistics.median(r["cpu_s"] for r in rs),
            "errors": [e for r in rs for e in r["errors"]][:5],
        }
        for name, rs in runs.items()
    }
    ratio = summary["plasmd"]["all_done_s"] / summary["nginx"]["all_done_s"]
    document = {"machine": machine(), "clients": args.clients, "summary": summary, "ratio": ratio}
    if args.json:
        document["runs"] = runs
    print(json.dumps(document, indent=2))
    return 0 if summary["plasmd"]["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
