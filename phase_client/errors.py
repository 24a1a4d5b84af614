"""Exception hierarchy. Every error a user can cause maps to one class and one exit code.

Exit codes shared by every command:
  0  success
  1  verification or integrity failure (the input was read but is not trustworthy)
  2  usage error, unreadable key or configuration
  3  no source reachable / nothing found (fetch, discover)
"""

from __future__ import annotations


class PhaseError(Exception):
    """Base class; ``exit_code`` is what a command returns when this escapes to it."""

    exit_code = 1


class UsageError(PhaseError):
    """Bad command-line input, unreadable key file, bad configuration."""

    exit_code = 2


class KeyFormatError(UsageError):
    """A key file or inline key that cannot be parsed."""


class ManifestError(PhaseError):
    """The manifest is malformed: not JSON, wrong types, missing fields, too large."""

    reason = "malformed"


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


class StateError(PhaseError):
    """The rollback-protection state directory cannot be read or written."""

    reason = "state"


class IntegrityError(PhaseError):
    """Downloaded or on-disk bytes do not match the signed manifest."""

    reason = "integrity"


class NoSourceError(PhaseError):
    """No provider or source could be reached."""

    exit_code = 3
    reason = "unreachable"
