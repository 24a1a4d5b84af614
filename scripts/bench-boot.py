#!/usr/bin/env python3
"""Measure the boot side: zipapp and initramfs sizes, phase-verify cold start from the zipapp
against a bare interpreter start measured in the same run, and (given a serial log of the QEMU
e2e) the boot timeline. With --chain: the boot's own work on loopback (a 14 MB kernel and a 1 MB
initramfs served over HTTP), fetched, verified and staged by phase-boot in one process, by the
two processes it replaces (phase-fetch, then kexec-boot's phase-verify --stage-into), and by the
peer doing the same work minus the signature (curl -o of both files, sha256sum of both, cp of
both), interleaved, medians. Results go to docs/bench-boot.md by hand.

    scripts/bench-boot.py [--pyz build/phase.pyz] [--initramfs build/initramfs.cpio.zst]
                          [--python /usr/bin/python3] [--runs 21] [--serial LOG] [--chain]
                          [--json]
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, timeout=120)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"bench-boot: {argv} failed: {result.stderr.decode().strip()}")
    return elapsed


def median_ms(argv: list[str], env: dict[str, str], runs: int) -> float:
    timed(argv, env)  # page cache and the native extraction are warm from here on
    return 1000 * statistics.median(timed(argv, env) for _ in range(runs))


def signed_manifest(directory: Path) -> tuple[Path, str]:
    from phase_client.keys import SigningKey
    from phase_client.manifest import build_document, dump_document, sign_document

    key = SigningKey.from_seed(b"\x42" * 32)
    now = int(time.time())
    document = build_document(
        version="bench",
        sequence=1,
        channel="stable",
        arch="x86_64",
        created_at=now - 60,
        expires_at=now + 3600,
        artifacts={"kernel": {"hash": "sha256:" + "ab" * 32, "size": 1, "path": "vmlinuz"}},
    )
    path = directory / "manifest.json"
    path.write_bytes(dump_document(sign_document(document, key)))
    return path, key.public.keyid


def serve(directory: Path) -> tuple[str, object]:
    """A static HTTP server on 127.0.0.1 (a thread) for ``directory``: (base URL, server)."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


