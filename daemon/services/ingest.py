"""Ingestion: sources in, chunks with vectors out, in three overlapped stages.

1. **prepare** (a worker thread): read, hash, compare with the stored hash (unchanged sources stop here),
   decode, chunk with the model's tokenizer.
2. **embed**: chunks are gathered into batches; a chunk whose hash the project already holds (with this
   model) reuses the stored vector, the rest go to the embedding engine in one call per batch. Batch sizes
   adapt to the measured rate (about half a second of embedding each) and are capped in characters, so
   memory stays bounded on a 4 GB Pi.
3. **store**: one SQLite transaction per batch (chunk rows, FTS entries, source rows, the job's progress),
   then one Chroma upsert (and delete of replaced chunks) per batch.

The stages are connected by small bounded queues, so the model is kept busy while the previous batch is
written. A long run can be asked to step aside (``should_yield``, see ``ingest_jobs.ProjectTurns``): it stops
taking new sources, finishes the ones it has, and returns with ``run.yielded`` set; called again with the same
iterator it goes on where it stopped. A source whose chunks span batches keeps an empty content hash until its last chunk is committed:
an interrupted run leaves it "changed", and running the same job again ends in the same state as a run
that was never interrupted. ``IngestRun`` holds the figures ``ingest_status`` reports.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import Config
from ..store import documents as rows
from ..store.vectors import VectorIndex
from . import chunking
from .walk import FoundFile, decode_text

log = logging.getLogger("pirag.ingest")

_DONE = object()
MAX_BATCH_CHARS = 2 << 20          # text held by one batch (plus its vectors)
MIN_BATCH, START_BATCH, MAX_BATCH = 8, 32, 512
TARGET_BATCH_S = 0.5
MAX_REPORTED = 200                 # skipped/errors kept in a result
ETA_WINDOW_S = 30.0                # the ETA uses the rate of the last this many seconds (it changes when jobs share)


@dataclass
class SourceItem:
    """One thing to ingest: a file found on disk, or a document sent by a client."""

    source: str
    real_path: str | None = None
    data: bytes | None = None
    text: str | None = None
    file_type: str = ""
    mtime: float | None = None
    size: int = 0                   # bytes, when known before reading (files found by a walk): the ETA's unit


@dataclass
class Prepared:
    source: str
    file_type: str
    size: int
    mtime: float | None
    content_hash: str
    note: str
    chunks: list[chunking.Chunk]
    changed: bool                   # it existed before (an update, not an addition)


@dataclass
class Piece:
    """A run of one source's chunks inside a batch."""

    prepared: Prepared
    start: int
    end: int
    vectors: np.ndarray | None = None

    @property
    def first(self) -> bool:
        return self.start == 0

    @property
    def last(self) -> bool:
        return self.end == len(self.prepared.chunks)


@dataclass
class IngestRun:
    """The figures of one ingestion (inline or a job)."""

    project: str
    job_id: int | None = None
    state: str = "running"
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    files_total: int = 0
    files_done: int = 0
    chunks_total: int = 0
    chunks_done: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0
    tokens: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)
    skipped_count: int = 0
    embed_seconds: float = 0.0
    error: str = ""
    bytes_total: int = 0
    bytes_done: int = 0
    yielded: bool = False           # the last ``Ingestor.run`` stepped aside before the end of its items
    carry: list[Any] = field(default_factory=list)   # sources prepared but not begun when it did: the next turn's
    progress: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=256))

    def skip(self, source: str, reason: str) -> None:
        self.skipped_count += 1
        if len(self.skipped) < MAX_REPORTED:
            self.skipped.append((source, reason))

    def fail(self, source: str, reason: str) -> None:
        if len(self.errors) < MAX_REPORTED:
            self.errors.append((source, reason))

    def rate(self) -> float:
        elapsed = (self.finished_at or time.time()) - self.started_at
        return self.chunks_done / elapsed if elapsed > 0 else 0.0

    def advance(self, size: int) -> None:
        """``size`` more bytes of sources are done (ingested, unchanged, skipped or failed)."""
        self.bytes_done += size
        self.progress.append((time.monotonic(), self.bytes_done))

    def eta(self) -> float | None:
        """Seconds left: bytes left at the rate of the last ``ETA_WINDOW_S`` (sharing the machine with another job
        or a short ingestion slows a job down; the ETA follows), else files left at the average rate."""
        if self.state != "running" or not self.files_done:
            return None
        if self.bytes_total and len(self.progress) >= 2:
            now = time.monotonic()
            recent = [sample for sample in self.progress if sample[0] >= now - ETA_WINDOW_S] or [self.progress[-1]]
            start_t, start_bytes = recent[0] if len(recent) >= 2 else self.progress[0]
            span, done = now - start_t, self.bytes_done - start_bytes
            if span > 0 and done > 0:
                return max(0.0, (self.bytes_total - self.bytes_done) * span / done)
        elapsed = time.time() - self.started_at
        return max(0.0, elapsed / self.files_done * (self.files_total - self.files_done))

    def estimate_total_chunks(self, prepared_files: int, prepared_chunks: int) -> None:
        remaining = max(0, self.files_total - prepared_files - self.unchanged - self.skipped_count)
        average = prepared_chunks / prepared_files if prepared_files else 0
        self.chunks_total = prepared_chunks + int(average * remaining)

    def summary(self) -> dict[str, Any]:
        return {"added": self.added, "updated": self.updated, "unchanged": self.unchanged, "removed": self.removed,
                "chunks_embedded": self.chunks_embedded, "chunks_reused": self.chunks_reused,
                "tokens": self.tokens, "skipped_count": self.skipped_count, "skipped": self.skipped[:50],
                "errors": self.errors[:50], "embed_seconds": round(self.embed_seconds, 3)}


