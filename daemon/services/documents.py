"""The ``documents`` component: projects, ingestion (inline or as journaled jobs), search, the query cache.

It composes the SQLite rows (``store/documents.py``), the vector index (``store/vectors.py``), the embedding
engine, the ingest pipeline (``ingest.py``) and the searcher (``search.py``), and provides the ops of the
documents area. What it guarantees:

- **Jobs are journaled before they are acknowledged.** An ingestion of more than ``INLINE_FILES`` files is
  written to ``doc_job`` and only then answered with its id; a job left ``queued`` or ``running`` by a crash
  runs again at the next start and, ingestion being incremental, ends in the state an uninterrupted run would
  have reached.
- **Fair jobs** (``ingest_jobs.py``): two jobs of different projects run side by side, the smallest queued
  first (the oldest once it has waited a minute); a long ingestion steps aside between sources for a short
  one of the same project, so a one-file ingest never waits for a large job to finish.
- **One writer per project.** Ingestions, source drops and project drops of one project are serialized
  by a per-project lock (a long ingestion holds it turn by turn, never in the middle of a source), so two
  pipelines never rewrite the same source at once.
- **No stale cache.** Every committed write bumps the project's generation number, which is part of every
  cache key (``query_cache.py``).
- **Index health.** At start, each project's collection is compared with SQLite's chunk count in the
  background; one that fails to open or disagrees is rebuilt from SQLite's vectors, and collections of
  projects that no longer exist are dropped. ``reindex`` does the rebuild on demand.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from pirag.client.errors import Forbidden, InvalidArgument, NotFound, StorageError
from pirag.client.protocol.documents import (
    DropProjectArgs, DropProjectResult, DropSourceArgs, DropSourceResult, IngestArgs, IngestResult,
    IngestStatusArgs, IngestStatusResult, JobStatus, ListProjectsArgs, ListProjectsResult, ListSourcesArgs,
    ListSourcesResult, ProjectInfo, ReindexArgs, ReindexResult, SearchArgs, SearchResult, Skipped, SourceInfo,
)

from ..config import Config
from ..store import documents as rows
from ..store.vectors import VectorIndex
from .ingest import Ingestor, IngestRun, SourceItem, items_from_files
from .ingest_jobs import JobQueue, ProjectTurns, QueuedJob
from .query_cache import QueryCache, normalize_query
from .search import Searcher
from .walk import FoundFile, OutsideRoots, resolve_roots, walk

log = logging.getLogger("pirag.documents")

INLINE_FILES = 8          # path ingestions up to this many files run inline; more become a journaled job
SHORT_BYTES = 256 << 10   # an ingestion of at most INLINE_FILES sources and this many bytes is short: a long one
                          # of the same project steps aside for it (ingest_jobs.ProjectTurns)
REBUILD_BATCH = 2000
STORAGE_RETRY_S = 10.0    # a job stopped by a full or read-only disk is tried again this often
FINISHED_RUNS_KEPT = 32   # finished jobs whose live figures ingest_status still shows; older ones: the journal's


class DocumentService:
    name = "documents"

    def __init__(self, config: Config, db: Any, vectors: VectorIndex, embed: Any):
        self.config = config
        self.db = db
        self.vectors = vectors
        self.embed = embed
        self.cache = QueryCache(config.search.cache_entries, config.search.cache_ttl_s, config.search.cache_max_mb << 20)
        self.ingestor = Ingestor(config, db, vectors, embed, self._bump)
        self.searcher = Searcher(db, vectors, embed)
        self.projects: dict[str, rows.ProjectRow] = {}
        self.generations: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._jobs = JobQueue()
        self._turns = ProjectTurns()
        self._drops: dict[str, int] = {}          # drop_project calls per project (a long upload checks it)
        self._job_waiters: dict[int, asyncio.Future[IngestResult]] = {}
        self._runs: dict[int, IngestRun] = {}
        self._finished_runs: deque[int] = deque()  # job ids in _runs that finished, oldest first (bounded)
        self._compacting: set[str] = set()          # projects whose collection is being compacted
        self._live_chunks: dict[str, int] = {}      # chunks per project when compaction last looked
        self._running_jobs: dict[int, tuple[str, asyncio.Task[Any]]] = {}
        self._job_tasks: set[asyncio.Task[Any]] = set()
        self._tasks: list[asyncio.Task[Any]] = []
        self.health: dict[str, str] = {}
        self.searches = 0
        self.paused_jobs: dict[int, str] = {}   # job id -> the storage error that stopped it

    # -- lifecycle ----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        pending = self.db.register_migrations("documents", rows.DOCUMENT_MIGRATIONS)
        if pending is not None:
            await pending
        await self._load_projects()
        self._tasks.append(asyncio.ensure_future(self._job_runner()))
        self._tasks.append(asyncio.ensure_future(self._check_index_health()))
        for job_id, project, _ in await self.db.read(rows.unfinished_jobs):
            log.info("documents: resuming ingestion job %d (%s)", job_id, project)
            self._jobs.put(job_id, project)

    async def close(self) -> None:
        for task in [*self._tasks, *self._job_tasks]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._job_tasks, return_exceptions=True)
        self._tasks.clear()
        for future in self._job_waiters.values():
            if not future.done():
                future.cancel()
        self.ingestor.close()

    def reload(self, config: Config) -> None:
        self.config = config
        self.cache.configure(config.search.cache_entries, config.search.cache_ttl_s, config.search.cache_max_mb << 20)

    def stats(self) -> dict[str, Any]:
        running = sorted(self._running_jobs)
        return {"projects": len(self.projects), "query_cache": self.cache.stats(), "searches": self.searches,
                "phases_ms": self.searcher.phases.stats(),
                "jobs_queued": len(self._jobs), "job_running": running[0] if running else None,
                "jobs_running": running,
                "batch_size": self.ingestor.batch_size, "index_health": dict(self.health),
                "jobs_paused": dict(self.paused_jobs)}

    def handlers(self) -> dict[str, Any]:
        return {"ingest": self._ingest, "ingest_status": self._ingest_status, "search": self._search,
                "list_projects": self._list_projects, "drop_project": self._drop_project,
                "list_sources": self._list_sources, "drop_source": self._drop_source, "reindex": self._reindex}

    # -- shared state -------------------------------------------------------------------------------------------

    async def _load_projects(self) -> None:
        found = await self.db.read(rows.all_projects)
        self.projects = {project.name: project for project in found}
        for name in self.projects:
            self.generations.setdefault(name, 0)

    def _bump(self, project: str) -> None:
        """After a committed write to ``project``: cached results for it are stale from now on."""
        self.generations[project] = self.generations.get(project, 0) + 1
        if project not in self.projects:
            asyncio.ensure_future(self._load_projects())
        row = self.projects.get(project)
        if (row is not None and project not in self._compacting
                and self.vectors.compaction_due(row.collection, self._live_chunks.get(project, 0))):
            self._compacting.add(project)
            task = asyncio.ensure_future(self._compact(project))
            self._job_tasks.add(task)           # cancelled at close like the jobs; forgotten once done
            task.add_done_callback(self._job_tasks.discard)

    async def _compact(self, project: str) -> None:
        """Rebuild the project's collection once its deleted chunks outnumber its live ones (re-ingested
        sources leave every old chunk in Chroma's HNSW: ``vectors.COMPACT_MIN_DELETED``), under the project's
        lock like any write, so no ingestion interleaves."""
        try:
            async with self._lock(project):
                row = self.projects.get(project)
                if row is None:
                    return
                live = self._live_chunks[project] = await self._expected(row)
                if not self.vectors.compaction_due(row.collection, live):
                    return
                await self.vectors.compact(row.collection, self._loader(row))
                self.health[project] = "ok"
            self._bump(project)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("documents: compacting the index of %s failed (searches keep working)", project)
        finally:
            self._compacting.discard(project)

    def _lock(self, project: str) -> asyncio.Lock:
        lock = self._locks.get(project)
        if lock is None:
            lock = self._locks[project] = asyncio.Lock()
        return lock

    # -- ingest -------------------------------------------------------------------------------------------------

    async def _ingest(self, args: IngestArgs, ctx: Any) -> IngestResult:
        if bool(args.paths) == bool(args.documents):
            raise InvalidArgument("ingest takes either paths (read by the daemon) or documents (sent), not both "
                                  "or neither")
        if args.documents:
            items = [SourceItem(source=doc.source, data=doc.data, text=None if doc.data is not None else doc.text,
                                file_type=doc.file_type, mtime=doc.mtime) for doc in args.documents]
            run = IngestRun(args.project, files_total=len(items))
            size = sum(len(doc.data) if doc.data is not None else len(doc.text or "") for doc in args.documents)
            if len(items) <= INLINE_FILES and size <= SHORT_BYTES:
                async with self._turns.short(self._lock(args.project), args.project):
                    await self.ingestor.run(args.project, items, run)
            else:
                drops = self._drops.get(args.project, 0)

                async def not_dropped() -> bool:   # asked for before a drop: must not create the project again
                    return self._drops.get(args.project, 0) == drops

                await self._ingest_in_turns(run, items, (), None, not_dropped)
            await self._refresh_project(args.project)
            return self._result(run, "cancelled" if run.state == "cancelled" else "done")
        found = await self._walk(args.paths)
        if len(found.files) <= INLINE_FILES:
            run = IngestRun(args.project, files_total=len(found.files))
            for source, reason in found.skipped:
                run.skip(source, reason)
            short = sum(found_file.size for found_file in found.files) <= SHORT_BYTES
            async with self._turns.short(self._lock(args.project), args.project) if short else self._lock(
                    args.project):
                await self.ingestor.run(args.project, items_from_files(found.files), run,
                                        prune_dirs=found.directories if args.prune else ())
            await self._refresh_project(args.project)
            return self._result(run, "done")
        request = {"paths": list(args.paths), "prune": args.prune}
        job_id = await self.db.write(lambda conn: rows.create_job(conn, args.project, request))
        future: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        self._job_waiters[job_id] = future
        self._jobs.put(job_id, args.project, sum(found_file.size for found_file in found.files))
        if args.wait:
            return await asyncio.shield(future)
        return IngestResult(job_id=job_id, state="queued", files_total=len(found.files))

    async def _walk(self, paths: list[str]) -> Any:
        roots = resolve_roots(self.config.ingest.allowed_roots)
        if not roots:
            raise Forbidden("this daemon reads no files: ingest.allowed_roots is empty (send the contents instead: "
                            "`pirag ingest --upload`)", details={"allowed_roots": []})
        try:
            return await asyncio.to_thread(walk, paths, roots, self.config.ingest.max_file_bytes)
        except OutsideRoots as exc:
            raise Forbidden(f"{exc} is outside the allowed roots (after resolving symlinks)",
                            details={"path": str(exc), "allowed_roots": [str(root) for root in roots]}) from exc
        except FileNotFoundError as exc:
            raise NotFound(f"no such file or directory: {exc}", details={"path": str(exc)}) from exc

    async def _refresh_project(self, project: str) -> None:
        if project not in self.projects:
            await self._load_projects()

    def _result(self, run: IngestRun, state: str) -> IngestResult:
        return IngestResult(
            job_id=run.job_id, state=state, files_total=run.files_total, files_done=run.files_done,
            sources_added=run.added, sources_updated=run.updated, sources_unchanged=run.unchanged,
            sources_removed=run.removed, chunks_total=run.chunks_done, chunks_embedded=run.chunks_embedded,
            chunks_reused=run.chunks_reused, tokens=run.tokens, skipped=[Skipped(source=s, reason=r) for s, r in run.skipped],
            errors=[Skipped(source=s, reason=r) for s, r in run.errors],
            seconds=round((run.finished_at or time.time()) - run.started_at, 3))

    async def _ingest_in_turns(self, run: IngestRun, items: Any, prune_dirs: Any,
                               on_batch: Any, may_go_on: Any) -> None:
        """A long ingestion: the project's lock turn by turn, stepping aside between sources for short ones.
        ``may_go_on()`` is awaited under the lock before each turn; False ends the ingestion there."""
        lock = self._lock(run.project)
        source_items = iter(items)
        seen: set[str] = set()
        while True:
            async with lock:
                if not await may_go_on():
                    run.state = "cancelled"
                    return
                await self.ingestor.run(run.project, source_items, run, prune_dirs=prune_dirs, on_batch=on_batch,
                                        should_yield=lambda: self._turns.wanted(run.project), seen=seen)
            if not run.yielded:
                return

    async def _job_runner(self) -> None:
        while True:
            job = await self._jobs.next()
            task = asyncio.ensure_future(self._job_slot(job))
            self._job_tasks.add(task)
            task.add_done_callback(self._job_tasks.discard)

    async def _job_slot(self, job: QueuedJob) -> None:
        try:
            await self._run_job(job.job_id)
        except asyncio.CancelledError:
            raise
        except StorageError as exc:  # even the job's start could not be journaled
            self._pause_job(job.job_id, job.project, exc)
        except Exception:
            log.exception("documents: job %d failed", job.job_id)
        finally:
            self._jobs.done(job.job_id)

    async def _run_job(self, job_id: int) -> None:
        found_rows = await self.db.read(lambda conn: conn.execute(
            "SELECT project, request, state, attempts FROM doc_job WHERE id = ?", (job_id,)).fetchone())
        if found_rows is None or found_rows[2] not in ("queued", "running"):
            return
        import json

        project, request_json, _, attempts = found_rows
        request = json.loads(request_json)
        run = IngestRun(project, job_id=job_id)
        self._runs[job_id] = run
        # Only a job still queued (or left running by a crash) starts: a drop of its project may have
        # cancelled it since the read above.
        started = await self.db.write(lambda conn: conn.execute(
            "UPDATE doc_job SET state = 'running', started_at = ?, attempts = ? WHERE id = ?"
            " AND state IN ('queued', 'running')", (run.started_at, attempts + 1, job_id)).rowcount)
        waiter = self._job_waiters.get(job_id)
        if not started:
            run.state = "cancelled"
            self._finish_waiter(job_id, waiter, run)
            return
        task = asyncio.ensure_future(self._job_body(run, request))
        self._running_jobs[job_id] = (project, task)
        try:
            await task
            state, error = ("cancelled", "the project was dropped") if run.state == "cancelled" else ("done", "")
        except asyncio.CancelledError:
            if run.state != "cancelled":  # the daemon is stopping: the job stays 'running', resumed at next start
                task.cancel()
                raise
            state, error = "cancelled", "the project was dropped"
        except StorageError as exc:
            # A full or read-only disk: the job stops after its last committed batch and stays 'running' in the
            # journal (nothing can be written now anyway); it is tried again until the disk takes writes, and
            # resumes like a job after a crash (sources already committed are unchanged and skipped).
            run.state, run.error = "paused", exc.message
            self._pause_job(job_id, project, exc)
            return
        except Exception as exc:
            state, error = "failed", f"{type(exc).__name__}: {exc}"
            run.error = error
        finally:
            self._running_jobs.pop(job_id, None)
        run.state = state
        run.finished_at = time.time()
        try:
            await self.db.write(lambda conn: rows.update_job(
                conn, job_id, state=state, finished_at=run.finished_at, files_total=run.files_total,
                files_done=run.files_done, chunks_total=run.chunks_done, chunks_done=run.chunks_done,
                summary=run.summary(), error=error))
        finally:
            await self._refresh_project(project)
            self._finish_waiter(job_id, waiter, run)

    def _pause_job(self, job_id: int, project: str, error: StorageError) -> None:
        log.warning("documents: ingestion job %d (%s) paused: %s; retrying every %.0f s", job_id, project,
                    error.message, STORAGE_RETRY_S)
        self.paused_jobs[job_id] = error.message

        async def resume() -> None:
            await asyncio.sleep(STORAGE_RETRY_S)
            await self._refresh_project(project)
            row = self.projects.get(project)
            if row is not None:  # a batch may have committed to SQLite without reaching the index
                try:
                    async with self._lock(project):
                        self.health[project] = await self.vectors.ensure(row.collection, await self._expected(row),
                                                                         self._loader(row))
                except Exception as exc:  # still failing: the job's own attempt says so
                    log.info("documents: the index of %s is not checked yet: %s", project, exc)
            self.paused_jobs.pop(job_id, None)
            self._jobs.put(job_id, project)

        self._tasks.append(asyncio.ensure_future(resume()))

    def _finish_waiter(self, job_id: int, waiter: asyncio.Future[IngestResult] | None, run: IngestRun) -> None:
        if waiter is not None and not waiter.done():
            waiter.set_result(self._result(run, run.state))
        self._job_waiters.pop(job_id, None)
        # A daemon that runs for months ingests many jobs (a nightly `pirag ingest DIR`): each run holds its
        # skipped/error lists and progress window, so only the newest FINISHED_RUNS_KEPT stay in memory.
        self._finished_runs.append(job_id)
        while len(self._finished_runs) > FINISHED_RUNS_KEPT:
            oldest = self._finished_runs.popleft()
            if oldest not in self._running_jobs:
                self._runs.pop(oldest, None)

    async def _job_body(self, run: IngestRun, request: dict[str, Any]) -> None:
        found = await self._walk(request["paths"])
        run.files_total = len(found.files)
        run.bytes_total = sum(found_file.size for found_file in found.files)
        for source, reason in found.skipped:
            run.skip(source, reason)

        def journal(conn: Any) -> None:
            rows.update_job(conn, run.job_id, files_total=run.files_total, files_done=run.files_done,
                            chunks_total=max(run.chunks_total, run.chunks_done), chunks_done=run.chunks_done)

        async def still_running() -> bool:
            # A drop of the project cancels its jobs under the project's lock: a job that was queued (not
            # running) when the project was dropped must not create it again, nor may its next turn.
            state = await self.db.read(lambda conn: conn.execute(
                "SELECT state FROM doc_job WHERE id = ?", (run.job_id,)).fetchone())
            return state is not None and state[0] == "running"

        await self._ingest_in_turns(run, items_from_files(found.files),
                                    found.directories if request.get("prune", True) else (), journal, still_running)

    async def _ingest_status(self, args: IngestStatusArgs, ctx: Any) -> IngestStatusResult:
        found = await self.db.read(lambda conn: rows.job_rows(conn, args.job_id, args.limit))
        if args.job_id is not None and not found:
            raise NotFound(f"no ingestion job {args.job_id}")
        jobs = []
        for row in found:
            run = self._runs.get(row["id"])
            live = run is not None and run.state == "running" and row["state"] == "running"
            summary = row["summary"] or {}
            errors = run.errors if live and run else summary.get("errors", [])
            status = JobStatus(
                job_id=row["id"], project=row["project"], state=row["state"], created_at=row["created_at"],
                started_at=row["started_at"], finished_at=row["finished_at"], attempts=row["attempts"],
                files_total=run.files_total if live else row["files_total"],
                files_done=run.files_done if live else row["files_done"],
                chunks_total=max(run.chunks_total, run.chunks_done) if live else row["chunks_total"],
                chunks_done=run.chunks_done if live else row["chunks_done"],
                chunks_per_s=round(run.rate(), 2) if run else 0.0,
                eta_s=round(run.eta(), 1) if live and run.eta() is not None else None,
                errors=[Skipped(source=s, reason=r) for s, r in errors][:50],
                skipped=run.skipped_count if live else summary.get("skipped_count", 0), error=row["error"],
                result=self._result(run, row["state"]) if run and row["state"] != "running" else None)
            jobs.append(status)
        return IngestStatusResult(jobs=jobs)

    # -- search -------------------------------------------------------------------------------------------------

    async def _search(self, args: SearchArgs, ctx: Any) -> SearchResult:
        started = time.perf_counter()
        self.searches += 1
        if args.projects:
            missing = [name for name in args.projects if name not in self.projects]
            if missing:
                await self._load_projects()
                missing = [name for name in args.projects if name not in self.projects]
            if missing:
                raise NotFound(f"no such project: {', '.join(missing)}", details={"projects": missing})
            searched = [self.projects[name] for name in dict.fromkeys(args.projects)]
        else:
            searched = list(self.projects.values())
        k = args.k or self.config.search.default_k
        per_file = self.config.search.per_file if args.per_file is None else args.per_file
        key = (normalize_query(args.query), k, tuple(sorted((p.name, self.generations.get(p.name, 0))
                                                            for p in searched)),
               bool(args.projects), args.path_glob, tuple(sorted(args.file_types)), args.ingested_after,
               args.ingested_before, args.max_chars, self.embed.model.model_id, args.mode, per_file)
        if args.use_cache:
            cached = self.cache.get(key)
            if cached is not None:
                return SearchResult(hits=cached.hits, cached=True, truncated=cached.truncated,
                                    took_ms=round((time.perf_counter() - started) * 1000, 3))
        result = await self.searcher.search(args, searched, k, per_file)
        if args.use_cache:
            self.cache.put(key, frozenset(p.name for p in searched), result)
        return result

    # -- projects and sources -----------------------------------------------------------------------------------

    async def _list_projects(self, args: ListProjectsArgs, ctx: Any) -> ListProjectsResult:
        found = await self.db.read(rows.project_summaries)
        return ListProjectsResult(projects=[ProjectInfo(**item) for item in found])

    async def _drop_project(self, args: DropProjectArgs, ctx: Any) -> DropProjectResult:
        name = args.project
        watch = _component(ctx, "watch")
        if watch is not None:  # its watches first: they would create the project again
            await watch.drop_project(name)
        self._drops[name] = self._drops.get(name, 0) + 1
        for job_id, (project_name, task) in list(self._running_jobs.items()):
            if project_name != name:
                continue
            run = self._runs.get(job_id)
            if run is not None:
                run.state = "cancelled"
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        async with self._lock(name):
            project = await self.db.read(lambda conn: rows.get_project(conn, name))
            # Jobs of the project not yet run are cancelled even if it has no rows yet (its first ingestion
            # still queued): asked for before the drop, they must not create it again after it.
            chunks = await self.db.write(lambda conn: (
                conn.execute("UPDATE doc_job SET state = 'cancelled', finished_at = ? WHERE project = ?"
                             " AND state IN ('queued', 'running')", (time.time(), name)),
                rows.delete_project(conn, name) if project is not None else 0)[1])
            if project is not None:
                await self.vectors.drop(project.collection)
            self.projects.pop(name, None)
            self._bump(name)
            self.generations.pop(name, None)
            self._live_chunks.pop(name, None)
            self.cache.forget_project(name)
        memory_result: dict[str, int] = {}
        memory = _component(ctx, "memory")
        if memory is not None and hasattr(memory, "drop_project"):
            outcome = await memory.drop_project(name)
            if isinstance(outcome, dict):
                memory_result = {str(key): int(value) for key, value in outcome.items()
                                 if isinstance(value, (int, float))}
        return DropProjectResult(dropped=project is not None, chunks=chunks, memory=memory_result)

    async def _list_sources(self, args: ListSourcesArgs, ctx: Any) -> ListSourcesResult:
        project = self.projects.get(args.project)
        if project is None:
            raise NotFound(f"no such project: {args.project}")
        found = await self.db.read(lambda conn: rows.list_sources(conn, project.id, args.prefix, args.limit,
                                                                  args.offset))
        return ListSourcesResult(sources=[SourceInfo(**item) for item in found])

    async def _drop_source(self, args: DropSourceArgs, ctx: Any) -> DropSourceResult:
        project = self.projects.get(args.project)
        if project is None:
            raise NotFound(f"no such project: {args.project}")
        async with self._lock(args.project):
            count, removed = await self._delete_sources(project, args.sources)
        return DropSourceResult(removed=count, chunks=len(removed))

    async def _delete_sources(self, project: rows.ProjectRow, sources: list[str]) -> tuple[int, list[int]]:
        """Delete sources (the caller holds the project's lock): (sources removed, their chunk ids)."""
        def drop(conn: Any) -> tuple[int, list[int]]:
            before = conn.execute("SELECT count(*) FROM doc_source WHERE project_id = ?", (project.id,)).fetchone()[0]
            removed = rows.delete_sources(conn, project.id, sources)
            after = conn.execute("SELECT count(*) FROM doc_source WHERE project_id = ?", (project.id,)).fetchone()[0]
            return before - after, removed

        count, removed = await self.db.write(drop)
        await self.vectors.delete(project.collection, [str(chunk_id) for chunk_id in removed])
        self._bump(project.name)
        return count, removed

    async def sync_sources(self, project: str, files: list[FoundFile], removed: list[str], run: IngestRun) -> IngestRun:
        """Bring sources of ``project`` in step with the disk (the watch service's entry): ingest ``files``
        incrementally, then delete the ``removed`` sources, under the project's lock like any ingestion.
        Ingesting first lets a renamed file reuse the vectors of its old name (chunk hashes)."""
        async with self._lock(project):
            if files:
                await self.ingestor.run(project, items_from_files(files), run)
            if removed:
                project_row = await self.db.read(lambda conn: rows.get_project(conn, project))
                if project_row is not None:
                    run.removed += (await self._delete_sources(project_row, removed))[0]
        await self._refresh_project(project)
        return run

    # -- index health -------------------------------------------------------------------------------------------

    def _loader(self, project: rows.ProjectRow):  # noqa: ANN202
        model_id = self.embed.model.model_id

        async def load() -> AsyncIterator[tuple[list[str], np.ndarray, None]]:
            after = 0
            while True:
                batch = await self.db.read(lambda conn, a=after: rows.iter_vectors(conn, project.id, a, REBUILD_BATCH,
                                                                                  model_id))
                if not batch:
                    return
                after = batch[-1][0]
                matrix = np.frombuffer(b"".join(blob for _, blob in batch), dtype="<f4").reshape(len(batch), -1)
                yield [str(chunk_id) for chunk_id, _ in batch], matrix, None

        return load

    async def _expected(self, project: rows.ProjectRow) -> int:
        model_id = self.embed.model.model_id
        return await self.db.read(lambda conn: conn.execute(
            "SELECT count(*) FROM doc_chunk WHERE project_id = ? AND model_id = ?", (project.id, model_id)).fetchone()[0])

    async def _check_index_health(self) -> None:
        try:
            for project in list(self.projects.values()):
                async with self._lock(project.name):
                    outcome = await self.vectors.ensure(project.collection, await self._expected(project),
                                                        self._loader(project))
                self.health[project.name] = outcome
                if outcome != "ok":
                    self._bump(project.name)
            known = {project.collection for project in self.projects.values()}
            for collection in await self.vectors.list_collections():
                if collection.startswith("docs-") and collection not in known:
                    log.warning("documents: dropping the orphan collection %s", collection)
                    await self.vectors.drop(collection)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("documents: the index health check failed (search keeps working on what exists)")

    async def _reindex(self, args: ReindexArgs, ctx: Any) -> ReindexResult:
        started = time.perf_counter()
        if args.project:
            if args.project not in self.projects:
                raise NotFound(f"no such project: {args.project}")
            targets = [self.projects[args.project]]
        else:
            targets = list(self.projects.values())
        written: dict[str, int] = {}
        for project in targets:
            async with self._lock(project.name):
                written[project.name] = await self.vectors.rebuild(project.collection, self._loader(project))
                self.health[project.name] = "rebuilt"
            self._bump(project.name)
        return ReindexResult(projects=written, seconds=round(time.perf_counter() - started, 3))


def _component(ctx: Any, name: str) -> Any:
    try:
        return ctx.app.component(name)
    except (KeyError, AttributeError):
        return None