def chain(pyz: str, python: str, runs: int) -> dict[str, object]:
    """The boot's fetch + verify + stage on loopback: phase-boot vs the old two processes vs
    curl + sha256sum + cp (module docstring). Seconds, medians of ``runs`` interleaved rounds."""
    import hashlib
    import random
    import shutil

    from phase_client.keys import SigningKey
    from phase_client.manifest import build_document, dump_document, sign_document

    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        combo = work / "srv" / "stable" / "x86_64"
        combo.mkdir(parents=True)
        files = {"kernel": ("vmlinuz", 14_186_432), "initramfs": ("initramfs.img", 1_048_576)}
        artifacts = {}
        rng = random.Random(7)
        for name, (path, size) in files.items():
            data = rng.randbytes(size)
            (combo / path).write_bytes(data)
            digest = hashlib.sha256(data).hexdigest()
            artifacts[name] = {"hash": f"sha256:{digest}", "size": size, "path": path}
        key = SigningKey.from_seed(b"\x42" * 32)
        now = int(time.time())
        document = build_document(
            version="bench",
            sequence=1,
            channel="stable",
            arch="x86_64",
            created_at=now - 60,
            expires_at=now + 3600,
            artifacts=artifacts,
            cmdline="console=ttyS0",
        )
        (combo / "manifest.json").write_bytes(dump_document(sign_document(document, key)))
        base, server = serve(work / "srv")
        url = f"{base}/stable/x86_64/manifest.json"
        keyid = key.public.keyid
        env = {"PATH": "/usr/bin:/bin", "PHASE_PYZ_ROOT": str(work / "root")}
        out, stage = work / "out", work / "stage"
        tool = [python, "-S", "-I", pyz]
        trust = ["--key", keyid, "--channel", "stable", "--arch", "x86_64"]
        boot_stage = ["--stage-into", str(stage), "--consume", "--stage-only", "-q"]
        verify_stage = ["--check-dir", str(out), "--stage-into", str(stage), "--consume", "-q"]
        commands = {
            "phase_boot": [[*tool, "boot", "--manifest", url, *trust, "-o", str(out), *boot_stage]],
            "fetch_then_verify": [
                [*tool, "fetch", "--manifest", url, *trust, "-o", str(out), "-q"],
                [*tool, "verify", str(out / "manifest.json"), *trust, *verify_stage],
            ],
            "curl_sha256sum_cp": [
                ["curl", "-sf", "-o", str(out / "kernel"), f"{base}/stable/x86_64/vmlinuz"],
                [
                    "curl",
                    "-sf",
                    "-o",
                    str(out / "initramfs"),
                    f"{base}/stable/x86_64/initramfs.img",
                ],
                ["sha256sum", str(out / "kernel"), str(out / "initramfs")],
                ["cp", str(out / "kernel"), str(out / "initramfs"), str(stage)],
            ],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for round_ in range(runs + 1):  # round 0 warms the page cache and the native part
            order = list(commands)
            random.Random(round_).shuffle(order)
            for name in order:
                shutil.rmtree(out, ignore_errors=True)
                shutil.rmtree(stage, ignore_errors=True)
                out.mkdir()
                if name == "curl_sha256sum_cp":
                    stage.mkdir()
                elapsed = sum(timed(argv, env) for argv in commands[name])
                if round_:
                    times[name].append(elapsed)
        server.shutdown()  # type: ignore[attr-defined]
        for name, values in times.items():
            results[f"{name}_ms"] = round(1000 * statistics.median(values), 1)
        peer = float(results["curl_sha256sum_cp_ms"])  # type: ignore[arg-type]
        for name in ("phase_boot", "fetch_then_verify"):
            results[f"{name}_vs_peer"] = round(float(results[f"{name}_ms"]) / peer, 2)  # type: ignore[arg-type]
    return results


def timeline(serial: Path) -> dict[str, float]:
    """Seconds since power-on of stage 1's kernel for the milestones in an e2e serial log."""
    text = serial.read_text(errors="replace")
    marks = {
        "init started": r"\[\s*([\d.]+)\] Run /init as init process",
        # The first of the DHCP lease and the link (phase-boot may boot from the link first).
        "network up": r"\[\s*([\d.]+)\] phase: (?:network|link) up",
        "DHCP lease": r"\[\s*([\d.]+)\] phase: network up",
        "discovered": r"\[\s*([\d.]+)\] phase: discovered ",
        "fetching": r"\[\s*([\d.]+)\] phase: fetching ",
        "fetched and verified": r"\[\s*([\d.]+)\] phase: manifest verified",
        "staged": r"\[\s*([\d.]+)\] phase: VERIFIED ",
        "kexec starts": r"\[\s*([\d.]+)\] phase: kexec: booting",
        "kexec_core: Starting new kernel": r"\[\s*([\d.]+)\] kexec_core: Starting new kernel",
    }
    found = {}
    for name, pattern in marks.items():
        match = re.search(pattern, text)
        if match:
            found[name] = float(match.group(1))
    # phase-boot's start-up (--start-when): said once the network is up, with how long before.
    loaded = re.search(
        r"\[\s*([\d.]+)\] phase: loaded: .*?(?:, ([\d.]+) s before|\(the network)", text
    )
    if loaded:
        found["modules imported"] = round(float(loaded.group(1)) - float(loaded.group(2) or 0), 2)
    stage2 = re.search(r"PHASE-STAGE2-OK .*uptime=([\d.]+)", text)
    if stage2:
        found["stage-2 init (its own uptime)"] = float(stage2.group(1))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench-boot.py", description=__doc__.splitlines()[0])
    parser.add_argument("--pyz", default=str(REPO / "build" / "phase.pyz"))
    parser.add_argument("--initramfs", default=str(REPO / "build" / "initramfs.cpio.zst"))
    parser.add_argument("--python", default="/usr/bin/python3", help="interpreter to time")
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--serial", help="serial log of an e2e boot, for the timeline")
    parser.add_argument(
        "--chain", action="store_true", help="also time fetch + verify + stage on loopback"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    results: dict[str, object] = {}
    for name in ("pyz", "initramfs"):
        path = Path(getattr(args, name))
        if path.exists():
            results[f"{name}_bytes"] = path.stat().st_size
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        manifest, keyid = signed_manifest(work)
        env = {"PATH": "/usr/bin:/bin", "PHASE_PYZ_ROOT": str(work / "root")}
        verify = [args.python, "-S", "-I", args.pyz, "verify", str(manifest), "--key", keyid]
        first = timed(verify, env)  # includes unpacking the native part
        results["verify_first_run_ms"] = round(1000 * first, 1)
        results["verify_ms"] = round(median_ms(verify, env, args.runs), 1)
        help_argv = [args.python, "-S", "-I", args.pyz, "verify", "--help"]
        results["verify_help_ms"] = round(median_ms(help_argv, env, args.runs), 1)
        peer = [args.python, "-S", "-I", "-c", "pass"]
        results["python_bare_start_ms"] = round(median_ms(peer, env, args.runs), 1)
        results["verify_vs_bare_python"] = round(
            float(results["verify_ms"]) / float(results["python_bare_start_ms"]),
            2,  # type: ignore[arg-type]
        )
        source = work / "source.pyz"
        subprocess.run(
            [
                sys.executable,
                str(REPO / "scripts" / "build-zipapp.py"),
                "--source",
                "-o",
                str(source),
            ],
            check=True,
            capture_output=True,
        )
        verify_src = [args.python, "-S", "-I", str(source), *verify[4:]]
        results["verify_from_source_zip_ms"] = round(median_ms(verify_src, env, args.runs), 1)
    if args.serial:
        results["timeline_s"] = timeline(Path(args.serial))
    if args.chain:
        results["chain"] = chain(args.pyz, args.python, args.runs)
    results["machine"] = {
        "nproc": os.cpu_count(),
        "cpu": next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            "?",
        ),
        "python": subprocess.run(
            [args.python, "-c", "import sys; print(sys.version.split()[0])"],
            capture_output=True,
            text=True,
        ).stdout.strip(),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
    }
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, value in results.items():
            print(f"{name}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
