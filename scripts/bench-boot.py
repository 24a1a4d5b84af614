#!/usr/bin/env python3
"""Measure the boot side: zipapp and initramfs sizes, phase-verify cold start from the zipapp
against a bare interpreter start measured in the same run, and (given a serial log of the QEMU
e2e) the boot timeline. Results go to docs/bench-boot.md by hand.

    scripts/bench-boot.py [--pyz build/phase.pyz] [--initramfs build/initramfs.cpio.gz]
                          [--python /usr/bin/python3] [--runs 21] [--serial LOG] [--json]
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


def timeline(serial: Path) -> dict[str, float]:
    """Seconds since power-on of stage 1's kernel for the milestones in an e2e serial log."""
    text = serial.read_text(errors="replace")
    marks = {
        "init started": r"\[\s*([\d.]+)\] Run /init as init process",
        "network up": r"\[\s*([\d.]+)\] phase: network up",
        "fetched and verified": r"\[\s*([\d.]+)\] phase: manifest verified",
        "kexec starts": r"\[\s*([\d.]+)\] phase: kexec: booting",
    }
    found = {}
    for name, pattern in marks.items():
        match = re.search(pattern, text)
        if match:
            found[name] = float(match.group(1))
    stage2 = re.search(r"PHASE-STAGE2-OK .*uptime=([\d.]+)", text)
    if stage2:
        found["stage-2 init (its own uptime)"] = float(stage2.group(1))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench-boot.py", description=__doc__.splitlines()[0])
    parser.add_argument("--pyz", default=str(REPO / "build" / "phase.pyz"))
    parser.add_argument("--initramfs", default=str(REPO / "build" / "initramfs.cpio.gz"))
    parser.add_argument("--python", default="/usr/bin/python3", help="interpreter to time")
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--serial", help="serial log of an e2e boot, for the timeline")
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
