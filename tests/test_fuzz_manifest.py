"""Fuzz targets for the manifest parsers: canonical.loads_strict, manifest.parse_manifest and the
whole verification (verification.verify_bytes -> trust.verify), on random bytes and on random
and mutated valid signed manifests. docs/fuzz.md says how to run them longer (make fuzz).

The property everywhere: any input gives a valid object or the documented error (ManifestError
for parsing, a PhaseError for verification), never another exception; and a mutated signed
manifest never verifies unless the mutation left the signed content unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import event, example, given
from hypothesis import strategies as st

from phase_client.canonical import canonical_bytes, loads_strict
from phase_client.errors import DocumentError, ManifestError, PhaseError
from phase_client.keys import KEYID_RE
from phase_client.manifest import (
    ARTIFACT_NAME_RE,
    HASH_RE,
    MAX_SEQUENCE,
    MAX_SIZE,
    MIRROR_URL_RE,
    PATH_SEGMENT_RE,
    Manifest,
    build_document,
    dump_document,
    parse_manifest,
    sign_document,
)
from phase_client.names import CHANNEL_RE
from phase_client.timefmt import parse_utc
from phase_client.trust import TrustPolicy
from phase_client.verification import verify_bytes
from tests.conftest import fuzz_settings, key_from_byte

# Valid from before the tool's build time (buildinfo.BUILD_TIME) for ten years, so a mutation,
# not the clock, decides whether a manifest verifies.
CREATED = parse_utc("2026-12-01T00:00:00Z")
NOW = CREATED + 86400
KEY = key_from_byte(7)
STRANGER = key_from_byte(8)  # signs too, but is not trusted
POLICY = TrustPolicy(keys=(KEY.public,))


# --- a JSON writer that can also write what json.dumps refuses to ---------------------------
@dataclass
class Raw:
    """JSON text emitted verbatim: huge integers, floats, NaN, broken escapes, deep nesting."""

    text: str


@dataclass
class Obj:
    """An object as a list of members, so a key can appear twice."""

    pairs: list[tuple[str, Any]]


def to_tree(value: Any) -> Any:
    if isinstance(value, dict):
        return Obj([(k, to_tree(v)) for k, v in value.items()])
    if isinstance(value, list):
        return [to_tree(v) for v in value]
    return value


def emit(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Obj):
        return "{" + ",".join(f"{emit(k)}:{emit(v)}" for k, v in value.pairs) + "}"
    if isinstance(value, list):
        return "[" + ",".join(emit(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def encode(text: str) -> bytes:
    # surrogatepass: a lone surrogate becomes the invalid UTF-8 a hostile file would hold.
    return text.encode("utf-8", "surrogatepass")


# --- hostile values and mutations -----------------------------------------------------------
HOSTILE_TOKENS = [
    Raw("1" + "0" * 5000),  # 10**5000: int() refuses past 4300 digits
    Raw("-" + "9" * 30),
    Raw(str(2**63)),
    Raw(str(2**64)),
    Raw("-0"),
    Raw("1.0"),
    Raw("1e3"),
    Raw("-1E-400"),
    Raw("NaN"),
    Raw("Infinity"),
    Raw("-Infinity"),
    Raw('"\\ud800"'),
    Raw('"\\udc00\\ud800"'),
    Raw('"\\u0000"'),
    Raw("[" * 3000 + "]" * 3000),
    Raw('{"a":' * 40 + "1" + "}" * 40),
    Raw("[" * 33 + "]" * 33),
    Raw("{}"),
    Raw("[]"),
    Raw("null"),
    Raw("true"),
    Raw('"'),
    Raw(""),
    "",
    "\n",
    "..",
    ".",
    "../../etc/passwd",
    "a/../../b",
    "/etc/passwd",
    "a//b",
    "./vmlinuz",
    "%2e%2e/x",
    "C:\\Windows",
    "javascript:alert(1)",
    "http://evil.example/x\n",
    "sha256:" + "ab" * 32 + "\n",
    "sha256:" + "AB" * 32,
    "ed25519:" + "00" * 32 + "\n",
    "2026-12-01T00:00:00Z\n",
    "\u0662\u0660\u0662\u0666-12-01T00:00:00Z"  # Arabic-Indic digits,
    "kernel\n",
    "\ufeff",
    "\x00",
    "\u2028",
    -1,
    0,
    1,
    2**63 - 1,
    2**63,
    True,
    False,
]
# Integers a manifest can hold (canonical JSON refuses more than 20 digits).
json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=12)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
hostile = st.one_of(st.sampled_from(HOSTILE_TOKENS), json_values)


def tweak_string(data: st.DataObject, text: str) -> Any:
    how = data.draw(st.sampled_from(["newline", "space", "dotdot", "upper", "nul", "cut", "grow"]))
    if how == "newline":
        return text + "\n"
    if how == "space":
        return " " + text
    if how == "dotdot":
        return "../" + text
    if how == "upper":
        return text.upper()
    if how == "nul":
        return text + "\x00"
    if how == "cut":
        return text[: data.draw(st.integers(0, max(0, len(text) - 1)))]
    return text + data.draw(st.text(min_size=1, max_size=4))


def tweak_int(data: st.DataObject, number: int) -> Any:
    return data.draw(
        st.sampled_from(
            [number + 1, number - 1, -number - 1, number * 2**63, Raw(f"{number}.0"), str(number)]
        )
    )


def containers(tree: Any) -> list[Any]:
    """Every object and array in ``tree``, outermost first."""
    found: list[Any] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, Obj):
            found.append(node)
            stack.extend(v for _, v in node.pairs)
        elif isinstance(node, list):
            found.append(node)
            stack.extend(node)
    return found


def mutate_tree(data: st.DataObject, tree: Any) -> None:
    """One structured mutation, in place, somewhere in ``tree``."""
    node = data.draw(st.sampled_from(containers(tree)))
    items: list[Any] = node.pairs if isinstance(node, Obj) else node
    op = data.draw(st.sampled_from(["replace", "tweak", "delete", "duplicate", "insert", "rekey"]))
    if not items or op == "insert":
        value = data.draw(hostile)
        key = data.draw(st.sampled_from(["extra", "signatures", "kernel", "x\n"]) | st.text())
        items.insert(
            data.draw(st.integers(0, len(items))), (key, value) if node is not items else value
        )
        return
    index = data.draw(st.integers(0, len(items) - 1))
    key, value = items[index] if isinstance(node, Obj) else (None, items[index])
    if op == "delete":
        del items[index]
        return
    if op == "duplicate":
        again = value if data.draw(st.booleans()) else data.draw(hostile)
        items.insert(index + 1, (key, again) if key is not None else again)
        return
    if op == "rekey" and key is not None:
        items[index] = (tweak_string(data, key), value)
        return
    if op == "tweak" and isinstance(value, str):
        new = tweak_string(data, value)
    elif op == "tweak" and isinstance(value, int) and not isinstance(value, bool):
        new = tweak_int(data, value)
    else:
        new = data.draw(hostile)
    items[index] = (key, new) if key is not None else new


def mutate_bytes(data: st.DataObject, raw: bytes) -> bytes:
    """One byte-level mutation: a flipped bit, bytes inserted or cut, a BOM, a trailing line."""
    op = data.draw(
        st.sampled_from(["flip", "insert", "delete", "truncate", "append", "prefix", "set"])
    )
    at = data.draw(st.integers(0, max(0, len(raw) - 1)))
    if op == "flip" and raw:
        return raw[:at] + bytes([raw[at] ^ (1 << data.draw(st.integers(0, 7)))]) + raw[at + 1 :]
    if op == "set" and raw:
        byte = data.draw(st.sampled_from([0x00, 0x0A, 0x22, 0x5C, 0x7F, 0x80, 0xC0, 0xFF]))
        return raw[:at] + bytes([byte]) + raw[at + 1 :]
    if op == "insert":
        return raw[:at] + data.draw(st.binary(min_size=1, max_size=8)) + raw[at:]
    if op == "delete":
        return raw[:at] + raw[at + data.draw(st.integers(1, 16)) :]
    if op == "truncate":
        return raw[:at]
    if op == "prefix":
        return data.draw(st.sampled_from([b"\xef\xbb\xbf", b" ", b"\x00", b"[", b"{"])) + raw
    return raw + data.draw(st.sampled_from([b"\n", b"\r\n", b" ", b"\x00", b"{}", b",", b"\xff"]))


def leaves(tree: Any) -> list[tuple[Any, int]]:
    """(container, index) of every string or integer in ``tree`` outside ``signatures``."""
    found: list[tuple[Any, int]] = []
    for node in containers(tree):
        if isinstance(node, Obj):
            found += [
                (node, i)
                for i, (k, v) in enumerate(node.pairs)
                if isinstance(v, str | int) and not isinstance(v, bool)
            ]
        else:
            found += [(node, i) for i, v in enumerate(node) if isinstance(v, str | int)]
    return found


HEX = frozenset("0123456789abcdef")


def subtle(data: st.DataObject, tree: Obj) -> None:
    """A change a signer could have made: one character or one unit, the type kept."""
    node, index = data.draw(st.sampled_from(leaves(tree)))
    key, value = node.pairs[index] if isinstance(node, Obj) else (None, node[index])
    if isinstance(value, int):
        new: Any = value + data.draw(st.sampled_from([1, -1])) if value else 1
    else:
        at = data.draw(st.integers(0, max(0, len(value) - 1)))
        same_kind = "0123456789abcdef" if value[at : at + 1] in HEX else "aZ.-_/"
        new = value[:at] + data.draw(st.sampled_from(same_kind)) + value[at + 1 :]
    if isinstance(node, Obj):
        node.pairs[index] = (key, new)
    else:
        node[index] = new


def mutated(data: st.DataObject, document: dict[str, Any]) -> bytes:
    """``document`` serialised after one kind of damage, from subtle to hostile."""
    body = {k: v for k, v in document.items() if k != "signatures"}
    tree = Obj([(k, to_tree(v)) for k, v in body.items()])
    signatures = to_tree(document.get("signatures", []))
    how = data.draw(
        st.sampled_from(["hostile", "subtle", "subtle", "bytes", "signatures", "layout"])
    )
    if how == "hostile":
        for _ in range(data.draw(st.integers(1, 3))):
            mutate_tree(data, tree)
    elif how == "subtle":
        subtle(data, tree)
    elif how == "signatures":  # outside the signed bytes: must change nothing that counts
        mutate_tree(data, signatures)
    if how == "layout":
        shuffled = data.draw(st.permutations(list(document.items())))
        raw = json.dumps(
            dict(shuffled), indent=data.draw(st.sampled_from([None, 0, 1, "\t"]))
        ).encode()
    else:
        tree.pairs.append(("signatures", signatures))
        raw = encode(emit(tree))
    if how == "bytes" or data.draw(st.integers(0, 4)) == 0:
        raw = mutate_bytes(data, raw)
    return raw


# --- valid signed manifests -----------------------------------------------------------------
names = st.from_regex(r"[a-z0-9_-]{1,10}", fullmatch=True)
segments = st.from_regex(r"[A-Za-z0-9._~-]{1,10}", fullmatch=True).filter(
    lambda s: s not in (".", "..")
)
paths = st.lists(segments, min_size=1, max_size=3).map("/".join)
mirror_urls = st.builds(
    lambda scheme, host, path: f"{scheme}://{host}/{path}",
    st.sampled_from(["http", "https"]),
    st.from_regex(r"[a-z0-9.-]{1,16}(:[0-9]{1,5})?", fullmatch=True),
    paths,
)
artifacts = st.fixed_dictionaries(
    {
        "hash": st.binary(min_size=32, max_size=32).map(lambda b: "sha256:" + b.hex()),
        "size": st.integers(0, MAX_SIZE),
        "path": paths,
    },
    optional={"urls": st.lists(mirror_urls, max_size=2)},
)
one_line = st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=40)


@st.composite
def signed_documents(draw: st.DrawFn) -> dict[str, Any]:
    arts = draw(st.dictionaries(names, artifacts, max_size=3))
    arts["kernel"] = draw(artifacts)
    document = build_document(
        version=draw(one_line),
        sequence=draw(st.integers(0, MAX_SEQUENCE)),
        channel=draw(st.from_regex(r"[a-z0-9][a-z0-9_-]{0,12}", fullmatch=True)),
        arch=draw(st.sampled_from(["x86_64", "arm64", "riscv64", "a"])),
        created_at=draw(st.integers(CREATED - 10**8, NOW)),
        expires_at=draw(st.integers(NOW + 1, NOW + 10**9)),
        artifacts=arts,
        cmdline=draw(st.none() | one_line),
    )
    for name, value in draw(
        st.dictionaries(st.sampled_from(["note", "extra"]), json_values)
    ).items():
        document[name] = value  # unknown members are allowed, and signed like the rest
    document = sign_document(document, KEY)
    if draw(st.booleans()):
        document = sign_document(document, STRANGER)
    return document


def serialisations(document: dict[str, Any]) -> list[bytes]:
    """The same document as a signer, a minifier or a pretty-printer would write it."""
    return [
        dump_document(document),
        canonical_bytes(document),
        json.dumps(document, ensure_ascii=True).encode(),
        json.dumps(document, indent="\t", separators=(" ,", " : ")).encode() + b"\r\n",
    ]


def check_invariants(manifest: Manifest) -> None:
    """What a Manifest promises to every later step (fetch, kexec-boot)."""
    assert CHANNEL_RE.match(manifest.channel) and CHANNEL_RE.match(manifest.arch)
    assert 0 <= manifest.sequence <= MAX_SEQUENCE
    assert manifest.created_at < manifest.expires_at
    assert "kernel" in manifest.artifacts
    for name, artifact in manifest.artifacts.items():
        assert ARTIFACT_NAME_RE.match(name) and artifact.name == name
        assert HASH_RE.match(artifact.hash) and len(artifact.sha256) == 64
        assert 0 <= artifact.size <= MAX_SIZE
        segs = artifact.path.split("/")
        assert all(PATH_SEGMENT_RE.match(s) and s not in (".", "..") for s in segs)
        assert all(MIRROR_URL_RE.match(u) for u in artifact.urls)
    for signature in manifest.signatures:
        assert KEYID_RE.match(signature.keyid) and len(signature.sig) == 64
    assert manifest.cmdline is None or "\n" not in manifest.cmdline
    # The signed bytes come from the parsed object, and parsing them again gives it back.
    assert manifest.signed_bytes() == manifest.signed


def check_loads_strict(raw: bytes) -> None:
    """DocumentError, or canonical JSON that survives its own round trip."""
    try:
        value = loads_strict(raw)
    except DocumentError:
        event("refused")
        return
    event("parsed")
    assert loads_strict(canonical_bytes(value)) == value


# --- targets ----------------------------------------------------------------------------------
@fuzz_settings(300)
@given(st.binary(max_size=300))
@example(b"1" + b"0" * 5000)
@example(b"[" * 100_000)
@example(b'{"a":1,"a":1}')
@example(b"\xef\xbb\xbf{}")
@example(b'"\\ud800"')
@example(b"[NaN, 1.5]")
def test_loads_strict_any_bytes(raw: bytes) -> None:
    check_loads_strict(raw)


@fuzz_settings(200)
@given(json_values, st.data())
def test_loads_strict_mutated_json(value: Any, data: st.DataObject) -> None:
    raw = canonical_bytes(value)
    assert loads_strict(raw) == value
    tree = to_tree(value)
    if containers(tree):
        for _ in range(data.draw(st.integers(1, 3))):
            mutate_tree(data, tree)
        raw = encode(emit(tree))
    check_loads_strict(mutate_bytes(data, raw) if data.draw(st.booleans()) else raw)


@fuzz_settings(200)
@given(st.binary(max_size=400) | json_values.map(lambda v: canonical_bytes(v)))
def test_parse_manifest_any_bytes(raw: bytes) -> None:
    try:
        manifest = parse_manifest(raw)
    except ManifestError:
        event("refused")
        return
    event("parsed")
    check_invariants(manifest)


@fuzz_settings(60)
@given(signed_documents(), st.integers(0, 3))
def test_valid_signed_manifest_round_trips_and_verifies(
    document: dict[str, Any], form: int
) -> None:
    manifest = parse_manifest(serialisations(document)[form])
    check_invariants(manifest)
    assert manifest.document == document
    again = parse_manifest(canonical_bytes(dict(manifest.document)))
    assert again == manifest and again.signed_bytes() == manifest.signed_bytes()
    verified = verify_bytes(canonical_bytes(document), POLICY, system_now=NOW)
    assert verified.signed_by == (KEY.public.keyid,)


@fuzz_settings(250)
@given(signed_documents(), st.data())
def test_mutated_signed_manifest_never_verifies_unless_unchanged(
    document: dict[str, Any], data: st.DataObject
) -> None:
    original = parse_manifest(canonical_bytes(document)).signed_bytes()
    raw = mutated(data, document)
    try:
        manifest = parse_manifest(raw)
    except ManifestError:
        manifest = None
    if manifest is not None:
        check_invariants(manifest)
    try:
        verified = verify_bytes(raw, POLICY, system_now=NOW)
    except PhaseError as exc:
        event(f"refused: {type(exc).__name__}")
        return
    event("verified (mutation outside the signed content)")
    # It verified: then the mutation touched nothing the signature covers (layout, the
    # signatures list, a member of a signature object).
    assert manifest is not None
    assert verified.manifest.signed_bytes() == original
