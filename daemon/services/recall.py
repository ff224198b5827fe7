"""The vector side of facts and episodes (the index, with an exact fallback over SQLite) and their recall cache.

Fusion and the rest of answering a query are the retrieval core's (``services/retrieval.py``).

The vector side asks the ``vectors`` component (Chroma, one collection per project and kind) and checks each
hit against SQLite, the truth: a hit whose row is gone, or that a tag/time filter excludes, is dropped. When a
filter narrows the rows to a few thousand, an exact search over their vectors (kept in SQLite) is both faster
and complete, so it is used instead; and while a collection is being rebuilt (or when there is no vector
index at all) the exact search over SQLite serves, so recall never depends on the index being healthy.

**A dropped collection stays dropped.** Vectors reach the index after the SQLite work they come from (queued,
written when idle; or a rebuild reading pages), so a project can be dropped in between. Every writer takes a
``mark()`` before it reads or writes the rows; ``drop`` leaves a tombstone (a drop number) on the collection.
Vectors whose mark is older than the collection's tombstone are written only for the ids SQLite still holds
(checked in a read after the drop), so rows deleted by the drop never re-create the collection, while rows
written after it (the project used again) are indexed. A per-collection lock keeps a drop out of a write in
progress (the check and the write, or a whole rebuild): the drop comes after it and removes what it wrote.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Hashable, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from ..lru import BoundedLRU
from ..store.facts import Filter
from ..store.sqlite_pool import Database

log = logging.getLogger("pirag.memory")

EXACT_SEARCH_MAX_ROWS = 20_000   # below this many filtered rows, an exact search over SQLite's vectors is used

# Chroma's upsert holds the GIL for its whole run (py-spy --gil: at 100k vectors, ~20 ms a call plus ~4 ms a
# vector on the loaded 2-core reference machine), stalling the event loop and every other thread meanwhile.
# So queued vectors are written when the kind has been idle (no search, no new vector) for FLUSH_IDLE_S, or
# when the backlog reaches FLUSH_BACKLOG vectors or FLUSH_MAX_AGE_S seconds, in slices of FLUSH_SLICE vectors
# with the loop running in between. Until then searches compare against the queued vectors exactly.
FLUSH_IDLE_S = 0.5
FLUSH_BACKLOG = 2000
FLUSH_MAX_AGE_S = 60.0
FLUSH_SLICE = 64


def top_k(ids: list[str], matrix: np.ndarray, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
    if not ids:
        return []
    similarities = matrix @ vector.astype(np.float32)
    count = min(k, len(ids))
    best = np.argpartition(-similarities, count - 1)[:count]
    best = best[np.argsort(-similarities[best])]
    return [(ids[i], float(similarities[i])) for i in best]


class VectorSide:
    """Vector search of one kind (``facts`` or ``episodes``) through the index, with an exact fallback."""

    def __init__(self, kind: str, store: ModuleType, db: Database, vectors: Any | None):
        self.kind = kind
        self.store = store          # pirag.daemon.store.facts or .episodes
        self.db = db
        self.vectors = vectors
        self.ready: set[str] = set()        # collections known to agree with SQLite
        # Set once the start-up check has visited every collection SQLite has vectors for: from then on a
        # collection not in ``broken`` is trusted (new ones are created by their first upsert).
        self.checked = False
        self.broken: set[str] = set()
        self.exact_searches = 0
        self.index_searches = 0
        self.index_errors = 0
        # Vectors committed to SQLite but not yet in the index (collection -> id -> vector): single upserts
        # into Chroma cost tens of milliseconds, so they are coalesced by a flusher task; searches look at
        # these exactly, so a fact is found by vector the moment it is acknowledged.
        self._pending: dict[str, dict[str, np.ndarray]] = {}
        self._pending_since: dict[str, int] = {}    # collection -> the oldest mark of its queued vectors
        self._projects: dict[str, str] = {}         # collection -> project
        self._drops = 0                             # drops so far; mark() returns it
        self._dropped_at: dict[str, int] = {}       # collection -> the number of its last drop (tombstone)
        self._locks: dict[str, asyncio.Lock] = {}
        self.stale_discarded = 0                    # queued vectors of rows a drop deleted, not written
        self._inflight: dict[str, dict[str, np.ndarray]] = {}
        self._flush_wake: asyncio.Event | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._last_activity = 0.0       # monotonic time of the last search or queued vector
        self.model_id = ""                  # the vectors' model (set by the start-up check): what a compaction reloads
        self._compacting: set[str] = set()
        self._compactions: set[asyncio.Task[None]] = set()
        self._oldest_pending = 0.0      # monotonic time the backlog started

    def trusted(self, collection: str) -> bool:
        return collection in self.ready or (self.checked and collection not in self.broken)

    def distrust(self, collection: str) -> None:
        self.ready.discard(collection)
        self.broken.add(collection)

    def collection(self, project: str) -> str:
        assert self.vectors is not None
        return self.vectors.collection_name(project, self.kind)

    def mark(self) -> int:
        """Taken before reading (or writing) the rows whose vectors will be written: pass it as ``since``."""
        return self._drops

    def _lock(self, collection: str) -> asyncio.Lock:
        lock = self._locks.get(collection)
        if lock is None:
            lock = self._locks[collection] = asyncio.Lock()
        return lock

    async def _write(self, collection: str, items: dict[str, np.ndarray], since: int) -> None:
        """Upsert ``items`` into ``collection`` unless a drop since ``since`` deleted their rows.

        Called with the collection's lock held, so no drop runs between the check and the write."""
        while self._dropped_at.get(collection, 0) > since and items:
            # Dropped after these rows were read: keep only the ids SQLite still holds (rows written after the
            # drop); the read is itself marked, and checked again if yet another drop came meanwhile.
            since = self._drops
            project = self._projects[collection]
            ids = list(items)

            def present(conn: Any) -> set[str]:
                found: set[str] = set()
                for start in range(0, len(ids), 500):
                    found.update(self.store.seqs_for_ids(conn, ids[start:start + 500],
                                                         Filter(self.store_alias).projects([project])))
                return found

            keep = await self.db.read(present)
            self.stale_discarded += len(items) - len(keep)
            items = {key: value for key, value in items.items() if key in keep}
        if items:
            await self.vectors.upsert(collection, list(items), np.stack(list(items.values())), None)

    @property
    def store_alias(self) -> str:
        return "f" if self.kind == "facts" else "e"

    async def search(self, projects: Sequence[str], vector: np.ndarray, k: int, where: Filter,
                     model_id: str, verify: bool = True) -> list[tuple[str, float]]:
        """The ``k`` most similar ids passing ``where`` (which already names ``projects``), with similarities.

        ``verify=False`` leaves out the check of the index's hits against SQLite (rows gone, filters): the
        caller does it in a read it makes anyway (``store.complete_pool``, ``store.rows_for_ids``); hits are then best first but may be
        more than ``k`` (the index's and the not yet indexed vectors' candidates together)."""
        self._last_activity = time.monotonic()
        if where.selective or self.vectors is None:
            limit = EXACT_SEARCH_MAX_ROWS if self.vectors is not None else 10**9
            candidates = await self.db.read(lambda conn: self.store.candidate_vectors(conn, where, model_id, limit))
            if candidates is not None:
                self.exact_searches += 1
                return top_k(*candidates, vector, k)
        hits: list[tuple[str, float]] = []
        fetch = k * 10 if where.selective else k
        for project in projects:
            collection = self.collection(project)
            if not self.trusted(collection):
                project_where = Filter(where.alias, list(where.clauses), list(where.params))
                project_where.add("{a}.project = ?", project)
                candidates = await self.db.read(
                    lambda conn, w=project_where: self.store.candidate_vectors(conn, w, model_id, 10**9))
                self.exact_searches += 1
                hits += top_k(*candidates, vector, fetch)  # type: ignore[misc]
                continue
            try:
                found = await self.vectors.query(collection, vector, fetch)
            except Exception:
                self.index_errors += 1
                self.distrust(collection)  # the next searches go exact until it is rebuilt
                log.exception("vector index query on %s failed; falling back to exact search", collection)
                return await self.search(projects, vector, k, where, model_id, verify)
            self.index_searches += 1
            hits += [(id_, 1.0 - distance) for id_, distance in found]
            unindexed = {**self._inflight.get(collection, {}), **self._pending.get(collection, {})}
            if unindexed:
                seen = {hit[0] for hit in hits}
                hits += [hit for hit in top_k(list(unindexed), np.stack(list(unindexed.values())), vector, fetch)
                         if hit[0] not in seen]
        if not hits:
            return []
        if not verify:
            hits.sort(key=lambda hit: -hit[1])
            return hits
        present = await self.db.read(lambda conn: self.store.seqs_for_ids(conn, [h[0] for h in hits], where))
        hits = [hit for hit in hits if hit[0] in present]
        hits.sort(key=lambda hit: -hit[1])
        return hits[:k]

    async def upsert(self, project: str, ids: list[str], vectors: np.ndarray, since: int | None = None) -> None:
        """Write vectors now; ``since`` is the ``mark()`` taken before their rows were written (default: now)."""
        if self.vectors is None or not ids:
            return
        collection = self.collection(project)
        self._projects[collection] = project
        try:
            async with self._lock(collection):
                await self._write(collection, dict(zip(ids, vectors)), self._drops if since is None else since)
        except Exception:
            self.index_errors += 1
            self.distrust(collection)
            log.exception("vector index upsert on %s failed; it will be rebuilt from SQLite", collection)

    def queue_upsert(self, project: str, ids: list[str], vectors: np.ndarray, since: int | None = None) -> None:
        """Add vectors to the index soon (the flusher coalesces them); searches see them at once.

        ``since`` is the ``mark()`` taken before the rows were read or written (default: now, for a caller
        that vouches no drop of the project came in between)."""
        if self.vectors is None or not ids:
            return
        since = self._drops if since is None else since
        self._last_activity = time.monotonic()
        if not self._pending:
            self._oldest_pending = self._last_activity
        collection = self.collection(project)
        self._projects[collection] = project
        self._pending.setdefault(collection, {}).update(zip(ids, vectors))
        self._pending_since[collection] = min(self._pending_since.get(collection, since), since)
        if self._flusher is None or self._flusher.done():
            self._flush_wake = asyncio.Event()
            self._flusher = asyncio.create_task(self._flush_loop(), name=f"pirag-{self.kind}-index-flusher")
        assert self._flush_wake is not None
        self._flush_wake.set()

    def pending(self) -> int:
        return sum(len(items) for items in self._pending.values())

    async def _flush_loop(self) -> None:
        assert self._flush_wake is not None
        while True:
            await self._flush_wake.wait()
            self._flush_wake.clear()
            while self._pending:
                now = time.monotonic()
                idle = now - self._last_activity
                if idle >= FLUSH_IDLE_S or self.pending() >= FLUSH_BACKLOG or \
                        now - self._oldest_pending >= FLUSH_MAX_AGE_S:
                    await self.flush(FLUSH_SLICE)
                    await asyncio.sleep(0)   # requests waiting for the loop go first
                else:
                    await asyncio.sleep(FLUSH_IDLE_S - idle)

    async def flush(self, limit: int | None = None) -> None:
        """Write queued vectors to the index now: every one, or about ``limit`` (one collection's slice)."""
        while self._pending:
            collection = next(iter(self._pending))
            queued = self._pending[collection]
            since = self._pending_since.get(collection, self._drops)
            if limit is None or len(queued) <= limit:
                items = self._pending.pop(collection)
                self._pending_since.pop(collection, None)
            else:
                keys = list(queued)[:limit]
                items = {key: queued.pop(key) for key in keys}
            if not items:
                continue
            self._inflight[collection] = items
            try:
                async with self._lock(collection):
                    await self._write(collection, items, since)
            except Exception:
                self.index_errors += 1
                self.distrust(collection)
                log.exception("vector index upsert on %s failed; exact search serves it until it is rebuilt",
                              collection)
            finally:
                self._inflight.pop(collection, None)
            if limit is not None:
                return

    async def stop(self) -> None:
        for task in list(self._compactions):
            task.cancel()
        await asyncio.gather(*self._compactions, return_exceptions=True)
        if self._flusher is not None:
            self._flusher.cancel()
            try:
                await self._flusher
            except (asyncio.CancelledError, Exception):
                pass
            self._flusher = None
        try:
            await self.flush()
        except Exception:
            log.exception("final flush of the %s index failed; it is rebuilt from SQLite at start", self.kind)

    async def delete(self, project: str, ids: list[str]) -> None:
        if self.vectors is None or not ids:
            return
        collection = self.collection(project)
        for id_ in ids:
            self._pending.get(collection, {}).pop(id_, None)
            self._inflight.get(collection, {}).pop(id_, None)  # a flush waiting for the lock must not write it
        try:
            # Under the collection's lock: a rebuild or a write in progress may hold these ids (read from SQLite
            # before their rows were deleted) and would put them back after an unlocked delete: a ghost in the
            # index that `pirag-stress crash` found (5,473 ids for 5,472 vectors after 20 kills).
            async with self._lock(collection):
                await self.vectors.delete(collection, ids)
        except Exception:
            self.index_errors += 1
            self.distrust(collection)
            log.exception("vector index delete on %s failed; it will be rebuilt from SQLite", collection)
            return
        if (self.model_id and collection not in self._compacting
                and self.vectors.compaction_due(collection, 0)):   # the live count is checked under the lock
            self._compacting.add(collection)
            task = asyncio.ensure_future(self._compact(project))
            self._compactions.add(task)
            task.add_done_callback(self._compactions.discard)

    async def drop(self, project: str) -> None:
        """Drop the project's collection; called after its rows were deleted from SQLite.

        Waits for a write or rebuild of the collection in progress (it is removed with the rest), and leaves
        a tombstone: vectors of rows read before now are written later only if SQLite still holds them."""
        if self.vectors is None:
            return
        collection = self.collection(project)
        async with self._lock(collection):
            self._drops += 1
            self._dropped_at[collection] = self._drops
            self.ready.discard(collection)
            await self.vectors.drop(collection)

    async def ensure(self, project: str, expected: int, model_id: str) -> str:
        """Make the project's collection agree with SQLite (rebuilding it from SQLite's vectors if not)."""
        if self.vectors is None:
            return "none"
        collection = self.collection(project)
        self.model_id = model_id
        # Under the collection's lock: a drop of the project waits for the rebuild, then removes what it wrote.
        async with self._lock(collection):
            outcome = await self.vectors.ensure(collection, expected, self._loader(project, model_id))
            self.ready.add(collection)
            self.broken.discard(collection)
        return outcome

    def _loader(self, project: str, model_id: str) -> Any:
        async def load() -> AsyncIterator[tuple[list[str], np.ndarray, None]]:
            after = 0
            while True:
                page = await self.db.read(lambda conn: self.store.vector_page(conn, project, model_id, after))
                if page is None:
                    return
                after, ids, matrix = page
                yield ids, matrix, None

        return load

    async def _compact(self, project: str) -> None:
        """Rebuild the collection once forgotten or pruned rows outnumber its live ones (Chroma's HNSW keeps
        every deleted element: ``vectors.COMPACT_MIN_DELETED``); searches go exact meanwhile."""
        assert self.vectors is not None
        collection = self.collection(project)
        model_id = self.model_id
        try:
            async with self._lock(collection):
                counts = await self.db.read(lambda conn: self.store.counts_by_project(conn, model_id))
                if not self.vectors.compaction_due(collection, counts.get(project, 0)):
                    return
                self.distrust(collection)
                await self.vectors.compact(collection, self._loader(project, model_id))
                self.ready.add(collection)
                self.broken.discard(collection)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.index_errors += 1
            log.exception("compacting the %s index of %r failed; exact search serves it until a rebuild",
                          self.kind, project)
        finally:
            self._compacting.discard(collection)


class RecallCache:
    """Recent recall results, keyed by the request and the generation of the projects it read, bounded in
    entries and bytes (``daemon/lru.py``).

    Every write to a project bumps its generation, so a cached result is never stale; ``forget`` also
    empties the cache outright so that no result mentioning a forgotten fact stays in memory.
    """

    def __init__(self, entries: int, ttl_s: float, max_bytes: int = 16 << 20):
        self._lru = BoundedLRU(entries, max_bytes, ttl_s)
        self._generations: dict[str, int] = {}

    @property
    def hits(self) -> int:
        return self._lru.hits

    @property
    def misses(self) -> int:
        return self._lru.misses

    @property
    def bytes(self) -> int:
        return self._lru.bytes

    def generation(self, projects: Sequence[str]) -> tuple[int, ...]:
        return tuple(self._generations.get(project, 0) for project in projects)

    def bump(self, project: str) -> None:
        self._generations[project] = self._generations.get(project, 0) + 1

    def get(self, key: Hashable) -> Any | None:
        return self._lru.get(key)

    def put(self, key: Hashable, value: Any) -> None:
        self._lru.put(key, value)

    def clear(self) -> None:
        self._lru.clear()

    def __len__(self) -> int:
        return len(self._lru)

