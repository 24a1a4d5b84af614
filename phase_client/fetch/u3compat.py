"""The one place phase-fetch reaches into urllib3's private parts.

urllib3's ``HTTPResponse`` wraps an ``http.client.HTTPResponse`` in the private attribute
``_fp``; that one holds the socket's buffered reader (``fp``), the bytes of the body still to come
(``length``, an int for a Content-Length body) and ``chunked``. Reading the body with the buffered
reader's ``readinto1`` fills our ring buffers straight from the socket, which urllib3's public
API cannot do (``read1`` returns new bytes; ``readinto`` blocks until the buffer is full, which
would blind the slow-source guard).

Tested against urllib3 2.x as pinned in pyproject.toml: ``tests/test_dependency_contracts.py``
checks every attribute used here on a real response and fails loudly when an upgrade changes
them. Anything unexpected here simply means "no fast path": the public ``read1`` is used.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol


class _Readinto1(Protocol):
    def readinto1(self, buffer: memoryview, /) -> int: ...


class RawBody(NamedTuple):
    """A Content-Length body, readable from the socket's buffered reader."""

    reader: _Readinto1
    length: int  # bytes of the body not yet read


def raw_body(response: Any) -> RawBody | None:
    """The buffered reader under a urllib3 response with a Content-Length body, else None
    (chunked, no length, or urllib3 no longer looks as it did)."""
    fp = getattr(response, "_fp", None)  # private: the http.client.HTTPResponse urllib3 wraps
    raw = getattr(fp, "fp", None)
    length = getattr(fp, "length", None)
    if (
        raw is not None
        and hasattr(raw, "readinto1")
        and getattr(fp, "chunked", True) is False
        and isinstance(length, int)
    ):
        return RawBody(raw, length)
    return None
