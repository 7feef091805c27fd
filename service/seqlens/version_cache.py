"""Typed per-owner caches on a loaded version (its batcher, stateful runtime, state layout, PCA).

Each owner module declares a ``VersionCache[T]``; the values live in the version's own
``CacheSlots``, so they go away with the version, and ``versions.py`` needs to know none
of their types (they live in modules above it). docs/architecture.md, "Per-version caches".
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar, cast

T = TypeVar("T")


class CacheSlots:
    """The storage behind every cache of one version; only ``VersionCache`` reads it."""

    __slots__ = ("_values",)

    def __init__(self) -> None:
        self._values: dict[VersionCache[Any], Any] = {}

    def __repr__(self) -> str:
        return f"CacheSlots({', '.join(sorted(c.name for c in self._values))})"


class HasCaches(Protocol):
    @property
    def caches(self) -> CacheSlots: ...


class VersionCache(Generic[T]):
    """One owner's value per version, made at most once (``make`` runs under this cache's lock,
    so a slow fit is never done twice; readers of a made value take no lock)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"VersionCache({self.name!r})"

    def get(self, version: HasCaches) -> T | None:
        """The value made for ``version``, or None."""
        return cast("T | None", version.caches._values.get(self))

    def has(self, version: HasCaches) -> bool:
        return self in version.caches._values

    def get_or_make(self, version: HasCaches, make: Callable[[], T]) -> T:
        values = version.caches._values
        if self in values:
            return cast(T, values[self])
        with self._lock:
            if self not in values:
                values[self] = make()
            return cast(T, values[self])
