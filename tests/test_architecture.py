"""docs/architecture.md, held against the code: imports run one way, the pure core does no
I/O, argparse lives in cli/ only, and each dependency's private parts stay in their adapter."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from .conftest import REPO

PACKAGE = REPO / "phase_client"
PURE_CORE = [
    *("manifest", "names", "canonical", "keys", "trust", "root", "timefmt", "hostport"),
    "byterange",
]
IO_MODULES = {"socket", "subprocess", "urllib3", "zeroconf", "kademlia", "rpcudp", "threading"}


def component(path: Path) -> str:
    """``fetch`` for phase_client/fetch/x.py, ``trust`` for phase_client/trust.py."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def imports_of(path: Path) -> set[str]:
    """Absolute module names this file imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    here = ["phase_client", *path.relative_to(PACKAGE).with_suffix("").parts[:-1]]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        own = component(path)
        for name in imports_of(path):
            parts = name.split(".")
            inside = parts[0] == "phase_client" and len(parts) > 1 and parts[1] != own
            if inside and ((PACKAGE / parts[1]).is_dir() or (PACKAGE / f"{parts[1]}.py").exists()):
                edges[own].add(parts[1])
    return edges


def test_no_two_components_depend_on_each_other() -> None:
    edges = graph()
    # Depth-first search for a cycle among packages and top-level modules.
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join([*trail, node, nxt])
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])


def test_protocol_packages_know_nothing_of_their_users() -> None:
    edges = graph()
    assert not edges["mdns"] & {"discovery", "provider", "cli", "fetch"}, edges["mdns"]
    assert not edges["dht"] & {"discovery", "provider", "cli", "fetch"}, edges["dht"]
    assert not edges["libp2p"] & {"discovery", "provider", "cli", "fetch", "boot"}, edges["libp2p"]
    # boot/ orchestrates discovery and fetch: neither knows it.
    assert "boot" not in edges["fetch"] | edges["discovery"], (edges["fetch"], edges["discovery"])
    # Only the entry points above cli/ (python -m phase_client, the zipapp) may import it.
    users = {source for source, targets in edges.items() if "cli" in targets}
    assert users <= {"__main__", "_zipboot"}, users


def test_the_libp2p_codecs_do_no_io() -> None:
    # Wire formats and key derivation are pure; only conn.py, client.py and kad.py touch sockets.
    pure = ["varint", "protobuf", "multiaddr", "peerid", "keyscheme", "noise", "kadmsg"]
    for name in pure:
        used = {module.split(".")[0] for module in imports_of(PACKAGE / "libp2p" / f"{name}.py")}
        assert not used & (IO_MODULES | {"asyncio"}), f"libp2p/{name}.py imports {used}"


def test_the_pure_core_does_no_io() -> None:
    for name in PURE_CORE:
        used = {module.split(".")[0] for module in imports_of(PACKAGE / f"{name}.py")}
        assert not used & IO_MODULES, f"{name}.py imports {used & IO_MODULES}"


def test_argparse_only_in_cli() -> None:
    for path in PACKAGE.rglob("*.py"):
        if component(path) != "cli":
            assert "argparse" not in imports_of(path), path


def test_private_parts_of_dependencies_stay_in_their_adapters() -> None:
    adapters = {
        "zeroconf.const": PACKAGE / "mdns" / "_zeroconf.py",
        "_accept_request": PACKAGE / "dht" / "_rpcudp.py",
        "_outstanding": PACKAGE / "dht" / "_rpcudp.py",
        '"_fp"': PACKAGE / "fetch" / "u3compat.py",
    }
    for marker, home in adapters.items():
        users = [p for p in PACKAGE.rglob("*.py") if marker in p.read_text()]
        assert users == [home], f"{marker!r} used outside {home.name}: {users}"
