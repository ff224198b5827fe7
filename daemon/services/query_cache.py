"""The query cache: LRU with a TTL, bounded in entries and in bytes, keyed so that a stale result can never be
served.

The key is the normalized query, the search arguments and the generation number of every project searched
(``generations``). A write to a project bumps its generation after its transaction commits, so entries made
before the write are simply never looked up again (and age out of the LRU); ``forget_project`` also drops
them at once when a project is deleted. The byte bound (``search.cache_max_mb``) is what keeps memory flat: a
result quoting eight long chunks weighs a hundred times one quoting short ones (``daemon/lru.py``). Hits,
misses and bytes are counted for ``status``.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from ..lru import BoundedLRU


def normalize_query(query: str) -> str:
    return " ".join(query.casefold().split())


class QueryCache:
    def __init__(self, entries: int, ttl_s: float, max_bytes: int):
        self._lru = BoundedLRU(entries, max_bytes, ttl_s)

    @property
    def max_entries(self) -> int:
        return self._lru.max_entries

    def configure(self, entries: int, ttl_s: float, max_bytes: int) -> None:
        self._lru.configure(entries, max_bytes, ttl_s)

    def get(self, key: Hashable) -> Any | None:
        if not self._lru.enabled:
            return None
        entry = self._lru.get(key)
        return None if entry is None else entry[1]

    def put(self, key: Hashable, projects: frozenset[str], value: Any) -> None:
        self._lru.put(key, (projects, value))

    def forget_project(self, project: str) -> int:
        return self._lru.discard_where(lambda _, entry: project in entry[0])

    def clear(self) -> None:
        self._lru.clear()

    def __len__(self) -> int:
        return len(self._lru)

    def stats(self) -> dict[str, Any]:
        return self._lru.stats()
