"""phase-boot: one process from discovery to the kexec hand-off, over real HTTP on loopback.

The real initramfs/kexec-boot runs in its --dry-run mode (or a stand-in records the exact
command it was exec'd with); the load itself runs under QEMU (test_e2e_qemu.py, test_boot_lan.py).
Each failure path is one line on stderr, the init's ERROR line on stdout, and no staged copy left.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from phase_client.keys import SigningKey

from .conftest import REPO
from .fetch_servers import Behaviour, FileServer, dead_url, publish, signed_manifest

KEY = SigningKey.from_seed(b"\x42" * 32)
OTHER = SigningKey.from_seed(b"\x43" * 32)
KEXEC_BOOT = REPO / "initramfs" / "kexec-boot"
FILES = {"kernel": b"K" * 300_000, "initramfs": b"I" * 70_000}
VERSION_WORD = "phase.version=2026.11.24"


def key_arg(key: SigningKey = KEY) -> str:
    return key.public.keyid


def phase_boot(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    proc_cmdline = tmp_path / "proc-cmdline"
    proc_cmdline.write_text("BOOT_IMAGE=/vmlinuz console=ttyS1 phase.channel=stable\n")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_proxy")}
    env |= {"KEXEC_BOOT_PROC_CMDLINE": str(proc_cmdline), "TMPDIR": str(tmp_path)}
    return subprocess.run(
        [sys.executable, "-m", "phase_client", "boot", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=env,
    )


@pytest.fixture
def served() -> Any:
    with FileServer() as server:
        document = signed_manifest(KEY, FILES)
        yield server, publish(server, document, FILES)


def common(tmp_path: Path, url: str, key: SigningKey = KEY) -> list[str]:
    return [
        "--manifest",
        url,
        "--key",
        key_arg(key),
        "--output",
        str(tmp_path / "out"),
        "--stage-into",
        str(tmp_path / "stage"),
        "--kexec-boot",
        str(KEXEC_BOOT),
        "--init-lines",
    ]


def test_dry_run_fetches_verifies_stages_and_hands_the_copies_to_kexec_boot(
    tmp_path: Path, served: Any
) -> None:
    _, url = served
    result = phase_boot(tmp_path, *common(tmp_path, url), "--consume", "--dry-run")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"] phase: fetching {url}\n" in out
    assert "] phase: manifest verified, artifacts fetched and checked\n" in out
    stage = tmp_path / "stage"
    assert "phase: VERIFIED stable/x86_64 version 2026.11.24 sequence 100 signed by " in out
    assert f"; files match; staged in {stage}\n" in out
    # kexec-boot's own dry run, on the staged copies, with its command-line carry-over.
    assert (
        f"kexec -s -l {stage}/kernel --initrd={stage}/initrd "
        f"'--command-line=console=ttyS0 quiet {VERSION_WORD} console=ttyS1 phase.channel=stable'"
    ) in out
    assert not stage.exists()  # removed after the dry run
    # --consume: the fetched artifacts went once staged; the manifest stays.
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cmdline", "manifest.json"]


def test_stage_only_leaves_exactly_the_hashed_bytes(tmp_path: Path, served: Any) -> None:
    _, url = served
    args = [a for a in common(tmp_path, url) if a != "--init-lines"]
    result = phase_boot(tmp_path, *args, "--stage-only", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    stage = tmp_path / "stage"
    assert summary["ok"] and summary["stage"]["directory"] == str(stage)
    assert summary["stage"]["cmdline"] == f"console=ttyS0 quiet {VERSION_WORD}"
    assert (stage / "kernel").read_bytes() == FILES["kernel"]
    assert (stage / "initrd").read_bytes() == FILES["initramfs"]
    assert oct((stage).stat().st_mode & 0o777) == "0o700"
    digest = hashlib.sha256(FILES["kernel"]).hexdigest()
    assert summary["artifacts"]["kernel"]["sha256"] == digest


def test_the_exec_hands_kexec_boot_the_staged_files_and_the_exact_command_line(
    tmp_path: Path, served: Any
) -> None:
    """A stand-in kexec-boot records its argv and fails like a refused load: phase-boot has
    exec'd it (its exit code is phase-boot's), and the staged copies are left for the init."""
    _, url = served
    record = tmp_path / "argv"
    stand_in = tmp_path / "kexec-boot"
    stand_in.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\nexit 1\n')
    stand_in.chmod(0o755)
    args = common(tmp_path, url)
    args[args.index(str(KEXEC_BOOT))] = str(stand_in)
    result = phase_boot(tmp_path, *args, "--append", "x=1")
    assert result.returncode == 1, result.stderr
    assert "] phase: kexec: booting console=ttyS0 quiet\n" in result.stdout
    stage = tmp_path / "stage"
    assert record.read_text().splitlines() == [
        "--kernel",
        f"{stage}/kernel",
        "--initrd",
        f"{stage}/initrd",
        "--cmdline",
        f"console=ttyS0 quiet {VERSION_WORD}",
        "--append",
        "x=1",
    ]
    assert (stage / "kernel").read_bytes() == FILES["kernel"]


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("phase-boot: "), result.stderr
    return lines[-1]


def test_a_manifest_signed_by_another_key_is_refused_in_one_line(
    tmp_path: Path, served: Any
) -> None:
    _, url = served
    result = phase_boot(tmp_path, *common(tmp_path, url, OTHER), "--dry-run")
    assert result.returncode == 1
    assert last_line(result).startswith("phase-boot: "), result.stderr
    assert f"] phase: ERROR fetch from {url} failed\n" in result.stdout
    assert not (tmp_path / "stage").exists()


def test_tampered_bytes_are_never_staged(tmp_path: Path, served: Any) -> None:
    server, url = served
    server.behave("/stable/x86_64/vmlinuz", Behaviour(tamper=True))
    result = phase_boot(tmp_path, *common(tmp_path, url), "--dry-run")
    assert result.returncode == 1, result.stderr
    assert "kernel" in last_line(result)
    assert not (tmp_path / "stage").exists()
    assert not (tmp_path / "out" / "kernel").exists()


def test_too_little_memory_is_one_line_before_any_copy(tmp_path: Path, served: Any) -> None:
    _, url = served
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 1024 kB\nMemAvailable: 1024 kB\n")
    result = phase_boot(tmp_path, *common(tmp_path, url), "--meminfo", str(meminfo), "--dry-run")
    assert result.returncode == 2
    assert "not enough memory to stage and load this image" in last_line(result)
    assert "] phase: ERROR refusing to boot: not enough memory" in result.stdout
    assert not (tmp_path / "stage").exists()


def test_an_unreachable_provider_exits_3(tmp_path: Path) -> None:
    url = dead_url("/stable/x86_64/manifest.json")
    result = phase_boot(tmp_path, *common(tmp_path, url), "--dry-run")
    assert result.returncode == 3
    assert last_line(result).startswith("phase-boot: no manifest reachable")


def test_nothing_discovered_exits_3(tmp_path: Path) -> None:
    dead = dead_url().removeprefix("http://").rstrip("/")
    args = common(tmp_path, "x")[2:]  # no --manifest: discover
    result = phase_boot(
        tmp_path,
        *args,
        "--source",
        "dht",
        "--bootstrap",
        dead,
        "--discover-timeout",
        "1",
        "--dry-run",
    )
    assert result.returncode == 3, result.stderr
    assert "no provider of stable/x86_64 found" in last_line(result)
    assert "] phase: ERROR discovery: no provider of stable/x86_64 found" in result.stdout


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--json"], "--json goes with --dry-run or --stage-only"),
        (["--source", "dht"], "not with --manifest"),
        (["--kexec-boot", "/nonexistent", "--dry-run", "--stage-only"], "not both"),
        (["--link-first"], "--link-first goes with --start-when"),
    ],
)
def test_usage_errors(tmp_path: Path, extra: list[str], words: str) -> None:
    result = phase_boot(tmp_path, *common(tmp_path, "http://127.0.0.1:9/m.json"), *extra)
    assert result.returncode == 2
    assert words in last_line(result)


def test_start_when_waits_for_the_callers_go_or_stop(tmp_path: Path, served: Any) -> None:
    """The init starts phase-boot before DHCP: it imports what the boot needs, then waits for
    the file; 'go' boots, anything else (no network) ends the run quietly."""
    _, url = served
    ready = tmp_path / "ready"
    ready.write_text("stop\n")
    stopped = phase_boot(tmp_path, *common(tmp_path, url), "--start-when", str(ready), "--dry-run")
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout == "" and not (tmp_path / "out").exists()
    ready.write_text("go\n")
    went = phase_boot(tmp_path, *common(tmp_path, url), "--start-when", str(ready), "--dry-run")
    assert went.returncode == 0, went.stderr
    assert "] phase: manifest verified, artifacts fetched and checked\n" in went.stdout


def test_start_when_loads_the_trust_while_discovery_runs(tmp_path: Path) -> None:
    """After the go, discovery runs in a thread while the root of trust loads: a bad key ends
    the run with its one line (exit 2) at once, not after discovery's hour-long timeout (the
    run is cut after 60 s); with a good key, discovery's own failure is the answer (exit 3)."""
    dead = dead_url().removeprefix("http://").rstrip("/")
    ready = tmp_path / "ready"
    ready.write_text("go\n")
    discover = ["--source", "dht", "--bootstrap", dead, "--start-when", str(ready), "--dry-run"]
    args = common(tmp_path, "x")[2:]  # no --manifest: discover
    bad = [*args[:1], "ed25519:zz", *args[2:]]
    result = phase_boot(tmp_path, *bad, *discover, "--discover-timeout", "3600")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "inline key: expected ed25519:" in last_line(result)
    assert "] phase: loaded: discovery's modules imported" in result.stdout
    assert not (tmp_path / "stage").exists()
    result = phase_boot(tmp_path, *args, *discover, "--discover-timeout", "1")
    assert result.returncode == 3, result.stderr
    assert "] phase: ERROR discovery: no provider of stable/x86_64 found" in result.stdout


