"""``QueryBatcher``: concurrent vector queries of one collection go to the index worker as one request.

The index has one worker process and one request runs at a time (``vectors.py``). Under many clients the
queries of a collection queue behind each other, each paying a round trip and Chroma's per-call cost (metadata
reads, the Python and Rust layers) for a k-nearest search that is a fraction of it. Here a query joins the open
group of its collection and filter; the group is sent once the worker is free, with every query that joined while
it waited, as one ``query_many`` (Chroma answers several query vectors in one call). A lone query is sent at once,
as before: batching only ever happens while there is a wait anyway. Event-loop only. A leaf module.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Hits = list[tuple[str, float]]
# (collection, where, vectors (n, dims), k) -> one hit list per vector; ``take()`` is called once the worker is
# free (under its lock), so queries keep joining the group until then
Send = Callable[[Callable[[], dict[str, Any]]], Awaitable[list[Hits]]]


@dataclass
class _Group:
    vectors: list[np.ndarray] = field(default_factory=list)
    ks: list[int] = field(default_factory=list)
    futures: list[asyncio.Future[Hits]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


class QueryBatcher:
    def __init__(self, send: Send, pack: Callable[[np.ndarray], dict[str, Any]]):
        self._send = send
        self._pack = pack
        self._open: dict[tuple[str, str], _Group] = {}
        self.requests = 0            # query_many requests sent
        self.queries = 0             # queries they carried

    async def query(self, collection: str, vector: np.ndarray, k: int, where: dict[str, Any] | None) -> Hits:
        key = (collection, json.dumps(where, sort_keys=True) if where else "")
        group = self._open.get(key)
        if group is None:
            group = self._open[key] = _Group()
            group.task = asyncio.ensure_future(self._flush(key, group, collection, where))
        future: asyncio.Future[Hits] = asyncio.get_running_loop().create_future()
        group.vectors.append(np.asarray(vector, dtype=np.float32).reshape(-1))
        group.ks.append(int(k))
        group.futures.append(future)
        return await future

    async def _flush(self, key: tuple[str, str], group: _Group, collection: str,
                     where: dict[str, Any] | None) -> None:
        def take() -> dict[str, Any]:
            # the worker is ours now: the group closes, later queries open the next one
            if self._open.get(key) is group:
                del self._open[key]
            return {"name": collection, "vectors": self._pack(np.stack(group.vectors)), "k": max(group.ks),
                    "where": where}

        try:
            found = await self._send(take)
        except BaseException as exc:  # noqa: BLE001 - every waiting query gets the failure, the loop goes on
            if self._open.get(key) is group:
                del self._open[key]
            for future in group.futures:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else asyncio.CancelledError())
            if not isinstance(exc, Exception):
                raise
            return
        self.requests += 1
        self.queries += len(group.futures)
        for future, k, hits in zip(group.futures, group.ks, found):
            if not future.done():
                future.set_result(hits[:k])

    def stats(self) -> dict[str, Any]:
        return {"requests": self.requests, "queries": self.queries,
                "mean_queries": round(self.queries / self.requests, 2) if self.requests else 0.0}
