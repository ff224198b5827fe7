"""The query cache: LRU with a TTL, keyed so that a stale result can never be served.

The key is the normalized query, the search arguments and the generation number of every project searched
(``generations``). A write to a project bumps its generation after its transaction commits, so entries made
before the write are simply never looked up again (and age out of the LRU); ``forget_project`` also drops
them at once when a project is deleted. Hits and misses are counted for ``status``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any


def normalize_query(query: str) -> str:
    return " ".join(query.casefold().split())


class QueryCache:
    def __init__(self, entries: int, ttl_s: float):
        self.max_entries = entries
        self.ttl_s = ttl_s
        self._entries: OrderedDict[Hashable, tuple[float, frozenset[str], Any]] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.expired = 0

    def configure(self, entries: int, ttl_s: float) -> None:
        self.max_entries, self.ttl_s = entries, ttl_s
        self._trim()

    def get(self, key: Hashable) -> Any | None:
        if not self.max_entries:
            return None
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        stored_at, _, value = entry
        if self.ttl_s and time.monotonic() - stored_at > self.ttl_s:
            del self._entries[key]
            self.expired += 1
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: Hashable, projects: frozenset[str], value: Any) -> None:
        if not self.max_entries:
            return
        self._entries[key] = (time.monotonic(), projects, value)
        self._entries.move_to_end(key)
        self._trim()

    def forget_project(self, project: str) -> int:
        stale = [key for key, (_, projects, _) in self._entries.items() if project in projects]
        for key in stale:
            del self._entries[key]
        return len(stale)

    def clear(self) -> None:
        self._entries.clear()

    def _trim(self) -> None:
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> dict[str, Any]:
        total = self.hits + self.misses
        return {"entries": len(self._entries), "max_entries": self.max_entries, "ttl_s": self.ttl_s,
                "hits": self.hits, "misses": self.misses, "expired": self.expired,
                "hit_rate": round(self.hits / total, 4) if total else 0.0}
