"""Pure planning of an OS image build: no I/O, no subprocesses (docs/os-image.md).

An image is a directory ``plasmd serve`` serves as is::

    vmlinuz        Debian's generic kernel (linux-image-<arch>) taken from the root tree's /boot
    initramfs.img  the image's early userspace (busybox + squashfs/overlay/loop modules +
                   initramfs/os-init); finds the root filesystem at ROOTFS_IN_INITRD
    rootfs.sqfs    the Debian root filesystem (mmdebstrap minbase + systemd), squashfs
    cmdline        ``phase.version=<version>``
    version        the image version (the provider signs it into the manifest)
    .phase-image.json  what was built from what (the cache stamp; the provider ignores it)
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from ..errors import UsageError
from ..names import normalize_arch

# Bump when the build changes in a way the hashed inputs do not show.
FORMAT = 1

DEFAULT_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
COMPRESSIONS = ("zstd", "xz")

# The path stage 1 puts the rootfs at (a newc cpio appended to initramfs.img): the kernel
# unpacks both archives into the same initramfs, where initramfs/os-init looks for it.
ROOTFS_IN_INITRD = "phase/rootfs.sqfs"

OUTPUT_FILES = ("vmlinuz", "initramfs.img", "rootfs.sqfs", "cmdline", "version")
STAMP = ".phase-image.json"
HOSTNAME = "phase-os"


@dataclass(frozen=True)
class Arch:
    name: str  # phase's name (manifest, directory)
    debian: str  # dpkg architecture
    kernel_package: str  # Debian's generic kernel metapackage


ARCHES = {
    "x86_64": Arch("x86_64", "amd64", "linux-image-amd64"),
    "arm64": Arch("arm64", "arm64", "linux-image-arm64"),
}

# minbase + these. python3 rather than python3-minimal: phase-client needs asyncio, json,
# http.client, ssl... (libpython3-stdlib). busybox-static is for the initramfs (taken from the
# tree, so it is the image's arch and archive version). Networking: systemd-networkd (part of
# systemd) with DHCP on every ethernet interface, systemd-resolved for DNS.
BASE_PACKAGES = (
    "busybox-static",
    "iproute2",
    "kmod",
    "python3",
    "systemd-resolved",
    "systemd-sysv",
    "udev",
)

# Module trees left out of the root filesystem (not of the initramfs): sound, cameras and TV,
# GPUs (the console uses the firmware framebuffer), staging, InfiniBand, industrial I/O and
# data acquisition: ~145 of the kernel's ~400 MB. --all-modules keeps them.
PRUNED_MODULE_DIRS = (
    "kernel/drivers/comedi",
    "kernel/drivers/gpu",
    "kernel/drivers/iio",
    "kernel/drivers/infiniband",
    "kernel/drivers/media",
    "kernel/drivers/staging",
    "kernel/sound",
)


@dataclass(frozen=True)
class ProjectFile:
    source: str  # relative to the project root
    target: str  # relative to the image root
    mode: int


# Files of the project installed into the root filesystem.
PROJECT_FILES = (
    ProjectFile("packaging/phase-os-up", "usr/lib/phase/phase-os-up", 0o755),
    ProjectFile(
        "packaging/phase-os-up.service", "usr/lib/systemd/system/phase-os-up.service", 0o644
    ),
    ProjectFile(
        "packaging/80-phase-dhcp.network", "etc/systemd/network/80-phase-dhcp.network", 0o644
    ),
    ProjectFile("packaging/plasmd-mirror", "usr/lib/phase/plasmd-mirror", 0o755),
    ProjectFile("packaging/plasmd.service", "usr/lib/systemd/system/plasmd.service", 0o644),
)
ENABLE_UNITS = (
    "systemd-networkd.service",
    "systemd-resolved.service",
    "phase-os-up.service",
    "plasmd.service",
)

# phase-client as the zipapp (scripts/build-zipapp.py), with its multi-call links.
ZIPAPP_TARGET = "usr/lib/phase/phase.pyz"
ZIPAPP_LINKS = ("phase-verify", "phase-fetch", "phase-discover", "plasmd")

# What of the project goes into the image (hashed into the cache key): the files above, the
# early userspace and its builder, the zipapp's builder and sources, and this builder.
BUILD_INPUTS = (
    "packaging",
    "initramfs/os-init",
    "scripts/build-os-initramfs.sh",
    "scripts/pack-cpio.sh",
    "scripts/build-zipapp.py",
    "phase_client",
)

# Tool -> the Debian package that has it.
TOOLS = {
    "mmdebstrap": "mmdebstrap",
    "mksquashfs": "squashfs-tools",
    "cpio": "cpio",
    "depmod": "kmod",
    "dpkg-query": "dpkg",
    "gzip": "gzip",
    "chroot": "coreutils",
    "systemctl": "systemd",
}

_PACKAGE_RE = re.compile(r"[a-z0-9][a-z0-9+.-]+\Z", re.ASCII)
_SUITE_RE = re.compile(r"[a-z][a-z0-9-]{1,31}\Z", re.ASCII)
_VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}\Z", re.ASCII)
_MIRROR_RE = re.compile(r"(https?|file)://[^\s\"'\\]+\Z", re.ASCII)


@dataclass(frozen=True)
class ImageSpec:
    """Everything that decides an image's contents, besides the project files and Debian's
    archive (which changes over time: see docs/os-image.md)."""

    arch: Arch
    suite: str = DEFAULT_SUITE
    includes: tuple[str, ...] = ()
    epoch: int = 0
    version: str | None = None  # None: derived from the epoch and the cache key
    compression: str = "zstd"
    all_modules: bool = False
    mirror: str = DEFAULT_MIRROR
    security_mirror: str | None = DEFAULT_SECURITY_MIRROR


def check_arch(arch: str) -> Arch:
    """The image's arch, by any of its names (the zipapp carries both native parts)."""
    name = normalize_arch(arch)
    if name not in ARCHES:
        raise UsageError(f"unknown --arch {arch!r} (supported: {', '.join(ARCHES)})")
    return ARCHES[name]