# Without --output (the initramfs's way): the fetch writes straight into the private directory.


def artifact_requests(server: FileServer) -> list[str]:
    """Every request for anything but the manifest (the root chain's files included)."""
    with server.state.lock:
        return [r.path for r in server.state.requests if not r.path.endswith("/manifest.json")]


def in_place(tmp_path: Path, url: str, key: SigningKey = KEY) -> list[str]:
    args = common(tmp_path, url, key)
    at = args.index("--output")
    return args[:at] + args[at + 2 :]


def test_without_output_the_fetched_files_are_what_kexec_loads(tmp_path: Path, served: Any) -> None:
    """Hashed once as they arrived, in the private directory: nothing is copied (no
    PRIVDIR/initrd beside the initramfs), no fetch directory is made."""
    _, url = served
    args = [a for a in in_place(tmp_path, url) if a != "--init-lines"]
    result = phase_boot(tmp_path, *args, "--stage-only", "--json")
    assert result.returncode == 0, result.stderr
    stage = tmp_path / "stage"
    summary = json.loads(result.stdout)
    assert summary["stage"] == {
        "directory": str(stage),
        "kernel": str(stage / "kernel"),
        "initrd": str(stage / "initramfs"),
        "dtb": None,
        "cmdline": f"console=ttyS0 quiet {VERSION_WORD}",
        "consumed": [],
    }
    assert summary["output"] == str(stage)
    assert sorted(p.name for p in stage.iterdir()) == [
        "cmdline",
        "initramfs",
        "kernel",
        "manifest.json",
    ]
    assert (stage / "kernel").read_bytes() == FILES["kernel"]
    assert (stage / "initramfs").read_bytes() == FILES["initramfs"]
    assert (stage / "cmdline").read_text() == f"console=ttyS0 quiet {VERSION_WORD}"
    assert oct(stage.stat().st_mode & 0o777) == "0o700"
    assert not (tmp_path / "out").exists()


