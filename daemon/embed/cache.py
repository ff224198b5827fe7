"""The embedding cache: an LRU of normalized vectors keyed by (model id, text hash).

Used from the event loop only (``EmbedEngine.embed`` runs there), so it needs no lock. The text hash is a 16-byte
BLAKE2b of the UTF-8 text: collisions are not a practical concern and the key stays small whatever the text.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np


def text_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class EmbeddingCache:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self._entries: OrderedDict[tuple[str, bytes], np.ndarray] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, model_id: str, key: bytes) -> np.ndarray | None:
        if self.capacity == 0:
            self.misses += 1
            return None
        vector = self._entries.get((model_id, key))
        if vector is None:
            self.misses += 1
            return None
        self._entries.move_to_end((model_id, key))
        self.hits += 1
        return vector

    def put(self, model_id: str, key: bytes, vector: np.ndarray) -> None:
        if self.capacity == 0:
            return
        entry = (model_id, key)
        self._entries[entry] = vector
        self._entries.move_to_end(entry)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def stats(self) -> dict[str, int]:
        return {"entries": len(self._entries), "capacity": self.capacity, "hits": self.hits, "misses": self.misses}