# What a foreign arch's package scripts run under (mmdebstrap runs them in the new root).
QEMU_USER = {"arm64": "qemu-aarch64", "x86_64": "qemu-x86_64"}


def foreign_prerequisites(
    arch: Arch, host: str, binfmt_enabled: Callable[[str], bool], which: Callable[[str], str | None]
) -> str | None:
    """None for the build machine's own arch; else one line naming what emulating ``arch``'s
    package scripts needs and is missing (qemu-user-static, arch-test, a binfmt handler)."""
    if arch.name == normalize_arch(host):
        return None
    handler = QEMU_USER[arch.name]
    missing = []
    if which(f"{handler}-static") is None or which("arch-test") is None:
        missing.append("apt-get install qemu-user-static arch-test")
    if not binfmt_enabled(handler):
        missing.append(f"/usr/lib/systemd/systemd-binfmt /usr/lib/binfmt.d/{handler}.conf")
    if not missing:
        return None
    return (
        f"--arch {arch.name} on {normalize_arch(host)}: mmdebstrap runs {arch.name}'s package "
        f"scripts under emulation, and the {handler} binfmt handler is not ready ("
        + "; then ".join(missing)
        + ")"
    )


def check_suite(suite: str) -> str:
    if not _SUITE_RE.match(suite):
        raise UsageError(f"invalid --suite {suite!r} (a Debian code name such as bookworm)")
    return suite


def parse_includes(values: Iterable[str]) -> tuple[str, ...]:
    """``--include a,b --include c`` -> ('a', 'b', 'c'); names are Debian package names."""
    names: list[str] = []
    for value in values:
        for name in value.split(","):
            name = name.strip()
            if not name:
                continue
            if not _PACKAGE_RE.match(name):
                raise UsageError(f"invalid package name in --include: {name!r}")
            names.append(name)
    return tuple(names)


def check_version(version: str) -> str:
    if not _VERSION_RE.match(version):
        raise UsageError(
            f"invalid --version {version!r} (1-64 of A-Z a-z 0-9 . _ + ~ -, "
            "starting with a letter or digit)"
        )
    return version


def check_mirror(url: str, option: str) -> str:
    if not _MIRROR_RE.match(url):
        raise UsageError(f"invalid {option} {url!r} (an http://, https:// or file:// URL)")
    return url.rstrip("/")


def check_compression(name: str) -> str:
    if name not in COMPRESSIONS:
        raise UsageError(f"invalid --compression {name!r} (one of {', '.join(COMPRESSIONS)})")
    return name


def package_list(spec: ImageSpec) -> tuple[str, ...]:
    """Packages mmdebstrap installs on top of minbase: sorted, each once."""
    return tuple(sorted({*BASE_PACKAGES, spec.arch.kernel_package, *spec.includes}))