def test_without_output_kexec_boot_gets_the_fetched_files(tmp_path: Path, served: Any) -> None:
    _, url = served
    result = phase_boot(tmp_path, *in_place(tmp_path, url), "--dry-run")
    assert result.returncode == 0, result.stderr
    stage = tmp_path / "stage"
    assert f"; files match; staged in {stage}\n" in result.stdout
    assert f"kexec -s -l {stage}/kernel --initrd={stage}/initramfs " in result.stdout
    assert not stage.exists()  # removed after the dry run


def test_without_output_a_failed_fetch_leaves_no_private_directory(
    tmp_path: Path, served: Any
) -> None:
    server, url = served
    server.behave("/stable/x86_64/vmlinuz", Behaviour(tamper=True))
    result = phase_boot(tmp_path, *in_place(tmp_path, url), "--dry-run")
    assert result.returncode == 1, result.stderr
    assert "kernel" in last_line(result)
    assert f"] phase: ERROR fetch from {url} failed\n" in result.stdout
    # The initramfs came first and verified: it goes with the rest.
    assert server.requests_for("/stable/x86_64/initramfs.img")
    assert not (tmp_path / "stage").exists()


def test_without_output_too_little_memory_is_refused_before_the_first_artifact_byte(
    tmp_path: Path, served: Any
) -> None:
    server, url = served
    meminfo = tmp_path / "meminfo"
    # The image (370 kB) fits, but not kexec's two copies of it beside it and the headroom.
    meminfo.write_text(f"MemTotal: 1048576 kB\nMemAvailable: {32 * 1024 + 500} kB\n")
    result = phase_boot(tmp_path, *in_place(tmp_path, url), "--meminfo", str(meminfo), "--dry-run")
    assert result.returncode == 2, result.stderr
    assert "not enough memory to stage and load this image: needs 33 MiB" in last_line(result)
    assert "] phase: ERROR refusing to boot: not enough memory" in result.stdout
    assert artifact_requests(server) == []
    assert server.requests_for("/stable/x86_64/manifest.json")
    assert not (tmp_path / "stage").exists()
    meminfo.write_text(f"MemTotal: 1048576 kB\nMemAvailable: {34 * 1024} kB\n")
    result = phase_boot(tmp_path, *in_place(tmp_path, url), "--meminfo", str(meminfo), "--dry-run")
    assert result.returncode == 0, result.stderr


