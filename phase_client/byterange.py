"""One HTTP byte range, as both sides use it: the client asks for one (``Range``), the provider
answers one (``Content-Range``). Pure: no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple, Self


class _Bounds(NamedTuple):
    first: int
    last: int


class ByteRange(_Bounds):
    """Bytes ``first`` .. ``last`` inclusive (RFC 9110's first-pos and last-pos)."""

    __slots__ = ()

    def __new__(cls, first: int, last: int) -> ByteRange:
        if first < 0 or last < first:
            raise ValueError(f"bad byte range {first}-{last}")
        return super().__new__(cls, first, last)

    @classmethod
    def _make(cls, iterable: Iterable[Any]) -> Self:  # type: ignore[override]
        """Through ``__new__``'s check (``_replace`` comes here too), never around it.
        (The ignore: mypy types NamedTuple's own ``_make`` as generic over the tuple.)"""
        return cls(*iterable)

    @property
    def length(self) -> int:
        return self.last - self.first + 1

    def header(self) -> str:
        """The ``Range`` request header's value asking for exactly these bytes."""
        return f"bytes={self.first}-{self.last}"

    def content_range(self, size: int) -> str:
        """The ``Content-Range`` of a 206 answer with these bytes of a ``size``-byte file."""
        return f"bytes {self.first}-{self.last}/{size}"
