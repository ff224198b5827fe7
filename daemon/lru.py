"""One bounded LRU for every cache of the daemon: a limit in entries AND in bytes, an optional TTL.

An entry count alone does not bound memory: one cached search result can hold eight 2 KB chunks or eight
20-character ones, so 500 entries are 50 KB or 10 MB depending on what was asked. Each entry therefore
carries its approximate size (``approx_size``: the Python objects it holds, walked once when it is stored) and
the least recently used entries are evicted while either limit is exceeded. Used from the event loop only (no
lock). A leaf module: the query cache, the recall cache and the embedding cache all build on it.
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import msgspec
import numpy as np

# What one OrderedDict slot, its key tuple and the (time, size, value) record cost beyond the value itself.
ENTRY_OVERHEAD = 200
_ATOMS = (str, bytes, bytearray, int, float, bool, type(None), memoryview)


def approx_size(value: Any, limit: int = 100_000) -> int:
    """Bytes held by ``value`` and what it references (containers, msgspec Structs, numpy arrays), each object
    counted once. Shared small objects (interned strings, small ints) are counted again per entry: an
    over-estimate, which is the safe side for a memory bound. ``limit`` caps the objects walked."""
    seen: set[int] = set()
    stack = [value]
    total = 0
    while stack and len(seen) < limit:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        total += sys.getsizeof(item)
        if isinstance(item, _ATOMS):
            continue
        if isinstance(item, np.ndarray):
            if item.base is not None or not item.flags.owndata:
                total += item.nbytes  # a view: getsizeof does not count the buffer it pins
            continue
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
        elif isinstance(item, msgspec.Struct):
            stack.extend(getattr(item, name) for name in item.__struct_fields__)
    return total


class BoundedLRU:
    """``get``/``put`` with hit, miss, expiry and eviction counts; ``max_entries == 0`` or ``max_bytes == 0``
    turns the cache off."""

    def __init__(self, max_entries: int, max_bytes: int, ttl_s: float = 0.0,
                 sizer: Callable[[Any], int] = approx_size):
        self.max_entries, self.max_bytes, self.ttl_s = max_entries, max_bytes, ttl_s
        self.sizer = sizer
        self._items: OrderedDict[Hashable, tuple[float, int, Any]] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = self.expired = self.evicted = 0

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0 and self.max_bytes > 0

    def configure(self, max_entries: int, max_bytes: int, ttl_s: float) -> None:
        self.max_entries, self.max_bytes, self.ttl_s = max_entries, max_bytes, ttl_s
        self._trim()

    def get(self, key: Hashable) -> Any | None:
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        stored_at, _, value = item
        if self.ttl_s and time.monotonic() - stored_at > self.ttl_s:
            self._drop(key)
            self.expired += 1
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: Hashable, value: Any) -> None:
        if not self.enabled:
            return
        size = self.sizer(value) + ENTRY_OVERHEAD
        if size > self.max_bytes:  # bigger than the whole cache: not worth evicting everything for
            self._drop(key)
            return
        self._drop(key)
        self._items[key] = (time.monotonic(), size, value)
        self.bytes += size
        self._trim()

    def discard_where(self, predicate: Callable[[Hashable, Any], bool]) -> int:
        stale = [key for key, (_, _, value) in self._items.items() if predicate(key, value)]
        for key in stale:
            self._drop(key)
        return len(stale)

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0

    def _drop(self, key: Hashable) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self.bytes -= item[1]

    def _trim(self) -> None:
        while self._items and (len(self._items) > self.max_entries or self.bytes > self.max_bytes):
            _, (_, size, _) = self._items.popitem(last=False)
            self.bytes -= size
            self.evicted += 1

    def __len__(self) -> int:
        return len(self._items)

    def stats(self) -> dict[str, Any]:
        total = self.hits + self.misses
        return {"entries": len(self._items), "max_entries": self.max_entries, "bytes": self.bytes,
                "max_bytes": self.max_bytes, "ttl_s": self.ttl_s, "hits": self.hits, "misses": self.misses,
                "expired": self.expired, "evicted": self.evicted,
                "hit_rate": round(self.hits / total, 4) if total else 0.0}
