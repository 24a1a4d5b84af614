"""Hand the staged files to kexec: the ``kexec-boot --kernel/--initrd/--cmdline`` command.

kexec-boot (initramfs/kexec-boot, POSIX sh) stays the one place that knows kexec: ``kexec -s``
then ``kexec -l``, the one line for a signature the kernel rejected, kexec_load_disabled, the
console= and phase.* words carried over from the running kernel, ``sync; kexec -e``. phase-boot
calls its direct mode on the copies ``boot.stage`` has just hashed into a private directory, so
no second interpreter starts to check them again: those copies are the hashed bytes, in a
directory nobody else can write or swap (stage.py's parent check), exactly as kexec-boot's own
``phase-verify --stage-into`` left them before.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .orchestrate import Staged

PROGRAM = "kexec-boot"

# Arches whose kernels take a device tree (kexec --dtb), as kexec-boot's uses_dtb says.
_DTB_MACHINES = ("aarch64", "arm", "riscv", "ppc", "powerpc", "loongarch")


def uses_dtb(machine: str | None = None) -> bool:
    # os.uname() is what platform.machine() reads on POSIX, without importing platform (~25 ms
    # of the boot's start-up under QEMU's emulation).
    return (machine or os.uname().machine).startswith(_DTB_MACHINES)


def find_kexec_boot(argv0: str, path: str | None = None) -> str | None:
    """kexec-boot from PATH, else beside ``argv0`` (a build/bin link, pip's bin directory),
    else beside the file ``argv0`` links to; None when there is none."""
    search = os.environ.get("PATH", os.defpath) if path is None else path
    places = [Path(d) for d in search.split(os.pathsep) if d]
    for here in (*places, Path(argv0).parent, Path(os.path.realpath(argv0)).parent):
        candidate = here / PROGRAM
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def kexec_boot_argv(
    program: str,
    staged: Staged,
    *,
    append: Sequence[str] = (),
    dry_run: bool = False,
    machine: str | None = None,
) -> list[str]:
    """The kexec-boot command that loads exactly the staged files."""
    argv = [program]
    if dry_run:
        argv.append("--dry-run")
    argv += ["--kernel", str(staged.kernel)]
    if staged.initrd is not None:
        argv += ["--initrd", str(staged.initrd)]
    if staged.dtb is not None and uses_dtb(machine):
        argv += ["--dtb", str(staged.dtb)]
    argv += ["--cmdline", staged.cmdline]
    for words in append:
        argv += ["--append", words]
    return argv