def test_without_output_an_unsafe_parent_is_refused_before_the_first_artifact_byte(
    tmp_path: Path, served: Any
) -> None:
    """A parent others may write (not sticky) could have PRIVDIR renamed away and replaced
    between the fetch and kexec's open: refused before anything is fetched."""
    server, url = served
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    args = in_place(tmp_path, url)
    args[args.index(str(tmp_path / "stage"))] = str(shared / "stage")
    result = phase_boot(tmp_path, *args, "--dry-run")
    assert result.returncode == 2, result.stderr
    assert "is not safe for a private staging directory" in last_line(result)
    assert "] phase: ERROR refusing to boot: " in result.stdout
    assert artifact_requests(server) == []
    assert list(shared.iterdir()) == []


ROOTFS_FILES = {**FILES, "rootfs": b"R" * 123_457}


@pytest.mark.parametrize("consume", [False, True])
def test_without_output_a_rootfs_is_folded_into_the_same_initrd(
    tmp_path: Path, consume: bool
) -> None:
    """The initrd built from the fetched files is byte for byte the one --output's copy makes;
    --consume removes what was folded into it (the initramfs and the rootfs), not the kernel."""
    with FileServer() as server:
        url = publish(server, signed_manifest(KEY, ROOTFS_FILES), ROOTFS_FILES)
        extra = ["--stage-only", "--json", *(["--consume"] if consume else [])]
        output_args = [a for a in common(tmp_path, url) if a != "--init-lines"]
        copied = phase_boot(tmp_path, *output_args, *extra)
        assert copied.returncode == 0, copied.stderr
        want = (tmp_path / "stage" / "initrd").read_bytes()
        (tmp_path / "in-place").mkdir()
        args = [a for a in in_place(tmp_path, url) if a != "--init-lines"]
        args[args.index(str(tmp_path / "stage"))] = str(tmp_path / "in-place" / "stage")
        result = phase_boot(tmp_path, *args, *extra)
    assert result.returncode == 0, result.stderr
    stage = tmp_path / "in-place" / "stage"
    assert json.loads(result.stdout)["stage"]["initrd"] == str(stage / "initrd.img")
    assert (stage / "initrd.img").read_bytes() == want
    assert want.startswith(FILES["initramfs"]) and ROOTFS_FILES["rootfs"] in want
    assert (stage / "kernel").read_bytes() == FILES["kernel"]
    folded = {"initramfs", "rootfs"} & {p.name for p in stage.iterdir()}
    assert folded == (set() if consume else {"initramfs", "rootfs"})
    # The --json summary names no removed file: from --output's directory --consume removes
    # every artifact, in place only what the initrd holds.
    everything = set(ROOTFS_FILES)
    for run, gone in ((copied, everything), (result, {"initramfs", "rootfs"})):
        summary = json.loads(run.stdout)
        assert set(summary["stage"]["consumed"]) == (gone if consume else set())
        files = {name: a["file"] for name, a in summary["artifacts"].items()}
        assert {name for name, file in files.items() if file is None} == set(
            summary["stage"]["consumed"]
        )
        assert all(Path(file).is_file() for file in files.values() if file is not None)


