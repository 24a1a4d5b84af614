"""``plasmd image build``: build an OS image directory that ``plasmd serve`` serves as is.

Heavy work lives in phase_client.image; this module parses arguments and prints the result.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from ..errors import UsageError
from ._common import EXIT_OK, number, print_json

EPILOG = """\
actions:
  build    build vmlinuz, initramfs.img, rootfs.sqfs, cmdline and version into --out

Run 'plasmd image build --help' for its options. docs/os-image.md describes the image.
"""

BUILD_EPILOG = """\
The output directory gets:
  vmlinuz        Debian's generic kernel (linux-image-amd64 / -arm64)
  initramfs.img  the image's early userspace: finds /phase/rootfs.sqfs (appended to the
                 initrd by stage 1), mounts it under a tmpfs overlay, switch_root to systemd
  rootfs.sqfs    Debian (mmdebstrap minbase) + systemd, networkd (DHCP on en*/eth*),
                 phase-client, and phase-os-up.service (prints PHASE-OS-UP ... when up)
  cmdline        phase.version=VERSION
  version        VERSION (default YYYY.MM.DD-<cache key>)
Serve it with: plasmd serve --artifacts DIR (where --out is DIR/<channel>/<arch>).

The build runs mmdebstrap as root (minutes: downloads ~100 MB from the Debian archive of
--mirror, unless --apt-cache has them). An output built from the same inputs (suite, arch,
packages, options, SOURCE_DATE_EPOCH, the project files that go in) is left alone; --force
rebuilds it (e.g. to pick up new packages from the archive). SOURCE_DATE_EPOCH defaults to the
date of the last commit that touched those files.

examples:
  sudo plasmd image build --out /srv/phase/stable/x86_64
  sudo plasmd image build --out build/os/stable/x86_64 --include openssh-server,less --json

exit codes:
  0  built, or already current
  1  a build step failed (mmdebstrap, mksquashfs, ...): one line, the log is kept
  2  usage error: bad option, root or a tool missing, --out not replaceable, build running
  130 interrupted (nothing half-built is left)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="image_command", metavar="ACTION")
    sub.required = True
    build = sub.add_parser(
        "build",
        help="build an OS image directory (kernel, initramfs, squashfs root)",
        description="Build a Debian OS image that plasmd serve serves as is.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=BUILD_EPILOG,
    )
    build.add_argument(
        "--out", required=True, metavar="DIR", help="output directory, e.g. ARTIFACTS/stable/x86_64"
    )
    build.add_argument(
        "--arch",
        help="image architecture (x86_64 or arm64; default: this machine's; the other one needs "
        "qemu-user-static and a binfmt handler)",
    )
    build.add_argument("--suite", default="bookworm", help="Debian suite (default bookworm)")
    build.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="PKG,...",
        help="more Debian packages to install (repeatable, comma-separated)",
    )
    build.add_argument(
        "--version", dest="image_version", metavar="V", help="image version (default: derived)"
    )
    build.add_argument(
        "--compression",
        default="zstd",
        choices=("zstd", "xz"),
        help="squashfs compression (default zstd: faster to mount and read; xz: smaller)",
    )
    build.add_argument(
        "--all-modules",
        action="store_true",
        help="keep every kernel module (default: leave out sound, media, GPU, staging, ...)",
    )
    build.add_argument(
        "--mirror", default="http://deb.debian.org/debian", metavar="URL", help="Debian mirror"
    )
    build.add_argument(
        "--security-mirror",
        default="http://deb.debian.org/debian-security",
        metavar="URL",
        help="Debian security mirror ('none': no security updates)",
    )
    build.add_argument(
        "--apt-cache", metavar="DIR", help="keep downloaded .deb files here and reuse them"
    )
    build.add_argument("--force", action="store_true", help="rebuild even if the output is current")
    build.add_argument(
        "--wait",
        type=number(0, 24 * 3600),
        default=3600.0,
        metavar="S",
        help="another build of the same --out running: wait up to S seconds for it to end, then "
        "go on (usually: it is current); 0 refuses at once (default 3600)",
    )
    build.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    build.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    build.set_defaults(func=run)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _binfmt_enabled(handler: str) -> bool:
    """Whether the kernel runs foreign binaries through ``handler`` (binfmt_misc)."""
    try:
        with open(f"/proc/sys/fs/binfmt_misc/{handler}") as entry:
            return entry.readline().strip() == "enabled"
    except OSError:
        return False


def run(args: argparse.Namespace) -> int:
    from ..image import plan
    from ..image.build import STEPS, BuildOptions, build_image
    from ..image.inputs import default_epoch, project_root
    from ..image.progress import Progress

    host = platform.machine() or "x86_64"
    arch = plan.check_arch(args.arch or host)
    suite = plan.check_suite(args.suite)
    includes = plan.parse_includes(args.include)
    version = None if args.image_version is None else plan.check_version(args.image_version)
    mirror = plan.check_mirror(args.mirror, "--mirror")
    security = (
        None
        if args.security_mirror == "none"
        else plan.check_mirror(args.security_mirror, "--security-mirror")
    )
    apt_cache = None
    if args.apt_cache is not None:
        if any(c.isspace() for c in args.apt_cache):
            raise UsageError(f"--apt-cache {args.apt_cache!r} must not contain white space")
        apt_cache = Path(args.apt_cache)
    problem = plan.missing_prerequisites(os.geteuid(), shutil.which) or (
        plan.foreign_prerequisites(arch, host, _binfmt_enabled, shutil.which)
    )
    if problem is not None:
        raise UsageError(problem)
    project = project_root()
    spec = plan.ImageSpec(
        arch=arch,
        suite=suite,
        includes=includes,
        epoch=default_epoch(project),
        version=version,
        compression=plan.check_compression(args.compression),
        all_modules=args.all_modules,
        mirror=mirror,
        security_mirror=security,
    )
    progress = Progress(sys.stderr, STEPS, tty=sys.stderr.isatty(), quiet=args.quiet)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        summary = build_image(
            spec, Path(args.out), project, BuildOptions(apt_cache, args.force, args.wait), progress
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    if args.json:
        print_json(_public(summary))
    else:
        _print_summary(summary)
    return EXIT_OK


def _public(summary: dict[str, Any]) -> dict[str, Any]:
    """The JSON summary: the stamp without the (long) Debian package list."""
    result = {k: v for k, v in summary.items() if k != "debian_packages"}
    result["debian_package_count"] = len(summary.get("debian_packages", {}))
    return result


def _print_summary(summary: dict[str, Any]) -> None:
    state = "current" if summary.get("cached") else "built"
    sys.stdout.write(
        f"{state} {summary['output']}: {summary['suite']} {summary['arch']}, "
        f"kernel {summary['kernel']}, version {summary['version']}\n"
    )
    for name, info in summary["files"].items():
        sys.stdout.write(
            f"  {name:<14} {info['size']:>11} bytes  sha256:{info['sha256'][:16]}...\n"
        )
