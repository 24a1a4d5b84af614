#!/usr/bin/env python3
"""plasmd serve vs nginx on the same directory, measured in the same run, as ratios.

For each client count (default 8 and 64) every client is a ``curl`` process downloading the
whole artifact at once; aggregate throughput = clients x size / wall time of the batch. Runs
alternate between the servers and the median is reported. Also: requests/s on ``/health``
(keep-alive, curl --parallel) and the provider's memory (RSS) under the heaviest load.

Everything listens on 127.0.0.1 with ports picked at run time; nginx runs in the foreground
with its own temporary configuration. Needs curl and nginx (scripts/apt-packages.txt).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ARTIFACT = "stable/x86_64/vmlinuz"

NGINX_CONF = """daemon off;
master_process on;
worker_processes auto;
pid {tmp}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 30s;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    types {{ application/json json; }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location = /health {{ default_type application/json; return 200 '{{"status":"ok"}}'; }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as response:
            if response.status == 200:
                return
        time.sleep(0.1)
    raise SystemExit(f"bench: {url} did not answer within {timeout} s")


def make_artifact(root: Path, size: int) -> None:
    path = root / ARTIFACT
    path.parent.mkdir(parents=True, exist_ok=True)
    block = os.urandom(1 << 20)
    with open(path, "wb") as handle:
        for _ in range(size >> 20):
            handle.write(block)
        handle.write(block[: size & ((1 << 20) - 1)])


@contextlib.contextmanager
def server_process(
    command: list[str], port: int, log_path: Path, stop_signal: int
) -> Iterator[tuple[str, int]]:
    """Run a server until the block ends; yields its base URL and pid once /health answers."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, cwd=REPO, stderr=log, stdout=subprocess.DEVNULL)
        try:
            wait_http(f"http://127.0.0.1:{port}/health")
            yield f"http://127.0.0.1:{port}", proc.pid
        finally:
            proc.send_signal(stop_signal)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def plasmd(root: Path, tmp: Path) -> contextlib.AbstractContextManager[tuple[str, int]]:
    port = free_port()
    args = [sys.executable, "-m", "phase_client", "plasmd", "serve", "--artifacts", str(root)]
    args += ["--state-dir", str(tmp / "plasmd-state"), "--bind", "127.0.0.1", "--port", str(port)]
    args += ["--no-mdns", "--no-dht"]
    return server_process(args, port, tmp / "plasmd.log", signal.SIGTERM)


def nginx(root: Path, tmp: Path) -> contextlib.AbstractContextManager[tuple[str, int]]:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, port=port, root=root))
    args = [binary, "-p", str(tmp), "-c", str(conf), "-e", "stderr"]
    return server_process(args, port, tmp / "nginx.log", signal.SIGQUIT)  # QUIT: graceful


def download_batch(url: str, clients: int, size: int, timeout: float) -> float:
    """Aggregate bytes/s of ``clients`` concurrent curl downloads of the whole artifact."""
    command = ["curl", "-sS", "--fail", "--noproxy", "*", "-o", "/dev/null"]
    command += ["-w", "%{size_download}\n", "--max-time", str(int(timeout)), f"{url}/{ARTIFACT}"]
    start = time.monotonic()
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE) for _ in range(clients)]
    sizes = []
    for proc in procs:
        out, _ = proc.communicate(timeout=timeout + 30)
        if proc.returncode != 0:
            raise SystemExit(f"bench: curl failed ({proc.returncode}) against {url}")
        sizes.append(int(out.split()[0]))
    elapsed = time.monotonic() - start
    if any(s != size for s in sizes):
        raise SystemExit(f"bench: short download from {url}: {sorted(set(sizes))}")
    return clients * size / elapsed


def health_rps(url: str, requests: int, processes: int) -> float:
    """Requests/s on /health: ``processes`` curl processes, 8 keep-alive connections each."""
    per_process = max(1, requests // processes)
    command = ["curl", "-sS", "--fail", "--noproxy", "*", "--parallel", "--parallel-max", "8"]
    command += [f"{url}/health?n=[1-{per_process}]"]
    start = time.monotonic()
    procs = [
        subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(processes)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise SystemExit(f"bench: curl /health failed against {url}: {err.decode()[:200]}")
    return per_process * processes / (time.monotonic() - start)


class MemorySampler:
    """Peak RSS (KiB) of a process tree root while the load runs, sampled from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = 0
        self.threads_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                text = Path(f"/proc/{self.pid}/status").read_text()
            except OSError:
                return
            rss = re.search(r"^VmRSS:\s+(\d+)", text, re.M)
            threads = re.search(r"^Threads:\s+(\d+)", text, re.M)
            if rss:
                self.peak_kib = max(self.peak_kib, int(rss.group(1)))
            if threads:
                self.threads_peak = max(self.threads_peak, int(threads.group(1)))

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        model = match.group(1) if match else model
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def median_of(runs: int, measure: Callable[[], float]) -> tuple[float, list[float]]:
    values = [measure() for _ in range(runs)]
    return statistics.median(values), values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256, help="artifact size (default 256)")
    parser.add_argument("--clients", default="8,64", help="client counts (default 8,64)")
    parser.add_argument("--runs", type=int, default=3, help="runs per setting (median; default 3)")
    parser.add_argument("--health-requests", type=int, default=20000)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    for tool in ("curl", "nginx"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            print(f"bench: {tool} is not installed (scripts/install-deps)", file=sys.stderr)
            return 2
    size = args.size_mib << 20
    counts = [int(c) for c in args.clients.split(",")]
    timeout = max(120.0, size * max(counts) / 50e6)  # even at 50 MB/s the batch fits
    results: dict[str, object] = {"machine": machine(), "size_mib": args.size_mib}
    with tempfile.TemporaryDirectory(prefix="bench-provider-") as tmp_text:
        tmp = Path(tmp_text)
        tmp.chmod(0o755)  # nginx workers run as an unprivileged user and must read the files
        root = tmp / "art"
        make_artifact(root, size)
        (tmp / "nginx").mkdir()
        with plasmd(root, tmp) as (p_url, p_pid), nginx(root, tmp / "nginx") as (n_url, _):
            # Warm the page cache and the provider's hash cache once.
            download_batch(p_url, 1, size, timeout)
            download_batch(n_url, 1, size, timeout)
            throughput = {}
            peak_kib, peak_threads = 0, 0
            for clients in counts:
                p_values, n_values = [], []
                for _ in range(args.runs):  # alternate so drift hits both alike
                    with MemorySampler(p_pid) as sampler:
                        p_values.append(download_batch(p_url, clients, size, timeout))
                    peak_kib = max(peak_kib, sampler.peak_kib)
                    peak_threads = max(peak_threads, sampler.threads_peak)
                    n_values.append(download_batch(n_url, clients, size, timeout))
                p_med, n_med = statistics.median(p_values), statistics.median(n_values)
                throughput[clients] = {
                    "plasmd_MBps": round(p_med / 1e6, 1),
                    "nginx_MBps": round(n_med / 1e6, 1),
                    "ratio": round(p_med / n_med, 3),
                    "plasmd_runs_MBps": [round(v / 1e6, 1) for v in p_values],
                    "nginx_runs_MBps": [round(v / 1e6, 1) for v in n_values],
                }
            p_rps, p_runs = median_of(args.runs, lambda: health_rps(p_url, args.health_requests, 4))
            n_rps, n_runs = median_of(args.runs, lambda: health_rps(n_url, args.health_requests, 4))
    results["throughput"] = throughput
    results["health"] = {
        "plasmd_rps": round(p_rps),
        "nginx_rps": round(n_rps),
        "ratio": round(p_rps / n_rps, 3),
        "plasmd_runs": [round(v) for v in p_runs],
        "nginx_runs": [round(v) for v in n_runs],
    }
    results["plasmd_peak_rss_mib"] = round(peak_kib / 1024, 1)
    results["plasmd_peak_threads"] = peak_threads
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"machine: {results['machine']}")
    print(f"artifact {args.size_mib} MiB, median of {args.runs} runs\n")
    print("| clients | plasmd MB/s | nginx MB/s | ratio |")
    print("|---|---|---|---|")
    for clients, row in throughput.items():
        print(f"| {clients} | {row['plasmd_MBps']} | {row['nginx_MBps']} | {row['ratio']} |")
    health = results["health"]
    assert isinstance(health, dict)
    print(f"\n/health: plasmd {health['plasmd_rps']} req/s, nginx {health['nginx_rps']} req/s,")
    print(f"ratio {health['ratio']}")
    print(f"plasmd peak RSS {results['plasmd_peak_rss_mib']} MiB, {peak_threads} threads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
