#!/usr/bin/env python3
"""Benchmark phase-fetch against curl, curl + sha256sum and aria2c on loopback, same run.

Part 1: one artifact (default 1 GiB) served by nginx on 127.0.0.1 (port picked at run time),
written to a tmpfs directory (the initramfs is RAM-only). Each round runs every tool once, in a
rotating order; medians over the rounds, ratios against ``curl -o`` and peak RSS (wait4).

Part 2: load distribution. Two providers (tests/fetch_servers.FileServer, each with an uplink
limited to X MiB/s for all its connections together) serve the same signed manifest; phase-fetch
with one provider vs with both. Goal: both together well over X.

Part 3: boot sizes (issue 21), where start-up dominates: a 26 MiB kernel and a 4 MiB initramfs
from nginx, fetched and verified by phase-fetch run as the boot runs it (``python3 -S -I
phase.pyz fetch``: the zipapp, the system Python) against the peer doing the same work minus the
signature, ``curl -o`` of both then ``sha256sum`` of both. Medians and same-round ratios.

Usage: bench/fetch/run.py [--size-mib 1024] [--rounds 5] [--rate-mib 20] [--multi-mib 128]
       [--boot-rounds 15] [--pyz build/phase.pyz] [--skip-single] [--skip-multi]
       [--skip-boot] [--workdir DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from phase_client.keys import SigningKey  # noqa: E402
from phase_client.manifest import dump_document  # noqa: E402
from phase_client.provider.signer import generate  # noqa: E402
from tests.fetch_servers import FileServer, publish, signed_manifest  # noqa: E402

MiB = 1024 * 1024
NGINX_CONF = """worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 64; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path {work}/tmp;
  proxy_temp_path {work}/tmp;
  fastcgi_temp_path {work}/tmp;
  uwsgi_temp_path {work}/tmp;
  scgi_temp_path {work}/tmp;
  server {{ listen 127.0.0.1:{port}; root {work}/www; }}
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nginx did not listen on 127.0.0.1:{port} within {timeout}s")


def timed(commands: list[list[str]], work: Path) -> tuple[float, int]:
    """Run commands one after the other (stop at a failure); wall seconds, peak RSS in KiB.

    RSS comes from GNU time: a child forked from this (large) Python process would report the
    parent's RSS at fork time as its own peak.
    """
    peak = 0
    rss_file = work / "rss.txt"
    started = time.perf_counter()
    for argv in commands:
        proc = subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *argv],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=False,
        )
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip()[:300]
            raise SystemExit(f"{argv[0]} failed ({proc.returncode}): {err}")
        peak = max(peak, int(rss_file.read_text().split()[-1]))
    return time.perf_counter() - started, peak


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "loadavg_at_start": os.getloadavg()[0],
    }


def make_artifact(path: Path, size: int) -> str:
    hasher = hashlib.sha256()
    with open(path, "wb") as handle:
        left = size
        while left:
            block = os.urandom(min(4 * MiB, left))
            handle.write(block)
            hasher.update(block)
            left -= len(block)
    return hasher.hexdigest()


