"""The versioned root of trust (docs/trust.md). Pure: no sockets, no files, no clock.

A root document names the keys of each role (``root``: who signs the next root; ``release``: who
signs manifests) with a threshold per role. ``parse_root`` turns untrusted bytes into a validated
``Root``; ``check_step`` decides whether a root may follow the one held (version exactly N+1,
signed by a threshold of the old *and* of its own root keys); ``walk`` follows a chain, asking a
caller-supplied function for each next document only after the one before verified, bounded in
steps; ``check_fresh`` refuses an expired final root; ``release_policy`` is the ``TrustPolicy``
manifests are verified against. Bare ``--key``/``--keys-dir`` keys are ``root_from_keys``: a
version-1 root with those keys in every role.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from .canonical import canonical_bytes, loads_strict
from .errors import (
    DocumentError,
    ExpiredError,
    ManifestError,
    RollbackError,
    RootChainError,
    RootError,
    VerificationError,
)
from .keys import KEYID_RE, PublicKey, SigningKey
from .manifest import Signature, _parse_signatures
from .timefmt import format_utc, parse_utc
from .trust import TrustPolicy, valid_signers

ROOT_FORMAT = 1
SIGNED_PREFIX = b"phase-root-v1\n"
MAX_ROOT_BYTES = 512 * 1024  # the one cap on a root document, wherever it is read
MAX_CHAIN_STEPS = 32  # roots accepted per walk; the next run goes on from there
MAX_ROLE_KEYS = 256
MAX_VERSION = 2**63 - 1
ROOT_ROLE = "root"
RELEASE_ROLE = "release"
REQUIRED_ROLES = (ROOT_ROLE, RELEASE_ROLE)


class Role(NamedTuple):
    keys: tuple[PublicKey, ...]
    threshold: int

    def to_json(self) -> dict[str, Any]:
        return {"keys": [key.keyid for key in self.keys], "threshold": self.threshold}


class Root(NamedTuple):
    """A validated (not yet trusted) root. ``expires_at`` None: a root made from bare keys,
    which never expires; ``document`` None for the same (there is no document to serve)."""

    version: int
    expires_at: int | None
    roles: Mapping[str, Role]
    signatures: tuple[Signature, ...] = ()
    document: Mapping[str, Any] | None = None
    signed: bytes = b""  # the bytes signatures cover (signed_bytes_of ``document``)

    @property
    def root_role(self) -> Role:
        return self.roles[ROOT_ROLE]

    @property
    def release_role(self) -> Role:
        return self.roles[RELEASE_ROLE]

    @property
    def digest(self) -> str:
        """sha256 of the signed bytes ('' for a root made from keys)."""
        return hashlib.sha256(self.signed).hexdigest() if self.signed else ""

    def to_json(self) -> dict[str, Any]:
        """What --json reports of the root a manifest was verified against."""
        return {
            "version": self.version,
            "expires_at": None if self.expires_at is None else format_utc(self.expires_at),
            "digest": self.digest or None,
            "release": self.release_role.to_json(),
        }


def root_from_keys(keys: Iterable[PublicKey], threshold: int = 1) -> Root:
    """``--key``/``--keys-dir`` as a root: version 1, these keys in every role, never expiring.
    The key and threshold checks (and their messages) are the ones a bare TrustPolicy makes."""
    policy = TrustPolicy(keys=tuple(keys), threshold=threshold)
    role = Role(policy.keys, policy.threshold)
    return Root(
        version=1, expires_at=None, roles=MappingProxyType(dict.fromkeys(REQUIRED_ROLES, role))
    )


def release_policy(root: Root, channel: str | None = None, arch: str | None = None) -> TrustPolicy:
    """The policy manifests are verified against: the release keys and threshold of ``root``."""
    role = root.release_role
    return TrustPolicy(keys=role.keys, threshold=role.threshold, channel=channel, arch=arch)


# -- the document -----------------------------------------------------------------------------


def signed_bytes_of(document: Mapping[str, Any]) -> bytes:
    """The bytes signatures cover: the root's own prefix + canonical JSON without signatures."""
    body = {k: v for k, v in document.items() if k != "signatures"}
    try:
        return SIGNED_PREFIX + canonical_bytes(body)
    except DocumentError as exc:
        raise RootError(str(exc)) from exc


