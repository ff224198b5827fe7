"""The vector index: Chroma collections, one per project and kind, on a thread of their own.

SQLite is the truth (DESIGN.md: Storage); this index can be thrown away and rebuilt from the vectors kept in
SQLite at any time. The ``vectors`` component owns:

- **The client.** An embedded ``chromadb.PersistentClient`` at ``<state_dir>/chroma`` (``store.vectors_backend
  = "chroma"``) or a ``chromadb.HttpClient`` talking to ``chroma run`` (``"chroma-http"``, host/port from
  ``store.chroma_host``/``chroma_port``). Telemetry is off.
- **One thread.** Every Chroma call runs on a single dedicated thread; the loop awaits a future. Chroma is
  thread-safe, but an upsert of thousands of vectors or an HNSW load must never stall the event loop.
- **Names.** ``collection_name(project, kind)`` maps free-text project names to valid, collision-free Chroma
  names (3-512 chars of ``[a-zA-Z0-9._-]``, alphanumeric at both ends): a readable slug plus a hash.
- **Drop means gone.** Chroma 1.5 leaves a deleted collection's HNSW segment directory on disk
  (chroma-core/chroma#5259, still true on 1.5.9): after ``delete_collection`` the directories of segments that
  no longer exist in Chroma's catalogue are removed here.
- **Health.** ``ensure(collection, expected, load)`` compares the collection with SQLite's count; a collection
  that fails to open or disagrees is set aside (deleted) and rebuilt from the batches ``load()`` yields. A
  Chroma directory that cannot even be opened is moved aside (``chroma.broken-<time>``) and started afresh,
  so a damaged index never becomes a crash loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..config import Config

log = logging.getLogger("pirag.store.vectors")

T = TypeVar("T")
Batch = tuple[list[str], np.ndarray, list[dict[str, Any]] | None]
Loader = Callable[[], AsyncIterator[Batch]]

_SLUG_UNSAFE = re.compile(r"[^a-z0-9_-]+")
_UUID_DIR = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_SLUG_MAX = 40


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
        self._client: Any = None
        self._collections: dict[str, Any] = {}
        self.reopens = 0
        self._executor: ThreadPoolExecutor | None = None
        self._thread_ident: int | None = None
        self._max_batch = 5461
        self.rebuilds = 0
        self.set_aside = 0
        self.dirs_removed = 0
        self.calls = 0
        self.errors = 0

    # -- lifecycle ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pirag-chroma")
        await self._run(self._open)
        log.info("vectors: %s (%s), max batch %d", self.backend,
                 self.path if self.backend == "chroma" else f"{self.config.store.chroma_host}:"
                 f"{self.config.store.chroma_port}", self._max_batch)

    async def close(self) -> None:
        if self._executor is None:
            return
        try:
            await self._run(self._close_client)
        finally:
            self._executor.shutdown(wait=True)
            self._executor = None

    def stats(self) -> dict[str, Any]:
        return {"backend": self.backend, "collections_open": len(self._collections), "calls": self.calls,
                "errors": self.errors, "rebuilds": self.rebuilds, "set_aside": self.set_aside,
                "segment_dirs_removed": self.dirs_removed, "reopens_after_drop": self.reopens,
                "max_batch": self._max_batch}

    def handlers(self) -> dict[str, Any]:
        return {}

    # -- the API (all awaitable; the work happens on the Chroma thread) ---------------------------------------

    collection_name = staticmethod(collection_name)

    async def upsert(self, collection: str, ids: Sequence[str], vectors: np.ndarray,
                     metadatas: Sequence[dict[str, Any]] | None = None) -> None:
        """Insert or replace ``ids`` with their vectors, in batches of at most Chroma's max batch size."""
        if len(ids) != len(vectors) or (metadatas is not None and len(metadatas) != len(ids)):
            raise ValueError("upsert: ids, vectors and metadatas differ in length")
        if not len(ids):
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        await self._run(self._upsert_blocking, collection, list(ids), vectors,
                        list(metadatas) if metadatas is not None else None)

    async def query(self, collection: str, vector: np.ndarray, k: int,
                    where: dict[str, Any] | None = None) -> list[tuple[str, float]]:
        """The ``k`` nearest ids with their cosine distances (0 = same direction), nearest first."""
        return await self._run(self._query_blocking, collection, np.asarray(vector, np.float32), int(k), where)

    async def delete(self, collection: str, ids: Sequence[str]) -> None:
        if ids:
            await self._run(self._delete_blocking, collection, list(ids))

    async def drop(self, collection: str) -> None:
        """Delete the collection and its directory on disk; a missing collection is not an error."""
        await self._run(self._drop_blocking, collection)

    async def count(self, collection: str) -> int:
        return await self._run(self._count_blocking, collection)

    async def ensure(self, collection: str, expected: int, load: Loader) -> str:
        """Make ``collection`` agree with SQLite: ``"ok"``, or ``"rebuilt"`` after setting it aside.

        ``expected`` is the number of vectors SQLite holds for it; ``load()`` yields ``(ids, vectors,
        metadatas)`` batches of them. A collection that raises when counted is treated as broken.
        """
        try:
            actual = await self.count(collection)
        except Exception as exc:  # a damaged HNSW file surfaces here
            log.warning("vectors: collection %s fails to open (%s); rebuilding from SQLite", collection, exc)
            actual = -1
        if actual == expected:
            return "ok"
        if actual >= 0:
            log.warning("vectors: collection %s holds %d vectors, SQLite %d; rebuilding", collection, actual,
                        expected)
        await self.rebuild(collection, load)
        return "rebuilt"

    async def rebuild(self, collection: str, load: Loader) -> int:
        """Set the collection aside (delete it) and fill it again from ``load()``; returns the vectors written."""
        self.set_aside += 1
        try:
            await self.drop(collection)
        except Exception:
            log.exception("vectors: dropping %s before its rebuild failed; continuing", collection)
            self._collections.pop(collection, None)
        written = 0
        async for ids, vectors, metadatas in load():
            await self.upsert(collection, ids, vectors, metadatas)
            written += len(ids)
        self.rebuilds += 1
        log.info("vectors: rebuilt %s with %d vectors", collection, written)
        return written

    async def list_collections(self) -> list[str]:
        return await self._run(lambda: [c.name for c in self._client.list_collections()])

    @property
    def max_batch(self) -> int:
        return self._max_batch

    # -- the Chroma thread ----------------------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise RuntimeError("the vector index is not running")
        self.calls += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except Exception:
            self.errors += 1
            raise

    def _open(self) -> None:
        import chromadb
        from chromadb.config import Settings

        self._thread_ident = threading.get_ident()
        settings = Settings(anonymized_telemetry=False, allow_reset=False)
        if self.backend == "chroma-http":
            self._client = chromadb.HttpClient(host=self.config.store.chroma_host,
                                               port=self.config.store.chroma_port, settings=settings)
        else:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o750)
            try:
                self._client = chromadb.PersistentClient(path=str(self.path), settings=settings)
                self._client.list_collections()
            except Exception as exc:
                aside = self.path.with_name(f"chroma.broken-{int(time.time())}")
                log.error("vectors: cannot open %s (%s); moving it to %s and starting an empty index "
                          "(it is rebuilt from SQLite)", self.path, exc, aside)
                self._client = None
                _forget_shared_system(str(self.path))
                self.path.rename(aside)
                self.path.mkdir(mode=0o750)
                self._client = chromadb.PersistentClient(path=str(self.path), settings=settings)
            self._remove_orphan_segment_dirs()
        try:
            self._max_batch = int(self._client.get_max_batch_size())
        except Exception:  # older servers: keep the documented default
            self._max_batch = 5461

    def _close_client(self) -> None:
        self._collections.clear()
        client, self._client = self._client, None
        if client is not None:
            try:  # releases the sqlite/HNSW handles of the embedded system (or the HTTP session)
                client.close()
            except Exception:
                log.debug("vectors: closing the Chroma client failed", exc_info=True)

    def _collection(self, name: str, create: bool) -> Any:
        collection = self._collections.get(name)
        if collection is not None:
            return collection
        if create:
            collection = self._client.get_or_create_collection(name, metadata={"hnsw:space": "cosine"})
        else:
            try:
                collection = self._client.get_collection(name)
            except Exception as exc:
                if _is_not_found(exc):
                    return None
                raise
        self._collections[name] = collection
        return collection

    def _upsert_blocking(self, name: str, ids: list[str], vectors: np.ndarray,
                         metadatas: list[dict[str, Any]] | None) -> None:
        collection = self._collection(name, create=True)
        step = self._max_batch
        for start in range(0, len(ids), step):
            part = slice(start, start + step)
            if metadatas is not None:
                collection.upsert(ids=ids[part], embeddings=vectors[part], metadatas=metadatas[part])
            else:
                collection.upsert(ids=ids[part], embeddings=vectors[part])

    def _query_blocking(self, name: str, vector: np.ndarray, k: int,
                        where: dict[str, Any] | None) -> list[tuple[str, float]]:
        collection = self._collection(name, create=False)
        if collection is None or k <= 0:
            return []
        result = collection.query(query_embeddings=vector.reshape(1, -1), n_results=k, where=where,
                                  include=["distances"])
        ids = result["ids"][0] if result["ids"] else []
        distances = result["distances"][0] if result.get("distances") else [0.0] * len(ids)
        return [(id_, float(distance)) for id_, distance in zip(ids, distances)]

    def _delete_blocking(self, name: str, ids: list[str]) -> None:
        collection = self._collection(name, create=False)
        if collection is None:
            return
        for start in range(0, len(ids), self._max_batch):
            collection.delete(ids=ids[start:start + self._max_batch])

    def _count_blocking(self, name: str) -> int:
        collection = self._collection(name, create=False)
        return 0 if collection is None else int(collection.count())

    def _drop_blocking(self, name: str) -> None:
        self._collections.pop(name, None)
        try:
            self._client.delete_collection(name)
        except Exception as exc:
            if not _is_not_found(exc):
                raise
        if self.backend == "chroma":
            # Chroma's embedded (Rust) frontend keeps a deleted collection's HNSW files open in a cache with
            # no eviction API (chroma-core/chroma#3296, #3336): about 4 descriptors and the index memory per
            # dropped collection, until the process ends. Closing and re-opening the client releases them;
            # the other collections reload lazily on their next query. Safe here: every Chroma call runs on
            # this one thread.
            self._close_client()
            self._open()  # also removes the dropped collection's segment directory (chroma-core/chroma#5259)
            self.reopens += 1

    def _remove_orphan_segment_dirs(self) -> None:
        """Remove segment directories that Chroma's catalogue no longer knows (chroma-core/chroma#5259)."""
        catalogue = self.path / "chroma.sqlite3"
        if not catalogue.exists():
            return
        try:
            conn = sqlite3.connect(f"file:{catalogue}?mode=ro", uri=True, timeout=5)
            try:
                live = {row[0] for row in conn.execute("SELECT id FROM segments")}
            finally:
                conn.close()
        except sqlite3.Error:
            log.warning("vectors: cannot read Chroma's catalogue; leaving segment directories alone", exc_info=True)
            return
        for entry in self.path.iterdir():
            if entry.is_dir() and _UUID_DIR.match(entry.name) and entry.name not in live:
                shutil.rmtree(entry, ignore_errors=True)
                self.dirs_removed += 1
                log.info("vectors: removed the leftover segment directory %s", entry.name)


def _forget_shared_system(identifier: str) -> None:
    # chromadb caches one System per directory; one that failed to start stays cached and broken
    # (and its stop() raises), so a fresh client on the same path would inherit it.
    from chromadb.api.shared_system_client import SharedSystemClient

    SharedSystemClient._identifier_to_system.pop(identifier, None)  # noqa: SLF001
    SharedSystemClient._identifier_to_refcount.pop(identifier, None)  # noqa: SLF001


def _is_not_found(exc: Exception) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return "notfound" in text.replace(" ", "") or "does not exist" in text or "not found" in text
