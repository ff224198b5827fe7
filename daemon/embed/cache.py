"""The embedding cache: an LRU of normalized vectors keyed by (model id, text hash), bounded in entries and in
bytes (``embed.cache_entries``, ``embed.cache_max_mb``; ``daemon/lru.py``).

Used from the event loop only (``EmbedEngine.embed`` runs there), so it needs no lock. The text hash is a 16-byte
BLAKE2b of the UTF-8 text: collisions are not a practical concern and the key stays small whatever the text.
A vector's size is known without walking it (its buffer plus the array header).
"""

from __future__ import annotations

import hashlib
import sys
from typing import Any

import numpy as np

from ..lru import BoundedLRU


def text_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _vector_size(vector: np.ndarray) -> int:
    return sys.getsizeof(vector) + (0 if vector.flags.owndata else vector.nbytes) + 33 + 16  # + key bytes object


class EmbeddingCache:
    def __init__(self, capacity: int, max_bytes: int = 1 << 62):
        self._lru = BoundedLRU(capacity, max_bytes, sizer=_vector_size)

    @property
    def capacity(self) -> int:
        return self._lru.max_entries

    def __len__(self) -> int:
        return len(self._lru)

    def get(self, model_id: str, key: bytes) -> np.ndarray | None:
        if not self._lru.enabled:
            self._lru.misses += 1
            return None
        return self._lru.get((model_id, key))

    def put(self, model_id: str, key: bytes, vector: np.ndarray) -> None:
        self._lru.put((model_id, key), vector)

    def clear(self) -> None:
        self._lru.clear()

    def stats(self) -> dict[str, Any]:
        stats = self._lru.stats()
        return {"entries": stats["entries"], "capacity": stats["max_entries"], "bytes": stats["bytes"],
                "max_bytes": stats["max_bytes"], "hits": stats["hits"], "misses": stats["misses"],
                "evicted": stats["evicted"]}