class Ingestor:
    """Runs ingestions for the documents service. ``on_write(project)`` is called after every commit."""

    def __init__(self, config: Config, db: Any, vectors: VectorIndex, embed: Any,
                 on_write: Callable[[str], None]):
        self.config = config
        self.db = db
        self.vectors = vectors
        self.embed = embed
        self.on_write = on_write
        self._prepare_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pirag-chunk")
        self.batch_size = START_BATCH

    def close(self) -> None:
        self._prepare_pool.shutdown(wait=False, cancel_futures=True)

    @property
    def chunk_tokens(self) -> int:
        configured = self.config.ingest.chunk_tokens
        return configured or chunking.default_chunk_tokens(self.embed.model.max_tokens)

    async def run(self, project: str, items: Iterable[SourceItem], run: IngestRun,
                  prune_dirs: Iterable[str] = (), on_batch: Callable[[Any], None] | None = None,
                  should_yield: Callable[[], bool] | None = None, seen: set[str] | None = None) -> IngestRun:
        """Ingest ``items`` into ``project``; ``run.files_total`` should be set by the caller.

        ``should_yield``: looked at before each new source; when it says so the run stops taking sources, finishes
        those it took and returns with ``run.yielded`` (pass an iterator to go on later). ``seen``: the sources
        met so far, shared by the turns of one ingestion; pruning happens only in a turn that reached the end."""
        model_id = self.embed.model.model_id
        collection = self.vectors.collection_name(project, "docs")
        project_row = await self.db.write(lambda conn: rows.ensure_project(conn, project, collection))
        known = await self.db.read(lambda conn: rows.source_hashes(conn, project_row.id, model_id))
        seen = set() if seen is None else seen
        source_items: Iterator[SourceItem] = iter(items)
        run.yielded = False
        prepared_queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=8)
        batch_queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=2)
        loop = asyncio.get_running_loop()

        def stepping_aside() -> bool:
            if not run.yielded and should_yield is not None and should_yield():
                run.yielded = True
            return run.yielded

        async def produce() -> None:
            prepared_files = prepared_chunks = 0
            carried, run.carry = run.carry, []
            try:
                for prepared in carried:
                    await prepared_queue.put(prepared)
                while True:
                    if stepping_aside():
                        break
                    item = next(source_items, None)
                    if item is None:
                        break
                    seen.add(item.source)
                    try:
                        result = await loop.run_in_executor(self._prepare_pool, self._prepare, item,
                                                            known.get(item.source))
                    except Exception as exc:  # one bad file never stops the job
                        log.warning("ingest %s: %s failed: %s", project, item.source, exc)
                        run.fail(item.source, f"{type(exc).__name__}: {exc}")
                        run.files_done += 1
                        run.advance(item.size)
                        continue
                    if isinstance(result, str):
                        if result == "unchanged":
                            run.unchanged += 1
                        else:
                            run.skip(item.source, result)
                        run.files_done += 1
                        run.advance(item.size)
                        continue
                    prepared_files += 1
                    prepared_chunks += len(result.chunks)
                    run.estimate_total_chunks(prepared_files, prepared_chunks)
                    await prepared_queue.put(result)
            finally:
                await prepared_queue.put(_DONE)

        async def embed_stage() -> None:
            try:
                batch: list[Piece] = []
                size = chars = 0
                while True:
                    prepared = await prepared_queue.get()
                    if prepared is _DONE:
                        break
                    # The producer runs ahead (up to the queue's size), so the step-aside is decided here too:
                    # a source not begun waits for the next turn, already prepared.
                    if stepping_aside():
                        run.carry.append(prepared)
                        continue
                    if not prepared.chunks:  # an empty file is still a source (its hash marks it done)
                        await batch_queue.put([Piece(prepared, 0, 0, np.zeros((0, 1), np.float32))])
                        continue
                    start = 0
                    while start < len(prepared.chunks):
                        room = max(1, self.batch_size - size)
                        end = min(len(prepared.chunks), start + room)
                        piece = Piece(prepared, start, end)
                        batch.append(piece)
                        size += end - start
                        chars += sum(len(c.text) for c in prepared.chunks[start:end])
                        start = end
                        if size >= self.batch_size or chars >= MAX_BATCH_CHARS:
                            await self._embed_batch(project_row.id, model_id, batch, run)
                            await batch_queue.put(batch)
                            batch, size, chars = [], 0, 0
                if batch:
                    await self._embed_batch(project_row.id, model_id, batch, run)
                    await batch_queue.put(batch)
            finally:
                await batch_queue.put(_DONE)

        async def store_stage() -> None:
            while True:
                batch = await batch_queue.get()
                if batch is _DONE:
                    return
                await self._store_batch(project_row, model_id, batch, run, on_batch)

        tasks = [asyncio.ensure_future(produce()), asyncio.ensure_future(embed_stage()),
                 asyncio.ensure_future(store_stage())]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            # A cancelled stage still puts its end marker (``finally``); when the stage that reads that queue is
            # the one that failed (a full disk in the store stage), nobody would ever make room: drain them.
            while not all(task.done() for task in tasks):
                for stage_queue in (prepared_queue, batch_queue):
                    while not stage_queue.empty():
                        stage_queue.get_nowait()
                await asyncio.sleep(0.01)
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        for directory in () if run.yielded else prune_dirs:
            vanished = [source for source in await self.db.read(
                lambda conn, d=directory: rows.sources_under(conn, project_row.id, d)) if source not in seen]
            if vanished:
                removed = await self.db.write(lambda conn, v=vanished: rows.delete_sources(conn, project_row.id, v))
                await self.vectors.delete(collection, [str(chunk_id) for chunk_id in removed])
                run.removed += len(vanished)
                self.on_write(project)
        return run

    # -- stage bodies -------------------------------------------------------------------------------------------

    def _prepare(self, item: SourceItem, known_hash: str | None) -> Prepared | str:
        """On the chunking thread: ``Prepared``, ``"unchanged"``, or a reason to skip."""
        note = ""
        if item.text is not None and item.data is None:
            data = item.text.encode("utf-8", "surrogatepass")
        elif item.data is not None:
            data = item.data
        else:
            assert item.real_path is not None
            with open(item.real_path, "rb") as handle:
                data = handle.read(self.config.ingest.max_file_bytes + 1)
            if len(data) > self.config.ingest.max_file_bytes:
                return f"larger than ingest.max_file_bytes ({self.config.ingest.max_file_bytes})"
        digest = chunking.content_hash(data)
        if known_hash == digest:
            return "unchanged"
        file_type = (item.file_type or chunking.file_type_of(item.source)).lower()
        count = self.embed.count_tokens
        size = self.chunk_tokens
        overlap = self.config.ingest.chunk_overlap_tokens
        if file_type in chunking.PDF:
            try:
                _, segments = chunking.pdf_to_segments(data)
            except ValueError as exc:
                return str(exc)
            except Exception as exc:
                return f"unreadable PDF: {type(exc).__name__}: {exc}"
            chunks = chunking.chunk_segments(segments, count, size, overlap)
        else:
            if item.text is not None and item.data is None:
                text = item.text
            else:
                decoded, note = decode_text(data)
                if decoded is None:
                    return note
                text = decoded
            chunks = chunking.chunk_text(text, file_type, count, size, overlap, item.source)
        return Prepared(source=item.source, file_type=file_type, size=len(data), mtime=item.mtime,
                        content_hash=digest, note=note, chunks=chunks, changed=known_hash is not None)

    async def _embed_batch(self, project_id: int, model_id: str, batch: list[Piece], run: IngestRun) -> None:
        hashes = [chunk.chunk_hash for piece in batch for chunk in piece.prepared.chunks[piece.start:piece.end]]
        if not hashes:
            return
        stored = await self.db.read(lambda conn: rows.vectors_by_hash(conn, project_id, model_id, hashes))
        missing: dict[str, str] = {}
        for piece in batch:
            for chunk in piece.prepared.chunks[piece.start:piece.end]:
                if chunk.chunk_hash not in stored:
                    missing.setdefault(chunk.chunk_hash, chunk.embed_text)
        fresh: dict[str, np.ndarray] = {}
        if missing:
            started = time.perf_counter()
            matrix = await self.embed.embed(list(missing.values()), bulk=True)
            elapsed = time.perf_counter() - started
            run.embed_seconds += elapsed
            fresh = dict(zip(missing.keys(), matrix))
            # adapt: about TARGET_BATCH_S of embedding per batch
            per_chunk = elapsed / len(missing)
            wanted = int(TARGET_BATCH_S / per_chunk) if per_chunk > 0 else MAX_BATCH
            self.batch_size = max(MIN_BATCH, min(MAX_BATCH, self.vectors.max_batch, (self.batch_size + wanted) // 2))
        run.chunks_embedded += len(missing)
        run.chunks_reused += len(hashes) - len(missing)
        for piece in batch:
            piece.vectors = np.stack([
                fresh[c.chunk_hash] if c.chunk_hash in fresh else stored[c.chunk_hash]
                for c in piece.prepared.chunks[piece.start:piece.end]]).astype(np.float32, copy=False)

    async def _store_batch(self, project: rows.ProjectRow, model_id: str, batch: list[Piece], run: IngestRun,
                           on_batch: Callable[[Any], None] | None) -> None:
        def write(conn: Any) -> tuple[list[int], list[int]]:
            new_ids: list[int] = []
            removed: list[int] = []
            for piece in batch:
                prepared = piece.prepared
                if piece.first:
                    piece_source_id, dropped = rows.begin_source(conn, project.id, prepared.source,
                                                                 prepared.file_type, prepared.size, prepared.mtime,
                                                                 prepared.note)
                    removed.extend(dropped)
                else:
                    piece_source_id = conn.execute("SELECT id FROM doc_source WHERE project_id = ? AND source = ?",
                                                   (project.id, prepared.source)).fetchone()[0]
                chunk_rows = [rows.ChunkRow(ordinal=piece.start + offset, chunk_hash=chunk.chunk_hash,
                                            text=chunk.text, heading=chunk.heading, line_start=chunk.line_start,
                                            line_end=chunk.line_end, tokens=chunk.tokens, vector=vector)
                              for offset, (chunk, vector) in enumerate(
                                  zip(prepared.chunks[piece.start:piece.end], piece.vectors))]
                new_ids.extend(rows.insert_chunks(conn, project.id, piece_source_id, model_id, chunk_rows))
                if piece.last:
                    rows.finish_source(conn, piece_source_id, prepared.content_hash, len(prepared.chunks))
            rows.touch_project(conn, project.id)
            if on_batch is not None:
                on_batch(conn)
            return new_ids, removed

        finished = [piece for piece in batch if piece.last]
        pending_done = run.files_done + len(finished)
        pending_chunks = run.chunks_done + sum(piece.end - piece.start for piece in batch)
        run_files, run_chunks = run.files_done, run.chunks_done
        run.files_done, run.chunks_done = pending_done, pending_chunks  # what the journal will say
        try:
            new_ids, removed = await self.db.write(write)
        except BaseException:
            run.files_done, run.chunks_done = run_files, run_chunks
            raise
        if removed:
            await self.vectors.delete(project.collection, [str(chunk_id) for chunk_id in removed])
        vectors = [piece.vectors for piece in batch if piece.vectors is not None and len(piece.vectors)]
        if new_ids:
            await self.vectors.upsert(project.collection, [str(chunk_id) for chunk_id in new_ids],
                                      np.concatenate(vectors))
        for piece in finished:
            run.advance(piece.prepared.size)
            run.tokens += sum(chunk.tokens for chunk in piece.prepared.chunks)
            if piece.prepared.changed:
                run.updated += 1
            else:
                run.added += 1
        self.on_write(project.name)


def items_from_files(files: Iterable[FoundFile]) -> Iterable[SourceItem]:
    for found in files:
        yield SourceItem(source=found.path, real_path=found.real_path, mtime=found.mtime, size=found.size)

