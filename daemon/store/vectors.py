"""The vector index: Chroma collections, one per project and kind, served by a supervised worker process.

SQLite is the truth (DESIGN.md: Storage); this index can be thrown away and rebuilt from the vectors kept in
SQLite at any time. The ``vectors`` component owns:

- **The async API** the services use: ``upsert``, ``query``, ``delete``, ``drop``, ``count``, ``ensure``,
  ``rebuild``, ``list_collections``. Every call is a request to the worker process (``vector_worker.py``),
  which holds the Chroma client: an embedded ``PersistentClient`` at ``<state_dir>/chroma`` (``store.
  vectors_backend = "chroma"``) or an ``HttpClient`` for ``chroma run`` (``"chroma-http"``). Chroma never runs
  in the daemon's process: its upsert holds the GIL, and on a full disk one never returned (DESIGN.md).
- **Supervision.** The worker is a fresh interpreter (not a fork: the daemon is threaded) on a socketpair.
  Requests go one at a time, so each timeout (``store.vectors_timeout_s``, plus a per-vector allowance for
  upserts) measures that request alone; large upserts are sent in slices, so queries interleave, and queued
  queries go before queued writes (``read_first.py``); queries of one collection that wait together are sent as
  one request (``query_batch.py``). A worker that dies or overruns its timeout is killed and started
  again; the request that found it dead is retried once on the new worker (every op is idempotent), one that
  overran is answered ``unavailable``. After an unplanned restart every collection ``ensure`` has seen is
  checked again against SQLite in the background and rebuilt if it disagrees. A healthy worker is *recycled*
  (a fresh process started first, then swapped in between two requests) after each collection drop of the
  embedded backend, whose Rust side keeps a dropped collection's memory, and, with ``store.
  vectors_worker_max_rss_mb`` set, once its RSS passes it.
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
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import numpy as np

from pirag.client.errors import Unavailable

from ..config import Config
from . import vector_worker as wire
from .query_batch import QueryBatcher
from .read_first import ReadFirstLock
from .storage import StorageCondition, StorageError, make_storage_error

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
START_TIMEOUT_S = 60.0          # a fresh interpreter importing chromadb on a loaded Pi
RESTART_BACKOFF_S = (0.0, 0.5, 2.0, 5.0)   # successive restarts within RESTART_WINDOW_S wait longer
RESTART_WINDOW_S = 60.0


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


class WorkerLost(Exception):
    """The worker died (or was killed) while a request was in flight."""


class WorkerFailed(Exception):
    """The worker answered with an error that is not about storage."""

    def __init__(self, kind: str, type_name: str, message: str):
        super().__init__(f"{type_name}: {message}")
        self.kind = kind


class _Worker:
    """One worker process and its end of the socketpair."""

    def __init__(self, process: subprocess.Popen[bytes], reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter):
        self.process = process
        self.reader = reader
        self.writer = writer
        self.started_at = time.time()

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_bytes(self) -> int:
        try:
            with open(f"/proc/{self.process.pid}/statm", "rb") as statm:
                return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return 0


class VectorIndex:
    """The ``vectors`` component: ``upsert``, ``query``, ``delete``, ``drop``, ``count``, ``ensure``."""

    name = "vectors"

    def __init__(self, config: Config):
        self.config = config
        self.backend = config.store.vectors_backend
        self.path = config.state_path / "chroma"
        self.storage = StorageCondition(config.state_path)
        self._worker: _Worker | None = None
        self._lock = ReadFirstLock()   # one request at a time; queries before queued writes
        self._queries = QueryBatcher(lambda take: self._call("query_many", take), wire.pack_vectors)
        self._request_ids = 0
        self._running = False
        self._max_batch = wire.DEFAULT_MAX_BATCH
        self._loaders: dict[str, Loader] = {}      # collections ensure() has seen: re-checked after a crash
        self._ensuring: set[str] = set()           # being checked now: the re-check after a crash skips them
        self._recovery: asyncio.Task[None] | None = None
        self._recent_restarts: list[float] = []
        self._worker_info: dict[str, Any] = {}
        self.restarts = 0
        self.rss_restarts = 0
        self.recycles = 0                          # planned replacements: after a drop, over max RSS
        self.recycle_ms = 0.0                      # how long the last one held requests up
        self._recycling = asyncio.Lock()
        self._reaping: set[asyncio.Future[None]] = set()   # recycled workers' exits, waited for in the background
        self.timeouts = 0
        self.last_error = ""
        self.last_error_at: float | None = None
        self.rebuilds = 0
        self.set_aside = 0
        self.calls = 0
        self.errors = 0
        self.last_request_ms = 0.0
        # per op: [calls, seconds waiting for the worker (its lock), seconds in the worker]: one worker serves
        # every call in turn, so a query's wait behind upserts shows here (status: components.vectors.ops)
        self.op_times: dict[str, list[float]] = {}
        self.deleted: dict[str, int] = {}          # ids deleted per collection since it was (re)built
        self.compactions = 0

    # -- lifecycle ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._running = True
        try:
            await self._spawn()
        except StorageError as exc:
            # A full or read-only disk must not keep the daemon down: reads are served from SQLite, and the
            # next request tries to start the worker again.
            self.storage.failed(exc)
            self._note_error(exc.message)
            log.error("vectors: %s; the index starts once the disk is writable again", exc.message)
        log.info("vectors: %s (%s), worker pid %d, max batch %d", self.backend,
                 self.path if self.backend == "chroma" else f"{self.config.store.chroma_host}:"
                 f"{self.config.store.chroma_port}", self._worker.pid if self._worker else -1, self._max_batch)

    async def close(self) -> None:
        self._running = False
        if self._recovery is not None:
            self._recovery.cancel()
            await asyncio.gather(self._recovery, return_exceptions=True)
        async with self._lock.hold():
            await self._stop_worker(graceful=True)
        await asyncio.gather(*self._reaping, return_exceptions=True)

    def stats(self) -> dict[str, Any]:
        worker = self._worker
        alive = worker is not None and worker.process.poll() is None
        return {"backend": self.backend, "calls": self.calls, "errors": self.errors, "rebuilds": self.rebuilds,
                "compactions": self.compactions, "deleted_since_build": sum(self.deleted.values()),
                "writes_overtaken": self._lock.overtaken, "query_batches": self._queries.stats(),
                "set_aside": self.set_aside, "max_batch": self._max_batch,
                "segment_dirs_removed": self._worker_info.get("dirs_removed", 0),
                "worker_malloc_trims": self._worker_info.get("trims", 0),
                "worker": {"pid": worker.pid if alive and worker else None, "alive": alive,
                           "rss_bytes": worker.rss_bytes() if alive and worker else 0,
                           "restarts": self.restarts, "rss_restarts": self.rss_restarts,
                           "recycles": self.recycles, "last_recycle_ms": round(self.recycle_ms, 1),
                           "timeouts": self.timeouts,
                           "last_error": self.last_error, "last_error_at": self.last_error_at,
                           "max_rss_mb": self.config.store.vectors_worker_max_rss_mb,
                           "timeout_s": self.config.store.vectors_timeout_s},
                "storage": self.storage.stats(),
                "ops": {op: {"calls": int(calls), "wait_s": round(wait, 3), "busy_s": round(busy, 3)}
                        for op, (calls, wait, busy) in self.op_times.items()}}

    def handlers(self) -> dict[str, Any]:
        return {}

    @property
    def worker_pid(self) -> int | None:
        return self._worker.pid if self._worker is not None else None

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
        worker = self._worker
        self._worker_info = await self._call("drop", {"name": collection})
        self.deleted.pop(collection, None)
        if self.backend == "chroma" and worker is not None and self._running:
            await self._recycle(worker)

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
        self._worker_info = await self._call("info", {})
        return self._worker_info

    @property
    def max_batch(self) -> int:
        return self._max_batch

    # -- requests -------------------------------------------------------------------------------------------

    async def _call(self, op: str, args: dict[str, Any] | Callable[[], dict[str, Any]], extra_s: float = 0.0) -> Any:
        """One request to the worker; ``args`` may be a function, called once the worker is free."""
        if not self._running:
            raise Unavailable("the vector index is not running")
        self.calls += 1
        timeout = self.config.store.vectors_timeout_s + extra_s
        queued = time.perf_counter()
        times = self.op_times.setdefault(op, [0, 0.0, 0.0])
        try:
            async with self._lock.hold(read=op in READ_OPS):
                granted = time.perf_counter()
                if callable(args):
                    args = args()
                times[0] += 1
                times[1] += granted - queued
                try:
                    try:
                        return await self._request(op, args, timeout)
                    except WorkerLost as exc:
                        # A crash (or an outside kill) while this request ran: the request itself may be innocent,
                        # and every op is idempotent, so it is tried once more on a fresh worker.
                        await self._replace_worker(f"the worker died during {op}: {exc}")
                    try:
                        return await self._request(op, args, timeout)
                    except WorkerLost as exc:
                        await self._replace_worker(f"the worker died again during {op}: {exc}")
                        raise Unavailable(f"the vector index worker died during {op} twice; it was restarted") from exc
                finally:
                    times[2] += time.perf_counter() - granted
        except StorageError as exc:
            self.errors += 1
            self._note_error(exc.message)
            self.storage.failed(exc)
            raise
        except Exception:
            self.errors += 1
            raise
        finally:
            await self._check_rss()

    async def _request(self, op: str, args: dict[str, Any], timeout: float, respawn: bool = True) -> Any:
        """Send one request and wait for its reply, under ``self._lock``."""
        if respawn and (self._worker is None or self._worker.process.poll() is not None):
            await self._replace_worker("the worker was not running")
        worker = self._worker
        assert worker is not None
        self._request_ids += 1
        request_id = self._request_ids
        started = time.perf_counter()
        try:
            worker.writer.write(wire.encode_frame({"id": request_id, "op": op, "args": args}))
            reply = await asyncio.wait_for(self._read_reply(worker), timeout)
        except asyncio.TimeoutError:
            self.timeouts += 1
            message = f"{op} did not finish within {timeout:.1f} s; the worker (pid {worker.pid}) was killed"
            await self._replace_worker(message)
            raise Unavailable(f"the vector index is stuck: {message} and restarted; SQLite still holds "
                              f"everything and the index is checked against it") from None
        except (ConnectionError, asyncio.IncompleteReadError, BrokenPipeError) as exc:
            raise WorkerLost(f"{type(exc).__name__}: {exc}") from exc
        finally:
            self.last_request_ms = (time.perf_counter() - started) * 1000
        if reply.get("id") != request_id:
            raise WorkerLost(f"reply {reply.get('id')} to request {request_id}")
        error = reply.get("error")
        if error is None:
            if op in ("upsert", "delete", "drop"):
                self.storage.succeeded()
            return reply.get("result")
        kind = error.get("kind", "failed")
        if kind in ("storage_full", "storage_error"):
            raise make_storage_error("full" if kind == "storage_full" else "error", self.path.parent,
                                     f"{error.get('type')}: {error.get('message')}", f"vector index {op}")
        raise WorkerFailed(kind, str(error.get("type")), str(error.get("message")))

    async def _greet(self, worker: _Worker) -> None:
        """An ``info`` request to a worker that is not the current one (yet): it answers once it is up."""
        worker.writer.write(wire.encode_frame({"id": 0, "op": "info", "args": {}}))
        try:
            reply = await asyncio.wait_for(self._read_reply(worker), START_TIMEOUT_S)
        except (asyncio.TimeoutError, ConnectionError, asyncio.IncompleteReadError) as exc:
            raise Unavailable(f"a new vector index worker did not start: {type(exc).__name__}: {exc}") from exc
        if reply.get("id") != 0 or "error" in reply:
            raise Unavailable(f"a new vector index worker answered {reply!r}")

    @staticmethod
    async def _read_reply(worker: _Worker) -> dict[str, Any]:
        (length,) = wire.HEADER.unpack(await worker.reader.readexactly(wire.HEADER.size))
        return wire.decode_body(await worker.reader.readexactly(length))

    # -- the worker process ---------------------------------------------------------------------------------

    def _settings(self) -> str:
        store = self.config.store
        return json.dumps({"backend": self.backend, "path": str(self.path), "host": store.chroma_host,
                           "port": store.chroma_port,
                           "trim_interval_s": self.config.server.malloc_trim_interval_s})

    async def _spawn(self) -> None:
        await self._open(await self._launch())

    async def _launch(self) -> _Worker:
        """Start a worker process; it imports chromadb at once and waits for its ``open`` request."""
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "pirag.daemon.store.vector_worker", "--fd", str(child_end.fileno()),
                 "--settings", self._settings(), "--log-level", self.config.log.level],
                pass_fds=(child_end.fileno(),), stdin=subprocess.DEVNULL, close_fds=True)
        except BaseException:
            parent_end.close()
            raise
        finally:
            child_end.close()
        reader, writer = await asyncio.open_unix_connection(sock=parent_end, limit=wire.MAX_FRAME)
        return _Worker(process, reader, writer)

    async def _open(self, worker: _Worker) -> None:
        """Make ``worker`` the current one and open its Chroma client (under the lock, or before any request)."""
        self._worker = worker
        try:
            info = await self._request("open", {}, START_TIMEOUT_S + self.config.store.vectors_timeout_s,
                                       respawn=False)
        except WorkerLost as exc:
            await self._stop_worker(graceful=False)
            raise Unavailable(f"the vector index worker failed to start: {exc}") from exc
        except BaseException:
            await self._stop_worker(graceful=False)
            raise
        self._worker_info = info
        self._max_batch = int(info.get("max_batch", wire.DEFAULT_MAX_BATCH))

    async def _stop_worker(self, graceful: bool, wait: bool = True) -> None:
        """Stop the current worker: a clean close of its client first when ``graceful`` (killed if that does not
        answer), then its exit is waited for, here or (``wait=False``: a recycle, whose successor may open the
        directory as soon as the client is closed) in the background."""
        worker, self._worker = self._worker, None
        if worker is None:
            return
        closed = False
        if graceful and worker.process.poll() is None:
            try:
                worker.writer.write(wire.encode_frame({"id": 0, "op": "close", "args": {}}))
                await asyncio.wait_for(self._read_reply(worker), 10.0)
                closed = True
            except (asyncio.TimeoutError, ConnectionError, asyncio.IncompleteReadError, OSError):
                log.warning("vectors: the worker (pid %d) did not close in time; killing it", worker.pid)
        if not closed and worker.process.poll() is None:
            worker.process.kill()
        worker.writer.close()
        if wait:
            await self._reap(worker)
        else:
            task = asyncio.ensure_future(self._reap(worker))
            self._reaping.add(task)
            task.add_done_callback(self._reaping.discard)

    @staticmethod
    async def _reap(worker: _Worker) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, worker.process.wait, 10.0)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            await loop.run_in_executor(None, worker.process.wait)

    async def _replace_worker(self, reason: str) -> None:
        """Kill the worker (if alive), start a fresh one, and re-check the known collections against SQLite."""
        self._note_error(reason)
        log.error("vectors: %s; restarting the worker", reason)
        await self._stop_worker(graceful=False)
        now = time.monotonic()
        self._recent_restarts = [t for t in self._recent_restarts if now - t < RESTART_WINDOW_S] + [now]
        await asyncio.sleep(RESTART_BACKOFF_S[min(len(self._recent_restarts), len(RESTART_BACKOFF_S)) - 1])
        self.restarts += 1
        await self._spawn()
        if self._loaders and (self._recovery is None or self._recovery.done()):
            self._recovery = asyncio.ensure_future(self._recheck_known_collections())

    async def _check_rss(self) -> None:
        limit_mb = self.config.store.vectors_worker_max_rss_mb
        worker = self._worker
        if not limit_mb or worker is None or not self._running:
            return
        rss = worker.rss_bytes()
        if rss <= limit_mb << 20:
            return
        log.warning("vectors: the worker's RSS is %d MiB, over store.vectors_worker_max_rss_mb = %d; "
                    "replacing it", rss >> 20, limit_mb)
        if await self._recycle(worker):
            self.rss_restarts += 1

    async def _recycle(self, worker: _Worker) -> bool:
        """Replace a healthy ``worker`` by a fresh process; False when it was replaced meanwhile.

        The new process is started (and imports chromadb, the second or so a start costs) while the old one
        still serves; only the old one's clean close and the new one's ``open`` hold requests up. Nothing is
        re-checked: the old worker answered every request it was sent and closed its client."""
        async with self._recycling:
            if self._worker is not worker:
                return False
            fresh = await self._launch()
            try:
                # Answered once the new process has imported chromadb: until then the old one serves.
                await self._greet(fresh)
                async with self._lock.hold():
                    if self._worker is not worker:
                        return False
                    started = time.perf_counter()
                    await self._stop_worker(graceful=True, wait=False)
                    spare, fresh = fresh, None
                    await self._open(spare)     # on failure it stops the new worker: the next request respawns
                    self.recycles += 1
                    self.recycle_ms = (time.perf_counter() - started) * 1000
                    return True
            finally:
                if fresh is not None:   # not used: the old worker was replaced meanwhile, or open failed
                    fresh.process.kill()
                    fresh.writer.close()
                    await self._reap(fresh)

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

    def _note_error(self, message: str) -> None:
        self.last_error = message
        self.last_error_at = time.time()

    # -- test hooks -----------------------------------------------------------------------------------------

    async def _stall_worker(self, seconds: float) -> None:
        """Test-only: a request that hangs in the worker like the disk-full upsert did."""
        await self._call("stall", {"seconds": seconds})