def _field(document: Mapping[str, Any], key: str, kind: type, where: str = "") -> Any:
    if key not in document:
        raise RootError(f"{where}missing field {key!r}")
    value = document[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        noun = {int: "an integer", str: "a string", dict: "an object", list: "an array"}[kind]
        raise RootError(f"{where}field {key!r} must be {noun}")
    return value


def _parse_role(name: str, entry: Any) -> Role:
    where = f"role {name!r}: "
    if not isinstance(entry, dict):
        raise RootError(f"{where}must be an object")
    keyids = _field(entry, "keys", list, where)
    if not 1 <= len(keyids) <= MAX_ROLE_KEYS:
        raise RootError(f"{where}must name 1 to {MAX_ROLE_KEYS} keys")
    keys: list[PublicKey] = []
    for keyid in keyids:
        if not isinstance(keyid, str) or not KEYID_RE.match(keyid):
            raise RootError(f"{where}keys must be ed25519:<64 lower-case hex digits>")
        keys.append(PublicKey.from_raw(bytes.fromhex(keyid.split(":", 1)[1])))
    if len({key.raw for key in keys}) != len(keys):
        raise RootError(f"{where}names a key twice")
    threshold = _field(entry, "threshold", int, where)
    if not 1 <= threshold <= len(keys):
        raise RootError(f"{where}threshold must be 1 to {len(keys)} (the number of its keys)")
    return Role(tuple(keys), threshold)


def root_from_document(document: Any) -> Root:
    """Validate a parsed JSON value as a format-1 root document."""
    if not isinstance(document, dict):
        raise RootError("a root must be a JSON object")
    if _field(document, "root_format", int) != ROOT_FORMAT:
        raise RootError(f"unsupported root_format (this tool reads {ROOT_FORMAT})")
    version = _field(document, "version", int)
    if not 1 <= version <= MAX_VERSION:
        raise RootError("field 'version' must be a positive integer")
    try:
        expires_at = parse_utc(_field(document, "expires_at", str))
    except ValueError as exc:
        raise RootError(f"field 'expires_at': {exc}") from exc
    raw_roles = _field(document, "roles", dict)
    for name in REQUIRED_ROLES:
        if name not in raw_roles:
            raise RootError(f"role {name!r} is required")
    roles = {name: _parse_role(name, entry) for name, entry in sorted(raw_roles.items())}
    try:  # one signature format for manifests and roots
        signatures = _parse_signatures(document.get("signatures", []))
    except ManifestError as exc:
        raise RootError(str(exc)) from exc
    return Root(
        version=version,
        expires_at=expires_at,
        roles=MappingProxyType(roles),
        signatures=signatures,
        document=MappingProxyType(document),
        signed=signed_bytes_of(document),
    )


def root_too_large(size: int | None = None, where: str = "") -> RootError:
    """The refusal of a root over ``MAX_ROOT_BYTES`` (``size``: when it is known)."""
    what = "is larger than" if size is None else f"is {size} bytes, over"
    return RootError(f"{where}{': ' if where else ''}root {what} the 512 KiB limit")


def parse_root(data: bytes) -> Root:
    """Untrusted bytes -> validated (not yet trusted) Root; refused past 512 KiB unparsed."""
    if len(data) > MAX_ROOT_BYTES:
        raise root_too_large()
    try:
        document = loads_strict(data)
    except DocumentError as exc:
        raise RootError(str(exc)) from exc
    return root_from_document(document)


def build_root_document(version: int, expires_at: int, roles: Mapping[str, Role]) -> dict[str, Any]:
    """A new unsigned root document, validated."""
    document: dict[str, Any] = {
        "root_format": ROOT_FORMAT,
        "version": version,
        "expires_at": format_utc(expires_at),
        "roles": {name: role.to_json() for name, role in sorted(roles.items())},
        "signatures": [],
    }
    root_from_document(document)
    return document


def sign_root_document(document: Mapping[str, Any], key: SigningKey) -> dict[str, Any]:
    """A copy of ``document`` with ``key``'s signature added (replacing an older one by it)."""
    root_from_document(dict(document))
    signature = base64.b64encode(key.sign(signed_bytes_of(document))).decode("ascii")
    keyid = key.public.keyid
    others = [s for s in document.get("signatures", []) if s.get("keyid") != keyid]
    return {**document, "signatures": [*others, {"keyid": keyid, "sig": signature}]}


# -- the rules --------------------------------------------------------------------------------


def signers(root: Root, role: Role) -> tuple[str, ...]:
    """Keyids of ``role``'s keys with a valid signature over ``root``."""
    return valid_signers(root.signed, root.signatures, role.keys)


def _require(root: Root, role: Role, whose: str) -> None:
    got = len(signers(root, role))
    if got < role.threshold:
        raise RootChainError(
            f"root {root.version} is signed by {got} of the {role.threshold} required "
            f"root keys of {whose}"
        )


def check_step(held: Root, candidate: Root) -> None:
    """Raise unless ``candidate`` may follow ``held``: version exactly N+1, signed by a
    threshold of ``held``'s root keys and a threshold of its own (expiry is not looked at:
    only the final root of a walk must be fresh)."""
    if candidate.version < held.version:
        raise RollbackError(
            f"root version {candidate.version} is lower than {held.version}, already trusted"
        )
    if candidate.version == held.version:
        if candidate.digest != held.digest:
            raise RootChainError(f"fork: another root of version {held.version} is trusted")
        raise RootChainError(f"root version {held.version} is the one held, not a newer one")
    if candidate.version != held.version + 1:
        raise RootChainError(
            f"gap: root version {candidate.version} cannot follow {held.version} "
            f"(want {held.version + 1})"
        )
    _require(candidate, held.root_role, f"root {held.version}")
    _require(candidate, candidate.root_role, "itself")


def check_self_signed(root: Root) -> None:
    """A root a client starts from (built in, or named by --root) must be signed by a threshold
    of its own root keys: anything else is a mistake in the making of it."""
    _require(root, root.root_role, "itself")


def check_fresh(root: Root, now: int) -> None:
    """The final root of a walk must not be expired (``now``: the effective time, as for
    manifests). A root made from bare keys never expires."""
    if root.expires_at is not None and root.expires_at <= now:
        raise ExpiredError(
            f"root version {root.version} expired at {format_utc(root.expires_at)} "
            f"(now is {format_utc(now)}): a newer root is needed"
        )


def accept(held: Root, data: bytes) -> Root:
    """Parse untrusted bytes and check them as the root following ``held``."""
    candidate = parse_root(data)
    check_step(held, candidate)
    return candidate


# Where a document came from (for messages) and its bytes; a source with nothing yields nothing.
Candidates = Callable[[int], Iterable[tuple[str, bytes]]]


class Walk(NamedTuple):
    """The result of a walk: the newest root accepted, the roots accepted past the starting
    one (in order), why candidates were refused, and whether it stopped at the step bound."""

    start: Root
    steps: tuple[Root, ...]
    refused: tuple[str, ...] = ()
    bounded: bool = False

    @property
    def root(self) -> Root:
        return self.steps[-1] if self.steps else self.start


def walk(start: Root, candidates: Candidates, max_steps: int = MAX_CHAIN_STEPS) -> Walk:
    """Follow the chain from ``start``: ``candidates(N)`` yields copies of root N, lazily (the
    first copy that verifies wins, the others are never asked); it is called for N+1 only after
    root N verified. A copy that fails is that copy's failure (recorded in ``refused``); the walk
    ends when no copy of the next root verifies, or after ``max_steps`` roots."""
    held = start
    steps: list[Root] = []
    refused: list[str] = []
    while held.version < MAX_VERSION:
        if len(steps) >= max_steps:
            return Walk(start, tuple(steps), tuple(refused), bounded=True)
        following: Root | None = None
        for where, data in candidates(held.version + 1):
            try:
                following = accept(held, data)
            except (DocumentError, VerificationError) as exc:
                refused.append(f"{where}: {exc}")
                continue
            break
        if following is None:
            break
        steps.append(following)
        held = following
    return Walk(start, tuple(steps), tuple(refused))


def servable_chain(files: Mapping[int, bytes]) -> tuple[dict[int, bytes], dict[int, str]]:
    """What a provider may serve of the root files it was given (version -> bytes): the
    unbroken run from the lowest version, that one signed by its own root keys and each next
    one accepted after it; the rest refused, with the reason (version -> reason)."""
    served: dict[int, bytes] = {}
    refused: dict[int, str] = {}
    held: Root | None = None
    for version in sorted(files):
        data = files[version]
        try:
            if held is None:
                root = parse_root(data)
                check_self_signed(root)
            elif version != held.version + 1:
                raise RootChainError(f"gap: no root version {held.version + 1}")
            else:
                root = accept(held, data)
            if root.version != version:
                raise RootChainError(f"the file of version {version} holds {root.version}")
        except (DocumentError, VerificationError) as exc:
            refused[version] = str(exc)
            if held is not None:
                refused.update((v, "after a refused root") for v in files if v > version)
                break
            continue
        served[version] = data
        held = root
    return served, refused
