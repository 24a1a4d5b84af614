"""Every error a user can see, with its exit code; and the exit-code table itself.

One tree::

    PhaseError                      exit 1 unless a subclass says otherwise
    ├── UsageError                  exit 2: bad command line, unreadable key or configuration
    │   └── KeyFormatError          a key file or inline key that cannot be parsed
    ├── LocalError                  exit 2: our side failed (disk full, unwritable output)
    ├── StageError                  exit 2: kexec's private staging directory cannot be made
    │   └── InsufficientMemoryError too little MemAvailable to stage and load the image
    ├── DocumentError               malformed input: canonical JSON and the formats built on it
    │   ├── ManifestError           a manifest (not JSON, wrong types, missing fields, too large)
    │   ├── RecordError             a DHT provider record that must not be stored or believed
    │   ├── RootError               a root document (root.json) that is malformed or too large
    │   └── TxtError                an mDNS TXT record a provider must not send or a client ignores
    ├── VerificationError           well formed, but must not be trusted
    │   ├── SignatureError, ExpiredError, RollbackError, MismatchError
    │   └── RootChainError          a root that must not follow the one held (gap, fork, thresholds)
    ├── StateError                  the rollback state directory cannot be read or written
    ├── IntegrityError              bytes on disk or on the wire differ from the signed manifest
    └── NoSourceError               exit 3: no provider or source could be reached / nothing found

``reason`` is the short word a failure is reported with (``FAILED: <reason>: ...`` and the
``--json`` envelope's ``error.reason``). Control-flow exceptions that never reach a user (a cut
connection to resume, a source to skip) stay private to their modules.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERNAL = 70  # EX_SOFTWARE of sysexits.h
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C

# The one exit-code table: every --help epilog and README's table say this.
EXIT_CODES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "success"),
    (EXIT_FAILED, "verification or integrity failure"),
    (EXIT_USAGE, "usage error, unreadable key or configuration"),
    (EXIT_UNREACHABLE, "no source reachable / nothing found"),
    (EXIT_INTERNAL, "internal error (a bug: one line, -v for the traceback)"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C)"),
)


class PhaseError(Exception):
    """Base class; ``exit_code`` is what a command returns when this escapes to it."""

    exit_code = EXIT_FAILED
    reason = "failed"


class UsageError(PhaseError):
    """Bad command-line input, unreadable key file, bad configuration."""

    exit_code = EXIT_USAGE
    reason = "usage"


class KeyFormatError(UsageError):
    """A key file or inline key that cannot be parsed."""


class LocalError(PhaseError):
    """Our side failed (disk full, unwritable output): no source is to blame."""

    exit_code = EXIT_USAGE
    reason = "local"


class StageError(PhaseError):
    """The private staging directory cannot be made or written (exists, unsafe parent, no
    space)."""

    exit_code = EXIT_USAGE
    reason = "stage"


class InsufficientMemoryError(StageError):
    """The machine has too little available memory to stage and load the image for kexec."""

    reason = "memory"


class DocumentError(PhaseError):
    """Structured input that is malformed: not canonical-JSON-safe (floats, duplicate keys, too
    deep, invalid UTF-8) or not the shape its format requires. ``canonical`` raises this one;
    each format built on canonical JSON raises its own subclass."""

    reason = "malformed"


class ManifestError(DocumentError):
    """The manifest is malformed: not JSON, wrong types, missing fields, too large."""


class RecordError(DocumentError):
    """A DHT provider record that must not be stored or believed."""


class RootError(DocumentError):
    """A root document (docs/trust.md) that is malformed: not canonical JSON, wrong types, bad
    roles or thresholds, too large."""


class TxtError(DocumentError, ValueError):
    """An mDNS TXT record that a provider must not send or a client must ignore (also a
    ValueError, as it always was, for callers that catch that)."""


class VerificationError(PhaseError):
    """The manifest is well formed but must not be trusted."""

    reason = "verification"


class SignatureError(VerificationError):
    reason = "signature"


class ExpiredError(VerificationError):
    reason = "expired"


class RollbackError(VerificationError):
    reason = "rollback"


class MismatchError(VerificationError):
    """Right signature, wrong software: channel or arch differ from what was asked."""

    reason = "mismatch"


class RootChainError(VerificationError):
    """A well-formed root that must not follow the root held: not exactly the next version (a
    gap, a fork), or not signed by a threshold of the old and of its own root keys."""

    reason = "root"


class StateError(PhaseError):
    """The rollback-protection state directory cannot be read or written."""

    reason = "state"


class IntegrityError(PhaseError):
    """Downloaded or on-disk bytes do not match the signed manifest."""

    reason = "integrity"


class NoSourceError(PhaseError):
    """No provider or source could be reached."""

    exit_code = EXIT_UNREACHABLE
    reason = "unreachable"
