"""An in-memory stand-in for the ``vectors`` component (daemon/store/vectors.py), for in-process tests only.

Same surface as ``VectorIndex``: upsert/query/delete/drop/count/ensure/collection_name, cosine distances.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pirag.daemon.store.vectors import collection_name, compaction_is_due


class NumpyVectorIndex:
    name = "vectors"
    collection_name = staticmethod(collection_name)

    def __init__(self) -> None:
        self.collections: dict[str, dict[str, np.ndarray]] = {}
        self.fail = False
        self.deleted: dict[str, int] = {}      # deletions since the last (re)build, as VectorIndex counts them
        self.compactions = 0

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def stats(self) -> dict[str, Any]:
        return {"collections": len(self.collections)}

    def handlers(self) -> dict[str, Any]:
        return {}

    def _check(self) -> None:
        if self.fail:
            raise RuntimeError("index broken on purpose")

    async def upsert(self, collection: str, ids: Sequence[str], vectors: np.ndarray,
                     metadatas: Sequence[dict[str, Any]] | None = None) -> None:
        self._check()
        items = self.collections.setdefault(collection, {})
        for id_, vector in zip(ids, vectors):
            items[id_] = np.asarray(vector, np.float32)

    async def query(self, collection: str, vector: np.ndarray, k: int,
                    where: dict[str, Any] | None = None) -> list[tuple[str, float]]:
        self._check()
        items = self.collections.get(collection, {})
        if not items:
            return []
        ids = list(items)
        similarities = np.stack([items[i] for i in ids]) @ np.asarray(vector, np.float32)
        order = np.argsort(-similarities)[:k]
        return [(ids[i], float(1.0 - similarities[i])) for i in order]

    async def delete(self, collection: str, ids: Sequence[str]) -> None:
        self._check()
        for id_ in ids:
            self.collections.get(collection, {}).pop(id_, None)
        self.deleted[collection] = self.deleted.get(collection, 0) + len(ids)

    async def drop(self, collection: str) -> None:
        self.collections.pop(collection, None)
        self.deleted.pop(collection, None)

    def compaction_due(self, collection: str, live: int) -> bool:
        return compaction_is_due(self.deleted.get(collection, 0), live)

    async def compact(self, collection: str, load: Any) -> int:
        await self.drop(collection)
        written = 0
        async for ids, vectors, metadatas in load():
            await self.upsert(collection, ids, vectors, metadatas)
            written += len(ids)
        self.compactions += 1
        return written

    async def count(self, collection: str) -> int:
        self._check()
        return len(self.collections.get(collection, {}))

    async def ensure(self, collection: str, expected: int, load: Any) -> str:
        if len(self.collections.get(collection, {})) == expected:
            return "ok"
        self.collections.pop(collection, None)
        async for ids, vectors, metadatas in load():
            await self.upsert(collection, ids, vectors, metadatas)
        return "rebuilt"
