"""The vector index: Chroma collections, one per project and kind, served by a supervised worker process.

SQLite is the truth (DESIGN.md: Storage); this index can be thrown away and rebuilt from the vectors kept in
SQLite at any time. The ``vectors`` component owns:

- **The async API** the services use: ``upsert``, ``query``, ``delete``, ``drop``, ``count``, ``ensure``,
  ``rebuild``, ``list_collections``. Every call is a request to the worker process (``vector_worker.py``),
  which holds the Chroma client: an embedded ``PersistentClient`` at ``<state_dir>/chroma`` (``store.
  vectors_backend = "chroma"``) or an ``HttpClient`` for ``chroma run`` (``"chroma-http"``). Chroma never runs
  in the daemon's process: its upsert holds the GIL, and on a full disk one never returned (DESIGN.md).
- **Supervision** (``vector_supervisor.py``). Requests go one at a time, each with its timeout (``store.
  vectors_timeout_s``, plus a per-vector allowance for upserts); large upserts are sent in slices, so queries
  interleave, and queued queries go before queued writes (``read_first.py``); queries of one collection that
  wait together are sent as one request (``query_batch.py``). A worker that dies or hangs is replaced; after
  such an unplanned restart every collection ``ensure`` has seen is checked again against SQLite in the
  background and rebuilt if it disagrees. A healthy worker is *recycled* after each collection drop of the
  embedded backend, whose Rust side keeps a dropped collection's memory.
- **Names.** ``collection_name(project, kind)`` maps free-text project names to valid, collision-free Chroma
  names (3-512 chars of ``[a-zA-Z0-9._-]``, alphanumeric at both ends): a readable slug plus a hash.
- **Health.** ``ensure(collection, expected, load)`` compares the collection with SQLite's count; a collection
  that fails to open (a truncated or garbled HNSW file) or disagrees is set aside (deleted) and rebuilt from
  the batches ``load()`` yields. A Chroma directory that cannot even be opened is moved aside by the worker
  (``chroma.broken-<time>``) and started afresh, so a damaged index never becomes a crash loop.
- **Storage errors.** A full or read-only disk under the index is raised as ``StorageFull`` / ``StorageError``
  naming the directory and its free bytes (``store/storage.py``), and shown in ``status``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import numpy as np

from pirag.client.errors import Unavailable

from ..config import Config
from . import vector_worker as wire
from .query_batch import QueryBatcher
from .storage import StorageCondition, StorageError, make_storage_error
from .vector_supervisor import Supervisor, WorkerFailed, WorkerLost

__all__ = ["VectorIndex", "WorkerFailed", "WorkerLost", "collection_name", "compaction_is_due"]

log = logging.getLogger("pirag.store.vectors")

Batch = tuple[list[str], np.ndarray, list[dict[str, Any]] | None]
Loader = Callable[[], AsyncIterator[Batch]]

_SLUG_UNSAFE = re.compile(r"[^a-z0-9_-]+")
_SLUG_MAX = 40
UPSERT_S_PER_VECTOR = 0.01      # timeout allowance per vector on top of store.vectors_timeout_s: ~1,700/s
                                # measured idle, 10x slower under load on 2 cores; a hang is what is caught
UPSERT_SLICE = 1000             # vectors per upsert request: queries queued meanwhile go between two slices
# Chroma's HNSW only marks a deleted id (chroma-core/chroma#2594): the element keeps its memory and its place in
# the graph for good, so a project whose sources change keeps growing although its live vectors do not (measured
# 2026-12-02: 10,346 elements for 717 live chunks after 29 minutes of re-ingested notes). Past this many
# deletions, and at least as many as the collection's live vectors (so a rebuild costs at most one upsert per
# deletion), its owner rebuilds it from SQLite (``compaction_due``): an index holds at most about twice its live
# vectors, or its live vectors plus 1,000 deleted ones (~1.7 MB at 384 dims).
COMPACT_MIN_DELETED = 1000
READ_OPS = frozenset({"query_many", "count", "check", "list", "info"})   # served before queued writes (read_first.py)


def compaction_is_due(deleted: int, live: int) -> bool:
    """The rule ``VectorIndex.compaction_due`` applies (and the tests' in-memory index with it)."""
    return deleted >= COMPACT_MIN_DELETED and deleted >= live


def collection_name(project: str, kind: str) -> str:
    """A valid Chroma collection name for ``(project, kind)``; distinct inputs never share a name.

    ``kind`` is a short identifier of the area (``docs``, ``facts``...). The slug keeps names readable in
    Chroma's own tools; the 20 hex digits of a SHA-256 over the exact inputs keep them apart.
    """
    if not re.fullmatch(r"[a-z][a-z0-9]{0,15}", kind):
        raise ValueError(f"collection kind must be a short lowercase identifier, not {kind!r}")
    digest = hashlib.sha256(f"{kind}\0{project}".encode()).hexdigest()[:20]
    slug = _SLUG_UNSAFE.sub("-", project.lower()).strip("-_")[:_SLUG_MAX].strip("-_")
    return f"{kind}-{slug}-{digest}" if slug else f"{kind}-{digest}"


class VectorIndex:
    """The ``vectors`` component: ``upsert``, ``query``, ``delete``, ``drop``, ``count``, ``ensure``."""

    name = "vectors"

    def __init__(self, config: Config):
        self.config = config
        self.backend = config.store.vectors_backend
        self.path = config.state_path / "chroma"
        self.storage = StorageCondition(config.state_path)
        self._workers = Supervisor(self._settings, config.log.level, config.store.vectors_timeout_s,
                                   lambda: self.config.store.vectors_worker_max_rss_mb,
                                   config.store.vectors_recycle_overlap, self._after_restart)
        self._queries = QueryBatcher(lambda take: self._call("query_many", take), wire.pack_vectors)
        self._running = False
        self._loaders: dict[str, Loader] = {}      # collections ensure() has seen: re-checked after a crash
        self._ensuring: set[str] = set()           # being checked now: the re-check after a crash skips them
        self._recovery: asyncio.Task[None] | None = None
        self.rebuilds = 0
        self.set_aside = 0
        self.calls = 0
        self.errors = 0
        self.deleted: dict[str, int] = {}          # ids deleted per collection since it was (re)built
        self.compactions = 0

    # -- lifecycle ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._running = True
        try:
            await self._storage_errors(self._workers.start(), "open")
        except StorageError as exc:
            # A full or read-only disk must not keep the daemon down: reads are served from SQLite, and the
            # next request tries to start the worker again.
            log.error("vectors: %s; the index starts once the disk is writable again", exc.message)
        worker = self._workers.worker
        log.info("vectors: %s (%s), worker pid %d, max batch %d", self.backend,
                 self.path if self.backend == "chroma" else f"{self.config.store.chroma_host}:"
                 f"{self.config.store.chroma_port}", worker.pid if worker else -1, self.max_batch)

    async def close(self) -> None:
        self._running = False
        if self._recovery is not None:
            self._recovery.cancel()
            await asyncio.gather(self._recovery, return_exceptions=True)
        await self._workers.close()

    def stats(self) -> dict[str, Any]:
        info = self._workers.info
        return {"backend": self.backend, "calls": self.calls, "errors": self.errors, "rebuilds": self.rebuilds,
                "compactions": self.compactions, "deleted_since_build": sum(self.deleted.values()),
                "writes_overtaken": self._workers.writes_overtaken, "query_batches": self._queries.stats(),
                "set_aside": self.set_aside, "max_batch": self.max_batch,
                "segment_dirs_removed": info.get("dirs_removed", 0),
                "worker_malloc_trims": info.get("trims", 0),
                "worker": {**self._workers.stats(), "timeout_s": self.config.store.vectors_timeout_s},
                "storage": self.storage.stats(), "ops": self._workers.op_stats()}

    def handlers(self) -> dict[str, Any]:
        return {}

    @property
    def worker_pid(self) -> int | None:
        worker = self._workers.worker
        return worker.pid if worker is not None else None

    # -- the API --------------------------------------------------------------------------------------------

    collection_name = staticmethod(collection_name)

    async def upsert(self, collection: str, ids: Sequence[str], vectors: np.ndarray,
                     metadatas: Sequence[dict[str, Any]] | None = None) -> None:
        """Insert or replace ``ids`` with their vectors, ``UPSERT_SLICE`` at a time (each slice its own request, so
        a query waits for one slice, not for the whole upsert)."""
        if len(ids) != len(vectors) or (metadatas is not None and len(metadatas) != len(ids)):
            raise ValueError("upsert: ids, vectors and metadatas differ in length")
        if not len(ids):
            return
        ids = list(ids)
        for start in range(0, len(ids), UPSERT_SLICE):
            part = slice(start, start + UPSERT_SLICE)
            args = {"name": collection, "ids": ids[part], "vectors": wire.pack_vectors(vectors[part]),
                    "metadatas": list(metadatas[part]) if metadatas is not None else None}
            await self._call("upsert", args, extra_s=len(args["ids"]) * UPSERT_S_PER_VECTOR)

    async def query(self, collection: str, vector: np.ndarray, k: int,
                    where: dict[str, Any] | None = None) -> list[tuple[str, float]]:
        """The ``k`` nearest ids with their cosine distances (0 = same direction), nearest first. Queries of one
        collection and filter waiting for the worker together share one request (``query_batch.py``)."""
        found = await self._queries.query(collection, vector, k, where)
        return [(id_, float(distance)) for id_, distance in found]

    async def delete(self, collection: str, ids: Sequence[str]) -> None:
        if ids:
            await self._call("delete", {"name": collection, "ids": list(ids)})
            self.deleted[collection] = self.deleted.get(collection, 0) + len(ids)

    def compaction_due(self, collection: str, live: int) -> bool:
        """True when ``collection`` holds more deleted HNSW elements than ``live`` vectors (and at least
        ``COMPACT_MIN_DELETED``): a rebuild from SQLite then gives their memory back."""
        return compaction_is_due(self.deleted.get(collection, 0), live)

    async def compact(self, collection: str, load: Loader) -> int:
        """Rebuild ``collection`` from ``load()`` to drop its deleted elements; the caller holds whatever lock
        keeps writers of the collection out meanwhile (as for ``rebuild``)."""
        deleted = self.deleted.get(collection, 0)
        written = await self.rebuild(collection, load)
        self.compactions += 1
        log.info("vectors: compacted %s: %d deleted elements dropped, %d vectors kept", collection, deleted, written)
        return written

    async def drop(self, collection: str) -> None:
        """Delete the collection and its directory on disk; a missing collection is not an error.

        The embedded backend's worker is then replaced by a fresh process: Chroma's Rust frontend keeps a
        dropped collection's HNSW files and memory (chroma-core/chroma#3296, #3336), and re-opening the client in
        the same process gave the descriptors back but not the memory (measured 2026-12-02: the worker grew in
        steps of ~8 MB with each compaction, 124 -> 306 MB in an hour of `pirag-stress memory-leaks`)."""
        worker = self._workers.worker
        self._workers.info = await self._call("drop", {"name": collection})
        self.deleted.pop(collection, None)
        if self.backend == "chroma" and worker is not None and self._running:
            await self._workers.recycle(worker)

    async def count(self, collection: str) -> int:
        return int(await self._call("count", {"name": collection}))

    async def ensure(self, collection: str, expected: int, load: Loader) -> str:
        """Make ``collection`` agree with SQLite: ``"ok"``, or ``"rebuilt"`` after setting it aside.

        ``expected`` is the number of vectors SQLite holds for it; ``load()`` yields ``(ids, vectors,
        metadatas)`` batches of them. A collection that raises when counted is treated as broken. ``load`` is
        kept: after a crash of the worker the collection is checked again with it.
        """
        self._loaders[collection] = load
        self._ensuring.add(collection)
        try:
            try:
                problems = await self._call("check", {"name": collection})
                if problems:
                    log.warning("vectors: the HNSW files of %s are damaged (%s); setting it aside and "
                                "rebuilding from SQLite", collection, "; ".join(problems))
                    await self.rebuild(collection, load)
                    return "rebuilt"
                actual = await self.count(collection)
                if actual == expected and expected and not await self._finds_itself(collection, load):
                    actual = -1
            except StorageError:
                raise
            except Exception as exc:  # a damaged catalogue or a worker that crashes on the collection
                log.warning("vectors: collection %s fails to open (%s); rebuilding from SQLite", collection, exc)
                actual = -1
            if actual == expected:
                return "ok"
            if actual >= 0:
                log.warning("vectors: collection %s holds %d vectors, SQLite %d; rebuilding", collection, actual,
                            expected)
            await self.rebuild(collection, load)
            return "rebuilt"
        finally:
            self._ensuring.discard(collection)

    async def _finds_itself(self, collection: str, load: Loader) -> bool:
        """Query the collection with the first vector SQLite holds for it: it must come back as its own nearest.

        Chroma counts from its catalogue, so a truncated or garbled HNSW file passes ``count``; only a query
        loads the graph (measured: a truncated ``data_level0.bin`` with the right count).
        """
        batches = load()
        try:
            ids, vectors, _ = await batches.__anext__()
        except StopAsyncIteration:
            return True
        finally:
            await batches.aclose()
        hits = await self.query(collection, vectors[0], 1)
        if hits and (hits[0][0] == ids[0] or hits[0][1] < 1e-3):
            return True
        log.warning("vectors: collection %s does not find its own vector %s (got %s); its HNSW files are "
                    "damaged", collection, ids[0], hits[:1])
        return False

    async def rebuild(self, collection: str, load: Loader) -> int:
        """Set the collection aside (delete it) and fill it again from ``load()``; returns the vectors written."""
        self._loaders[collection] = load
        self.set_aside += 1
        try:
            await self.drop(collection)
        except StorageError:
            raise
        except Exception:
            log.exception("vectors: dropping %s before its rebuild failed; continuing", collection)
        written = 0
        async for ids, vectors, metadatas in load():
            await self.upsert(collection, ids, vectors, metadatas)
            written += len(ids)
        self.rebuilds += 1
        log.info("vectors: rebuilt %s with %d vectors", collection, written)
        return written

    async def list_collections(self) -> list[str]:
        return list(await self._call("list", {}))

    async def refresh_worker_info(self) -> dict[str, Any]:
        """The worker's own counters (trims, directories removed), fetched now rather than at the last drop."""
        self._workers.info = await self._call("info", {})
        return self._workers.info

    @property
    def max_batch(self) -> int:
        return int(self._workers.info.get("max_batch", wire.DEFAULT_MAX_BATCH))

    # -- requests -------------------------------------------------------------------------------------------

    async def _call(self, op: str, args: dict[str, Any] | Callable[[], dict[str, Any]], extra_s: float = 0.0) -> Any:
        """One request to the worker; ``args`` may be a function, called once the worker is free."""
        if not self._running:
            raise Unavailable("the vector index is not running")
        self.calls += 1
        timeout = self.config.store.vectors_timeout_s + extra_s
        try:
            result = await self._storage_errors(self._workers.call(op, args, timeout, read=op in READ_OPS), op)
        except Exception:
            self.errors += 1
            raise
        if op in ("upsert", "delete", "drop"):
            self.storage.succeeded()
        return result

    async def _storage_errors(self, request: Awaitable[Any], op: str) -> Any:
        """``request``'s result, with the worker's disk-full and I/O errors raised as ``StorageFull`` /
        ``StorageError`` naming the directory and its free bytes, and shown in ``status``."""
        try:
            return await request
        except WorkerFailed as exc:
            if exc.kind not in ("storage_full", "storage_error"):
                raise
            error = make_storage_error("full" if exc.kind == "storage_full" else "error", self.path.parent,
                                       f"{exc.type_name}: {exc.message}", f"vector index {op}")
        self._workers.note_error(error.message)
        self.storage.failed(error)
        raise error

    def _settings(self) -> str:
        store = self.config.store
        return json.dumps({"backend": self.backend, "path": str(self.path), "host": store.chroma_host,
                           "port": store.chroma_port,
                           "trim_interval_s": self.config.server.malloc_trim_interval_s,
                           "arena_max": self.config.server.malloc_arena_max})

    def _after_restart(self) -> None:
        """After an unplanned restart of the worker: the known collections are checked again, in the background."""
        if self._loaders and (self._recovery is None or self._recovery.done()):
            self._recovery = asyncio.ensure_future(self._recheck_known_collections())

    async def _recheck_known_collections(self) -> None:
        """After an unplanned restart: count each collection ensure() has seen through its loader, rebuild
        those that disagree. An upsert the killed worker had half-applied is repaired here."""
        for collection, load in list(self._loaders.items()):
            if collection in self._ensuring:
                continue
            try:
                expected = 0
                async for ids, _, _ in load():
                    expected += len(ids)
                outcome = await self.ensure(collection, expected, load)
                log.info("vectors: after the restart %s is %s", collection, outcome)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("vectors: re-checking %s after the restart failed: %s", collection, exc)

    # -- test hooks -----------------------------------------------------------------------------------------

    async def _stall_worker(self, seconds: float) -> None:
        """Test-only: a request that hangs in the worker like the disk-full upsert did."""
        await self._call("stall", {"seconds": seconds})
