"""The errors of the libp2p package. ``Libp2pError`` is a ``PhaseError`` (a peer or an input
that cannot be used); ``ProtocolError`` is a peer breaking the protocol (garbage, oversized
frames, bad signatures): the connection is dropped, the lookup goes on without that peer."""

from __future__ import annotations

from ..errors import PhaseError, UsageError


class Libp2pError(PhaseError):
    """A libp2p peer could not be used (unreachable, refused, timed out)."""

    reason = "libp2p"


class ProtocolError(Libp2pError):
    """A peer sent something the protocol forbids or that exceeds our bounds."""


class MultiaddrError(UsageError, ValueError):
    """A multiaddr (text or binary) that cannot be parsed or is not supported here."""
