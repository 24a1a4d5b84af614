"""build/phase.pyz as a user runs it: stdlib-only Python, multi-call symlinks, native extraction."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from phase_client.keys import SigningKey

from .conftest import REPO
from .test_kexec_boot import fetch_dir

BUILD = REPO / "scripts" / "build-zipapp.py"


def build(output: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(BUILD), "--output", str(output), "--python", f"{sys.executable} -IS"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("zipapp") / "phase.pyz"
    build(output)
    return output


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    root = tmp_path / "pyz-root"
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PHASE_PYZ_ROOT": str(root)}


def run_pyz(pyz: Path, *argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python3 -S -I phase.pyz ARGV``: no site-packages, nothing but the standard library."""
    return subprocess.run(
        [sys.executable, "-S", "-I", str(pyz), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def signed_manifest(tmp_path: Path, key: SigningKey, kernel: bytes) -> Path:
    """A manifest signed by ``key`` naming ``kernel``, in a phase-fetch style directory."""
    return fetch_dir(tmp_path / "image", kernel=kernel, key=key) / "manifest.json"


def test_build_is_reproducible(pyz: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.pyz"
    build(again)
    assert again.read_bytes() == pyz.read_bytes()


def test_layout_sorted_bytecode_and_native_part(pyz: Path) -> None:
    assert pyz.read_bytes().startswith(b"#!")
    with zipfile.ZipFile(pyz) as zf:
        assert zf.testzip() is None
        names = zf.namelist()
        dates = {info.date_time for info in zf.infolist()}
    assert names == sorted(names)
    assert len(dates) == 1
    assert "__main__.py" in names
    assert "phase_client/cli/verify.pyc" in names
    assert "zeroconf/_core.pyc" in names and "kademlia/network.pyc" in names
    for machine in ("x86_64", "aarch64"):
        assert f"_native/{machine}/nacl/_sodium.abi3.so" in names
        assert any(n.startswith(f"_native/{machine}/_cffi_backend.cpython-311-") for n in names)
        assert f"_native/{machine}/nacl/signing.py" in names
    # Native code only under _native/, where zipimport never looks.
    assert not [n for n in names if n.endswith(".so") and not n.startswith("_native/")]


ELF_MACHINES = {62: "x86_64", 183: "aarch64"}  # e_machine: EM_X86_64, EM_AARCH64


def test_each_machine_gets_its_own_native_part(pyz: Path, tmp_path: Path) -> None:
    """The part extracted for a machine holds that machine's code (read from the ELF headers),
    under the id ``__main__`` names for it; a machine without a part is one clear error."""
    main = zipfile.ZipFile(pyz).read("__main__.py").decode()
    ids = ast.literal_eval(main[main.index("boot(") + 5 : main.rindex(")")])
    assert sorted(ids) == ["aarch64", "x86_64"] and ids["aarch64"] != ids["x86_64"]
    root = tmp_path / "root"
    root.mkdir(mode=0o700)
    env = {**os.environ, "PHASE_PYZ_ROOT": str(root)}
    for machine in ("aarch64", "x86_64"):
        target = Path(native_dir_in(pyz, ids, machine, env))
        assert target.name == f"native-{ids[machine]}"
        for so in [target / "nacl" / "_sodium.abi3.so", *target.glob("_cffi_backend.*.so")]:
            head = so.read_bytes()[:20]
            assert head[:4] == b"\x7fELF"
            assert ELF_MACHINES[int.from_bytes(head[18:20], "little")] == machine, so
    with pytest.raises(subprocess.CalledProcessError) as failed:
        native_dir_in(pyz, ids, "riscv64", env)
    assert failed.value.stderr.strip() == (
        "no native part (PyNaCl) for riscv64, only for aarch64, x86_64; "
        "rebuild it with scripts/build-zipapp.py --machines"
    ).join(["ZipbootError: this zipapp has ", ""])


def native_dir_in(pyz: Path, ids: dict[str, str], machine: str, env: dict[str, str]) -> str:
    """_zipboot.native_dir for ``machine``, run from the zip in a fresh interpreter."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from phase_client import _zipboot\n"
        "try:\n print(_zipboot.native_dir(sys.argv[1], eval(sys.argv[2]), sys.argv[3]))\n"
        "except _zipboot.ZipbootError as e:\n sys.exit(f'ZipbootError: {e}')"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-I", "-c", code, str(pyz), repr(ids), machine],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=True,
    )
    return out.stdout.strip()


def test_verify_runs_on_bare_stdlib_python(pyz: Path, tmp_path: Path, env: dict[str, str]) -> None:
    key = SigningKey.from_seed(b"\x05" * 32)
    manifest = signed_manifest(tmp_path, key, b"kernel bytes")
    result = run_pyz(pyz, "verify", str(manifest), "--key", key.public.keyid, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("VERIFIED stable/x86_64 version 2026.11.24 sequence 3")
    native = list(Path(env["PHASE_PYZ_ROOT"]).glob("native-*"))
    assert len(native) == 1
    assert (native[0] / "nacl" / "signing.py").is_file()
    # A second run reuses the extracted copy and leaves no staging directory behind.
    again = run_pyz(pyz, "verify", str(manifest), "--key", key.public.keyid, env=env)
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in Path(env["PHASE_PYZ_ROOT"]).iterdir()) == [native[0].name]


def test_bad_signature_fails_from_zipapp(pyz: Path, tmp_path: Path, env: dict[str, str]) -> None:
    manifest = signed_manifest(tmp_path, SigningKey.from_seed(b"\x05" * 32), b"k")
    other = SigningKey.from_seed(b"\x06" * 32)
    result = run_pyz(pyz, "verify", str(manifest), "--key", other.public.keyid, env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("FAILED: ")


@pytest.mark.parametrize("tool", ["phase-verify", "phase-fetch", "phase-discover"])
def test_multicall_symlinks(pyz: Path, tmp_path: Path, env: dict[str, str], tool: str) -> None:
    link = tmp_path / tool
    link.symlink_to(pyz)
    result = subprocess.run(
        [str(link), "--help"], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {tool}")


def test_no_tool_prints_usage(pyz: Path, env: dict[str, str]) -> None:
    result = run_pyz(pyz, "--help", env=env)
    assert result.returncode == 0
    assert "tools:" in result.stdout
    bad = run_pyz(pyz, "nonsense", env=env)
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("phase: unknown tool")


def test_refuses_a_native_root_others_can_write(
    pyz: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    root = Path(env["PHASE_PYZ_ROOT"])
    root.mkdir()
    root.chmod(0o777)
    result = run_pyz(pyz, "verify", "--help", env=env)
    assert result.returncode == 1
    assert "not private" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert list(root.iterdir()) == []


def test_concurrent_first_runs_agree(pyz: Path, tmp_path: Path, env: dict[str, str]) -> None:
    key = SigningKey.from_seed(b"\x07" * 32)
    manifest = signed_manifest(tmp_path, key, b"x")
    argv = [sys.executable, "-S", "-I", str(pyz), "verify", str(manifest), "--key"]
    procs: list[Any] = [
        subprocess.Popen(
            [*argv, key.public.keyid], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(4)
    ]
    for proc in procs:
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    entries = sorted(p.name for p in Path(env["PHASE_PYZ_ROOT"]).iterdir())
    assert len(entries) == 1 and entries[0].startswith("native-")