def apt_sources(spec: ImageSpec) -> str:
    """The image's sources.list (one-line format): the suite, its -updates, its security
    suite. Unstable/sid and experimental have neither."""
    lines = [f"deb {spec.mirror} {spec.suite} main"]
    if spec.suite not in ("sid", "unstable", "experimental", "rc-buggy"):
        lines.append(f"deb {spec.mirror} {spec.suite}-updates main")
        if spec.security_mirror is not None:
            lines.append(f"deb {spec.security_mirror} {spec.suite}-security main")
    return "\n".join(lines) + "\n"


def cache_key(spec: ImageSpec, inputs: Mapping[str, str]) -> str:
    """sha256 of everything an image is built from that this machine knows: the spec, the
    package list, the builder's format and the hashes of the project's input files."""
    document = {
        "format": FORMAT,
        "arch": spec.arch.debian,
        "suite": spec.suite,
        "packages": list(package_list(spec)),
        "epoch": spec.epoch,
        "version": spec.version,
        "compression": spec.compression,
        "pruned_modules": [] if spec.all_modules else list(PRUNED_MODULE_DIRS),
        "mirror": spec.mirror,
        "security_mirror": spec.security_mirror,
        "inputs": dict(sorted(inputs.items())),
    }
    data = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(data).hexdigest()


def image_version(spec: ImageSpec, key: str) -> str:
    """``--version``, else ``YYYY.MM.DD-<key[:8]>`` from SOURCE_DATE_EPOCH: sorts by date,
    and differs whenever the inputs do."""
    if spec.version is not None:
        return spec.version
    return time.strftime("%Y.%m.%d", time.gmtime(spec.epoch)) + "-" + key[:8]


def kernel_cmdline(version: str) -> str:
    """The image's command line. No console=: stage 1's own console= words are carried over
    by kexec-boot, so the booted system talks where stage 1 did."""
    return f"phase.version={version}"


def mmdebstrap_argv(
    spec: ImageSpec, root: str, sources_file: str, apt_cache: str | None
) -> list[str]:
    """mmdebstrap into the directory ``root``. With ``apt_cache``, downloaded .debs are
    taken from and saved to it (mmdebstrap's sync-in/sync-out hooks), so a rebuild downloads
    only what changed in the archive."""
    argv = [
        "mmdebstrap",
        "--variant=minbase",
        "--mode=root",
        "--format=directory",
        f"--architectures={spec.arch.debian}",
        f"--include={','.join(package_list(spec))}",
        "--aptopt=APT::Install-Recommends false",
        # Documentation, manual pages and translations: not needed on a network-booted system.
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--dpkgopt=path-include=/usr/share/locale/locale.alias",
    ]
    if apt_cache is not None:
        argv += [
            "--skip=download/empty",
            '--setup-hook=mkdir -p "$1"/var/cache/apt/archives/',
            f"--setup-hook=sync-in {apt_cache} /var/cache/apt/archives/",
            f"--customize-hook=sync-out /var/cache/apt/archives {apt_cache}",
        ]
    argv += [spec.suite, root, sources_file]
    return argv


def mmdebstrap_env(spec: ImageSpec) -> dict[str, str]:
    """Environment additions: a fixed SOURCE_DATE_EPOCH (mmdebstrap's reproducible mode) and
    INITRD=No (Debian's kernel postinst hook then makes no initrd.img)."""
    return {"SOURCE_DATE_EPOCH": str(spec.epoch), "INITRD": "No"}


def mksquashfs_argv(spec: ImageSpec, root: str, output: str) -> list[str]:
    argv = [
        *("mksquashfs", root, output, "-noappend", "-comp", spec.compression),
        *("-reproducible", "-mkfs-time", str(spec.epoch), "-all-time", str(spec.epoch)),
        "-no-progress",
    ]
    if spec.compression == "xz":
        argv += ["-Xbcj", "x86" if spec.arch.debian == "amd64" else "arm"]
    return argv


def missing_prerequisites(euid: int, which: Callable[[str], str | None]) -> str | None:
    """One line naming everything missing (tools with their packages, root), or None."""
    problems = []
    tools = [tool for tool in TOOLS if which(tool) is None]
    if tools:
        packages = sorted({TOOLS[tool] for tool in tools})
        problems.append(f"{', '.join(tools)} missing (apt-get install {' '.join(packages)})")
    if euid != 0:
        problems.append("root needed (mmdebstrap --mode=root, chroot, device nodes): use sudo")
    if not problems:
        return None
    return "cannot build an OS image: " + "; ".join(problems)