def start_nginx(work: Path) -> tuple[subprocess.Popen[bytes], int]:
    """nginx serving ``work``/www on a free loopback port (``work``/tmp must exist)."""
    port = free_port()
    (work / "nginx.conf").write_text(NGINX_CONF.format(work=work, port=port))
    nginx = subprocess.Popen(
        ["nginx", "-c", str(work / "nginx.conf"), "-p", str(work)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
    except BaseException:
        nginx.terminate()
        nginx.wait(timeout=20)
        raise
    return nginx, port


def single_source(args: argparse.Namespace, work: Path, key: SigningKey) -> dict[str, Any]:
    www = work / "www" / "stable" / "x86_64"
    www.mkdir(parents=True)
    (work / "tmp").mkdir(exist_ok=True)
    print(f"creating a {args.size_mib} MiB artifact in {www} ...", flush=True)
    digest = make_artifact(www / "vmlinuz", args.size_mib * MiB)
    document = generate(artifacts_dir=work / "www", channel="stable", arch="x86_64", key=key)
    (www / "manifest.json").write_bytes(dump_document(document))
    nginx, port = start_nginx(work)
    try:
        base = f"http://127.0.0.1:{port}/stable/x86_64/"
        out = work / "out"
        target = out / "vmlinuz"
        tools: dict[str, list[list[str]]] = {
            "curl -o": [["curl", "-sS", "-o", str(target), base + "vmlinuz"]],
            "curl -o && sha256sum": [
                ["curl", "-sS", "-o", str(target), base + "vmlinuz"],
                ["sha256sum", str(target)],
            ],
            "aria2c --checksum": [
                [
                    *("aria2c", "-q", "--allow-overwrite=true", "--file-allocation=none"),
                    *("--auto-file-renaming=false", f"--checksum=sha-256={digest}"),
                    *("-d", str(out), "-o", "vmlinuz", base + "vmlinuz"),
                ]
            ],
            "phase-fetch": [
                [
                    *(sys.executable, "-m", "phase_client", "fetch", "--quiet"),
                    *("--manifest", base + "manifest.json", "--key", key.public.keyid),
                    *("--output", str(out)),
                ]
            ],
        }
        if not shutil.which("aria2c"):
            print("aria2c not installed (Debian package aria2): skipped", flush=True)
            del tools["aria2c --checksum"]
        names = list(tools)
        samples: dict[str, list[tuple[float, int]]] = {name: [] for name in names}
        for round_no in range(args.rounds):
            order = names[round_no % len(names) :] + names[: round_no % len(names)]
            for name in order:
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir()
                samples[name].append(timed(tools[name], work))
                produced = out / ("kernel" if name == "phase-fetch" else "vmlinuz")
                if produced.stat().st_size != args.size_mib * MiB:
                    raise SystemExit(f"{name} produced a file of the wrong size")
            print(f"round {round_no + 1}/{args.rounds} done", flush=True)
        shutil.rmtree(out, ignore_errors=True)
    finally:
        nginx.terminate()
        nginx.wait(timeout=20)
    results: dict[str, Any] = {}
    curl_median = statistics.median(s for s, _ in samples["curl -o"])
    for name in names:
        seconds = [s for s, _ in samples[name]]
        median = statistics.median(seconds)
        results[name] = {
            "median_s": round(median, 3),
            "min_s": round(min(seconds), 3),
            "max_s": round(max(seconds), 3),
            "ratio_vs_curl": round(median / curl_median, 2),
            # Same-round ratios: load from other processes drifts over a run; a pair of
            # neighbouring runs sees about the same load.
            "paired_ratio_median": round(
                statistics.median(
                    a / b for (a, _), (b, _) in zip(samples[name], samples["curl -o"], strict=True)
                ),
                2,
            ),
            "mb_per_s": round(args.size_mib * MiB / median / 1e6, 1),
            "peak_rss_mib": round(max(r for _, r in samples[name]) / 1024, 1),
            "samples_s": [round(s, 3) for s in seconds],
        }
    return results


BOOT_SIZES = {"vmlinuz": 26 * MiB, "initramfs.img": 4 * MiB}


def boot_sizes(args: argparse.Namespace, work: Path, key: SigningKey) -> dict[str, Any]:
    """Part 3 (module docstring): phase-fetch from the zipapp vs curl -o + sha256sum."""
    www = work / "www" / "boot" / "x86_64"
    www.mkdir(parents=True)
    (work / "tmp").mkdir(exist_ok=True)
    for name, size in BOOT_SIZES.items():
        make_artifact(www / name, size)
    document = generate(artifacts_dir=work / "www", channel="boot", arch="x86_64", key=key)
    (www / "manifest.json").write_bytes(dump_document(document))
    nginx, port = start_nginx(work)
    env_root = work / "pyz-root"  # the zipapp's native part, unpacked by the warm-up round
    try:
        base = f"http://127.0.0.1:{port}/boot/x86_64/"
        out = work / "boot-out"
        fetch = [
            *("env", f"PHASE_PYZ_ROOT={env_root}", args.python, "-S", "-I", args.pyz),
            *("fetch", "--quiet", "--manifest", base + "manifest.json"),
            *("--key", key.public.keyid, "--channel", "boot", "--arch", "x86_64"),
            *("--output", str(out)),
        ]
        peer = [["curl", "-sS", "-o", str(out / name), base + name] for name in BOOT_SIZES]
        peer.append(["sha256sum", *(str(out / name) for name in BOOT_SIZES)])
        tools = {"curl -o + sha256sum": peer, "phase-fetch (zipapp)": [fetch]}
        samples: dict[str, list[tuple[float, int]]] = {name: [] for name in tools}
        names = list(tools)
        for round_no in range(args.boot_rounds + 1):  # round 0 warms caches, unpacks PyNaCl
            for name in names if round_no % 2 else names[::-1]:
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir()
                sample = timed(tools[name], work)
                if round_no:
                    samples[name].append(sample)
        shutil.rmtree(out, ignore_errors=True)
    finally:
        nginx.terminate()
        nginx.wait(timeout=20)
    peer_s = [s for s, _ in samples["curl -o + sha256sum"]]
    results: dict[str, Any] = {"sizes_mib": {n: s // MiB for n, s in BOOT_SIZES.items()}}
    for name in names:
        seconds = [s for s, _ in samples[name]]
        results[name] = {
            "median_ms": round(1000 * statistics.median(seconds), 1),
            "min_ms": round(1000 * min(seconds), 1),
            "paired_ratio_median": round(
                statistics.median(a / b for a, b in zip(seconds, peer_s, strict=True)), 2
            ),
            "peak_rss_mib": round(max(r for _, r in samples[name]) / 1024, 1),
        }
    return results


def multi_source(args: argparse.Namespace, work: Path, key: SigningKey) -> dict[str, Any]:
    size = args.multi_mib * MiB
    data = os.urandom(size)
    arts = {"kernel": data}
    document = signed_manifest(key, arts)
    rate = args.rate_mib * MiB
    results: dict[str, Any] = {"rate_limit_mib_s": args.rate_mib, "size_mib": args.multi_mib}
    with FileServer(rate=rate) as one, FileServer(rate=rate) as two:
        urls = [publish(one, document, arts), publish(two, document, arts)]
        for label, manifests in (("one provider", urls[:1]), ("two providers", urls)):
            out = work / "multi-out"
            shutil.rmtree(out, ignore_errors=True)
            argv = [sys.executable, "-m", "phase_client", "fetch", "--quiet"]
            for url in manifests:
                argv += ["--manifest", url]
            argv += ["--key", key.public.keyid, "--output", str(out)]
            before = (one.served("/stable/x86_64/vmlinuz"), two.served("/stable/x86_64/vmlinuz"))
            seconds, rss = timed([argv], work)
            after = (one.served("/stable/x86_64/vmlinuz"), two.served("/stable/x86_64/vmlinuz"))
            shares = [a - b for a, b in zip(after, before, strict=True)]
            results[label] = {
                "seconds": round(seconds, 2),
                "mib_per_s": round(size / seconds / MiB, 1),
                "x_rate_limit": round(size / seconds / rate, 2),
                "served_mib": [round(s / MiB, 1) for s in shares],
                "peak_rss_mib": round(rss / 1024, 1),
            }
            print(f"{label}: {results[label]}", flush=True)
            shutil.rmtree(out, ignore_errors=True)
    return results


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"Machine: {m['nproc']} cores, {m['cpu']}, Python {m['python']}, kernel {m['kernel']}, "
        f"{m['date']}, load average at start {m['loadavg_at_start']:.2f}.",
        "",
    ]
    if "single" in report:
        s = report["single"]
        lines += [
            f"### {report['size_mib']} MiB from nginx on loopback to tmpfs, "
            f"{report['rounds']} rounds (medians)",
            "",
            "| tool | median s | min-max s | vs curl -o (medians) | vs curl -o (same-round "
            "pairs, median) | MB/s | peak RSS MiB |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, r in s.items():
            lines.append(
                f"| {name} | {r['median_s']} | {r['min_s']}-{r['max_s']} | "
                f"{r['ratio_vs_curl']}x | {r['paired_ratio_median']}x | {r['mb_per_s']} | "
                f"{r['peak_rss_mib']} |"
            )
        lines.append("")
    if "multi" in report:
        mu = report["multi"]
        lines += [
            f"### Two providers, each limited to {mu['rate_limit_mib_s']} MiB/s, "
            f"{mu['size_mib']} MiB artifact",
            "",
            "| providers | seconds | MiB/s | x one provider's limit | MiB served by each |",
            "|---|---|---|---|---|",
        ]
        for label in ("one provider", "two providers"):
            r = mu[label]
            lines.append(
                f"| {label} | {r['seconds']} | {r['mib_per_s']} | {r['x_rate_limit']} | "
                f"{' + '.join(str(x) for x in r['served_mib'])} |"
            )
    if "boot" in report:
        b = report["boot"]
        lines += [
            "",
            f"### Boot sizes: {b['sizes_mib']['vmlinuz']} MiB kernel + "
            f"{b['sizes_mib']['initramfs.img']} MiB initramfs from nginx, "
            f"{report['boot_rounds']} rounds",
            "",
            "| tool | median ms | min ms | vs curl -o + sha256sum (same-round pairs, median) "
            "| peak RSS MiB |",
            "|---|---|---|---|---|",
        ]
        for name in ("curl -o + sha256sum", "phase-fetch (zipapp)"):
            r = b[name]
            lines.append(
                f"| {name} | {r['median_ms']} | {r['min_ms']} | {r['paired_ratio_median']}x | "
                f"{r['peak_rss_mib']} |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rate-mib", type=int, default=20)
    parser.add_argument("--multi-mib", type=int, default=128)
    parser.add_argument("--skip-single", action="store_true")
    parser.add_argument("--skip-multi", action="store_true")
    parser.add_argument("--skip-boot", action="store_true")
    parser.add_argument("--boot-rounds", type=int, default=15)
    parser.add_argument("--pyz", default=str(REPO / "build" / "phase.pyz"), help="for part 3")
    parser.add_argument("--python", default="/usr/bin/python3", help="runs the zipapp (part 3)")
    parser.add_argument("--workdir", help="default: a new directory in /dev/shm (tmpfs)")
    parser.add_argument("--json", help="also write the results as JSON here")
    args = parser.parse_args()
    for tool in ("nginx", "curl", "sha256sum", "/usr/bin/time"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed (scripts/install-deps)")
    parent = args.workdir or ("/dev/shm" if os.path.isdir("/dev/shm") else None)
    work = Path(tempfile.mkdtemp(prefix="bench-fetch-", dir=parent))
    os.chmod(work, 0o755)  # nginx workers run as nobody
    key = SigningKey.generate()
    report: dict[str, Any] = {
        "machine": machine(),
        "size_mib": args.size_mib,
        "rounds": args.rounds,
        "boot_rounds": args.boot_rounds,
    }
    try:
        if not args.skip_single:
            report["single"] = single_source(args, work, key)
        if not args.skip_multi:
            report["multi"] = multi_source(args, work, key)
        if not args.skip_boot:
            if not Path(args.pyz).is_file():
                raise SystemExit(f"{args.pyz} is missing: make zipapp (or --skip-boot)")
            report["boot"] = boot_sizes(args, work, key)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = markdown(report)
    sys.stdout.write("\n" + text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
