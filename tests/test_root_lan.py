"""The root of trust on the namespace LAN (issue 17, docs/trust.md), with a real VM:

    hub namespace:  bridge ── tap ── QEMU (Debian's kernel + a stage 1 trusting root 1, TCG)
                       ├── veth ── dhcp   busybox udhcpd
                       └── veth ── prov1  plasmd serve, ARTIFACTS/root/{1,2,3}.json beside
                                          stable/x86_64/

The stick was built with ``build-initramfs.sh --root root1.json`` (what ``make initramfs
ROOT=root1.json`` runs): it knows root 1 only, whose release key is K0. The provider signs with
K2, a release key that exists only in root 3 (root 2 and 3 rotate the root key and revoke K0
and K1). The VM walks 1 -> 2 -> 3 from the provider, verifies the manifest, and kexec-boot's own
re-check (phase-verify --keys-dir /etc/phase/keys, unchanged) walks the same chain from the
fetch directory: stage 2 comes up. Then a provider signing with the revoked K0 (a newer
sequence, same chain) is refused: no kexec.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from . import test_e2e_qemu
from .test_boot_lan import BootLan, assert_booted, lan, lan_images, wait_for_stage2
from .test_e2e_qemu import BOOT_DEADLINE, SCRIPTS, sh, terminate, wait_for
from .test_root import K, R, raw, root_document

pytestmark = [pytest.mark.qemu, pytest.mark.netns, pytest.mark.slow]

images = test_e2e_qemu.images
__all__ = ["images", "lan", "lan_images"]  # fixtures shared with the boot-LAN tests

FAR = 4102444800  # 2100-01-01


def chain() -> list[dict[str, Any]]:
    return [
        root_document(1, [R[0]], [K[0]], signed_by=[R[0]], expires_at=FAR),
        root_document(2, [R[1]], [K[1]], signed_by=[R[0], R[1]], expires_at=FAR),
        root_document(3, [R[2]], [K[2]], signed_by=[R[1], R[2]], expires_at=FAR),
    ]


@pytest.fixture(scope="module")
def rooted(
    images: dict[str, Path],
    lan_images: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Path]:
    """A stage 1 baking root 1 (and no *.pub key), and an artifacts tree serving the chain."""
    work = tmp_path_factory.mktemp("root-lan")
    root1 = work / "root1.json"
    root1.write_bytes(raw(chain()[0]))
    stage1 = work / "initramfs-root1.cpio.zst"
    sh(
        str(SCRIPTS / "build-initramfs.sh"),
        *("--modules", str(images["modules"]), "--zipapp", str(images["pyz"])),
        *("--root", str(root1), "--output", str(stage1)),
    )
    art = work / "art"
    shutil.copytree(lan_images["art"], art)
    (art / "root").mkdir()
    for document in chain():
        (art / "root" / f"{document['version']}.json").write_bytes(raw(document))
    keys = {}
    for index in (0, 2):
        keys[index] = work / f"release-{index}.key"
        keys[index].write_bytes(K[index].file_bytes())
        keys[index].chmod(0o600)
    return {
        **images,
        "stage1": stage1,
        "art": art,
        "key_k2": keys[2],
        "key_k0": keys[0],
    }


def test_a_root_one_stick_boots_what_only_root_three_trusts(
    lan: BootLan, rooted: dict[str, Path], tmp_path: Path
) -> None:
    lan.provider("prov1", {**rooted, "key": rooted["key_k2"]}, "--no-dht")
    serial = tmp_path / "serial.log"
    lan.boot(rooted, serial)
    log = wait_for_stage2(lan, serial)
    assert_booted(log)
    assert "INFO Root of trust: version 1 -> 3" in log, log
    assert re.search(r"root refused|Traceback", log) is None, log


def test_the_revoked_key_is_refused_on_the_lan(
    lan: BootLan, rooted: dict[str, Path], tmp_path: Path
) -> None:
    lan.provider("prov1", {**rooted, "key": rooted["key_k0"]}, "--no-dht")
    serial = tmp_path / "serial.log"
    lan.boot(rooted, serial)
    assert lan.qemu is not None
    try:
        log = wait_for(
            serial, r"phase: ERROR fetch from .*\n", lan.qemu, time.monotonic() + BOOT_DEADLINE
        )
    finally:
        terminate(lan.qemu)
    assert "INFO Root of trust: version 1 -> 3" in log, log
    assert "no valid signature by a trusted key" in log, log
    assert "kexec" not in log.split("phase: fetching", 1)[1], log
    assert "PHASE-STAGE2" not in log, log
