"""The real OS through the chain under QEMU (TCG): where the time goes from power-on to
``multi-user.target``, and the smallest RAM it boots with.

    sudo python3 bench/os_boot/run.py [--memory 2048,1024,768,...] [--deadline 400] [--json]

For each RAM size, a throw-away namespace LAN (tests/test_boot_lan.py's: busybox udhcpd and
``plasmd serve --artifacts build/os``), and one VM booting our stage-1 initramfs with no
provider given, exactly as tests/test_os_boot_chain.py does. The serial console is polled
every 0.1 s and the host's clock is read when each milestone first shows (so each time is
accurate to ~0.1 s plus the console's own buffering); the VM's own uptime stamps (stage 1's
``[  12.34] phase:`` lines, systemd-analyze) are reported beside them.

A RAM size that does not boot reports the first line that says why (stage 1's memory check,
the image's initramfs, an OOM kill, a panic).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.test_boot_lan import BootLan  # noqa: E402
from tests.test_e2e_qemu import terminate  # noqa: E402

IMAGE = REPO / "build" / "os" / "stable" / "x86_64"
KERNEL_DIR = REPO / "build" / "boot" / "kernel"

# (name, pattern), in the order they appear on the console.
MILESTONES = [
    ("stage 1 init runs", r"Run /init as init process"),
    ("network up (DHCP, or the link first)", r"phase: (?:network|link) up"),
    ("provider discovered (mDNS)", r"phase: discovered "),
    ("image fetched and verified", r"phase: manifest verified, artifacts fetched"),
    ("staged, kexec loaded", r"kexec-boot: kernel loaded; kexec -e"),
    ("stage 2 kernel starts", r"Linux version [\d.]+-\d+-amd64 "),
    ("stage 2 early userspace", r"phase-os: kernel "),
    ("rootfs hash checked", r"phase-os: root filesystem sha256 matches"),
    ("switch_root to systemd", r"phase-os: root filesystem mounted"),
    ("multi-user.target", r"PHASE-OS-TARGET multi-user\.target=active"),
    ("PHASE-OS-UP", r"PHASE-OS-UP .*\n"),
]
FAILURES = re.compile(
    r"(refusing to boot: .*|phase: ERROR .*|phase-os: (?!kernel |root filesystem).*"
    r"|Out of memory: .*|Kernel panic.*|Initramfs unpacking failed.*)"
)


def sh(*argv: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise SystemExit(f"bench os_boot: {argv[0]} failed: {result.stderr.strip()}")


def build(work: Path) -> dict[str, Path]:
    """Stage 1 (Debian's cloud kernel, our initramfs trusting a fresh key) and the OS image."""
    py = sys.executable
    sh(str(REPO / "scripts" / "fetch-kernel.sh"), str(KERNEL_DIR))
    version = (KERNEL_DIR / "version").read_text().strip()
    key = work / "signing.key"
    sh(py, "-m", "phase_client", "plasmd", "keygen", "--out", str(key))
    (work / "keys").mkdir()
    shutil.copy(f"{key}.pub", work / "keys" / "bench.pub")
    sh(py, str(REPO / "scripts" / "build-zipapp.py"), "--output", str(work / "phase.pyz"))
    sh(
        str(REPO / "scripts" / "build-initramfs.sh"),
        *("--modules", str(KERNEL_DIR / "modules" / version)),
        *("--zipapp", str(work / "phase.pyz"), "--keys", str(work / "keys")),
        *("--output", str(work / "initramfs.cpio.zst")),
    )
    sh(
        *(py, "-m", "phase_client", "plasmd", "image", "build", "--quiet"),
        *("--out", str(IMAGE), "--apt-cache", str(IMAGE.parent.parent / ".apt-cache")),
    )
    return {
        "kernel": KERNEL_DIR / "vmlinuz",
        "stage1": work / "initramfs.cpio.zst",
        "key": key,
        "art": IMAGE.parent.parent,
    }


def one_boot(built: dict[str, Path], memory: int, deadline: float, work: Path) -> dict[str, Any]:
    work.mkdir()
    lan = BootLan(work)
    try:
        lan.provider("prov1", built, "--no-dht")
        serial = work / "serial.log"
        started = time.monotonic()
        lan.boot(built, serial, "phase.test=poweroff phase.retries=1", memory=memory)
        assert lan.qemu is not None
        seen: dict[str, float] = {}
        text = ""
        end = started + deadline
        while time.monotonic() < end and lan.qemu.poll() is None:
            text = serial.read_text(errors="replace") if serial.exists() else ""
            for name, pattern in MILESTONES:
                if name not in seen and re.search(pattern, text):
                    seen[name] = time.monotonic() - started
            if "PHASE-OS-UP" in seen or FAILURES.search(text) or "giving up" in text:
                break
            time.sleep(0.1)
    finally:
        if lan.qemu is not None:
            terminate(lan.qemu)
        lan.close()
    up = re.search(r"(?:^|login: )(PHASE-OS-UP .*)$", text, re.M)
    failure = FAILURES.search(text)
    analyze = re.search(r"(?:^|login: )PHASE-OS-TIME (.*)$", text, re.M)
    stamps = re.findall(r"^\[\s*([\d.]+)\] phase: (.*)$", text, re.M)
    return {
        "memory_mib": memory,
        "booted": bool(up and "state=running " in up.group(1)),
        "up_line": up.group(1).strip() if up else None,
        "failure": None if up else (failure.group(0).strip() if failure else "deadline"),
        "milestones_s": {name: round(seen[name], 1) for name, _ in MILESTONES if name in seen},
        "systemd_analyze": analyze.group(1).strip() if analyze else None,
        "stage1_stamps": [(float(t), line) for t, line in stamps],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--memory", default="2048", help="RAM sizes in MiB, comma-separated")
    parser.add_argument("--deadline", type=float, default=400, help="seconds per boot")
    parser.add_argument("--json", action="store_true", help="print every result as JSON")
    args = parser.parse_args()
    sizes = [int(size) for size in args.memory.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-os-boot.") as tmp:
        work = Path(tmp)
        built = build(work)
        results = [one_boot(built, m, args.deadline, work / f"m{m}") for m in sizes]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for result in results:
        print(f"## -m {result['memory_mib']}: {'booted' if result['booted'] else 'FAILED'}")
        print(result["up_line"] or result["failure"])
        previous = 0.0
        for name, at in result["milestones_s"].items():
            print(f"  {at:6.1f} s  (+{at - previous:5.1f})  {name}")
            previous = at
        if result["systemd_analyze"]:
            print(f"  systemd-analyze: {result['systemd_analyze']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