def test_without_output_a_sigterm_mid_fetch_leaves_nothing(tmp_path: Path, served: Any) -> None:
    """The init's retry (or a shutdown) may stop phase-boot while bytes arrive: the part files
    and the private directory they land in go with it."""
    import signal
    import time

    server, url = served
    server.behave("/stable/x86_64/vmlinuz", Behaviour(stall_after=1000))
    proc_cmdline = tmp_path / "proc-cmdline"
    proc_cmdline.write_text("console=ttyS1\n")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_proxy")}
    env |= {"KEXEC_BOOT_PROC_CMDLINE": str(proc_cmdline), "TMPDIR": str(tmp_path)}
    argv = [sys.executable, "-m", "phase_client", "boot", *in_place(tmp_path, url), "--dry-run"]
    stage = tmp_path / "stage"
    with subprocess.Popen(argv, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True) as proc:
        deadline = time.monotonic() + 30
        while not (stage / ".kernel.part").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "no part file in time"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert not stage.exists()


def test_without_output_an_artifact_named_initrd_keeps_its_own_name(tmp_path: Path) -> None:
    """The initrd built beside the fetched files has a name no artifact can have."""
    files = {**ROOTFS_FILES, "initrd": b"D" * 1000}
    with FileServer() as server:
        url = publish(server, signed_manifest(KEY, files), files)
        args = [a for a in in_place(tmp_path, url) if a != "--init-lines"]
        result = phase_boot(tmp_path, *args, "--stage-only", "--json")
    assert result.returncode == 0, result.stderr
    stage = tmp_path / "stage"
    assert (stage / "initrd").read_bytes() == files["initrd"]
    assert json.loads(result.stdout)["stage"]["initrd"] == str(stage / "initrd.img")


def test_without_output_a_sigterm_while_unmounting_leaves_nothing(
    tmp_path: Path, served: Any
) -> None:
    """--umount runs between the fetch and the staging: a signal there removes PRIVDIR too."""
    import signal
    import time

    _, url = served
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "umount-started"
    umount = bin_dir / "umount"
    umount.write_text(f"#!/bin/sh\ntouch {marker}\nexec sleep 30\n")
    umount.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_proxy")}
    env |= {"TMPDIR": str(tmp_path), "PATH": f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}"}
    argv = [sys.executable, "-m", "phase_client", "boot", *in_place(tmp_path, url)]
    argv += ["--umount", str(tmp_path / "state"), "--stage-only"]
    stage = tmp_path / "stage"
    with subprocess.Popen(argv, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True) as proc:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "umount never ran"
            time.sleep(0.02)
        assert (stage / "kernel").exists()  # fetched, not yet staged
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert not stage.exists()
