"""The ``memory`` component: facts an agent was told to keep, the episodic timeline, export/import and backup.

It composes the SQLite pool (the truth: rows, FTS5, vectors), the embedding engine and the Chroma index:

- **remember**: an exact duplicate (same normalized text in the same project) returns the existing fact;
  near-duplicates (cosine >= ``memory.near_duplicate_threshold``) are reported and, with
  ``memory.merge_near_duplicates``, merged into the closest one (its old version kept in the history).
  The reply is sent once the row (with its vector) is committed; the index is updated right after.
- **recall**: the vector side and BM25 over FTS5, fused by the retrieval core (``hybrid``), with project, tag
  (any/all) and time filters; results are cached per project generation.
- **forget** deletes the row, its history and tags, its FTS entry (trigger), its vector in the index, and
  every cached result.
- Episodes live in ``services/episodes.py``; this component serves their ops and runs their background work.
- ``drop_project(name)`` (called by the documents service) removes a project's facts and episodes entirely.

Background work: bring the fact collections in step with SQLite (rebuilding them if needed; exact search
serves meanwhile), re-embed facts whose vector came from another model, embed new episodes, prune episodes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pirag.client.errors import InvalidArgument
from pirag.client.protocol.memory import (
    BackupArgs, BackupResult, ExportedEpisode, ExportedFact, ExportMemoryArgs, ExportMemoryResult, FactHit,
    ForgetArgs, ForgetResult, GetFactArgs, GetFactResult, ImportMemoryArgs, ImportMemoryResult, ListFactsArgs,
    ListFactsResult, RecallArgs, RecallResult, RememberArgs, RememberResult, UpdateFactArgs, UpdateFactResult,
)

from ..app import RequestContext
from ..config import Config
from ..store import episodes as episode_rows
from ..store import facts as fact_rows
from ..store.facts import Filter
from ..store.migrations import MEMORY_MIGRATIONS
from ..store.sqlite_pool import Database
from ..timerange import TimeRange, parse_time_range, zone_from_config
from .episodes import Episodes
from .recall import RecallCache, VectorSide
from .retrieval import KEYWORD_SCORED, WEIGHTS, Completed, Phases, Scored, retrieve, similarities

log = logging.getLogger("pirag.memory")

_TAG = re.compile(r"^[\w][\w.:/+#@-]{0,63}$", re.UNICODE)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_IMPORT_EMBED_BATCH = 128


class MemoryService:
    name = "memory"

    def __init__(self, config: Config, db: Database, embed: Any, vectors: Any | None = None,
                 clock: Callable[[], float] = time.time):
        self.config = config
        self.db = db
        self.embed = embed
        self.vectors = vectors
        self.clock = clock
        self.phases = {"facts": Phases(), "episodes": Phases()}     # recall's and recall_episodes' steps
        self.zone = zone_from_config(config.memory.timezone)
        db.register_migrations("memory", MEMORY_MIGRATIONS)
        self.fact_vectors = VectorSide("facts", fact_rows, db, vectors)
        self.cache = RecallCache(config.memory.recall_cache_entries, config.search.cache_ttl_s,
                                 config.memory.recall_cache_max_mb << 20)
        self.episodes = Episodes(self)
        self._tasks: list[asyncio.Task[None]] = []
        self.counts: dict[str, int] = {"remembered": 0, "duplicates": 0, "merged": 0, "recalls": 0, "forgotten": 0,
                                       "updated": 0, "reembedded": 0}

    # -- lifecycle ------------------------------------------------------------------------------------------

    @property
    def model_id(self) -> str:
        return str(self.embed.model.model_id)

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._maintain_facts(), name="pirag-memory-facts"),
                       *self.episodes.start_tasks()]

    async def close(self) -> None:
        tasks, self._tasks = self._tasks + self.episodes.tasks, []
        self.episodes.tasks = []
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        for side in (self.fact_vectors, self.episodes.vectors):
            await side.stop()

    def reload(self, config: Config) -> None:
        self.zone = zone_from_config(config.memory.timezone)
        self.cache = RecallCache(config.memory.recall_cache_entries, config.search.cache_ttl_s,
                                 config.memory.recall_cache_max_mb << 20)
        self.config = config
        self.episodes.wake()

    def stats(self) -> dict[str, Any]:
        return {**self.counts, "cache_entries": len(self.cache), "cache_hits": self.cache.hits, "cache_bytes": self.cache.bytes,
                "fact_exact_searches": self.fact_vectors.exact_searches,
                "fact_index_searches": self.fact_vectors.index_searches,
                "index_errors": self.fact_vectors.index_errors + self.episodes.vectors.index_errors,
                "index_stale_discarded": self.fact_vectors.stale_discarded + self.episodes.vectors.stale_discarded,
                "fact_collections_ready": len(self.fact_vectors.ready),
                "timezone": str(self.zone), **self.episodes.stats(),
                "phases_ms": {kind: phases.stats() for kind, phases in self.phases.items()}}

    def handlers(self) -> dict[str, Any]:
        return {
            "remember": self._remember, "recall": self._recall, "get_fact": self._get_fact,
            "list_facts": self._list_facts, "update_fact": self._update_fact, "forget": self._forget,
            "log_episode": self.episodes.log, "timeline": self.episodes.timeline,
            "recall_episodes": self.episodes.recall, "list_sessions": self.episodes.sessions,
            "prune_episodes": self.episodes.prune_op,
            "export_memory": self._export, "import_memory": self._import, "backup": self._backup,
        }

    # -- validation -----------------------------------------------------------------------------------------

    def when(self, text: str) -> TimeRange | None:
        return parse_time_range(text, zone=self.zone, now=self.clock())

    @staticmethod
    def project(name: str | None) -> str | None:
        if name is not None and (_CONTROL.search(name) or name != name.strip()):
            raise InvalidArgument(f"bad project name {name!r}: no control characters or outer spaces")
        return name

    def tags(self, tags: Sequence[str]) -> list[str]:
        cleaned: list[str] = []
        for tag in tags:
            tag = tag.strip().lower()
            if not _TAG.match(tag):
                raise InvalidArgument(f"bad tag {tag!r}: 1-64 letters, digits or . : / + # @ - _, "
                                      "starting with a letter or digit", details={"tag": tag})
            if tag not in cleaned:
                cleaned.append(tag)
        if len(cleaned) > self.config.memory.max_tags:
            raise InvalidArgument(f"{len(cleaned)} tags: at most {self.config.memory.max_tags} (memory.max_tags)")
        return cleaned

    @staticmethod
    def content(text: str, limit: int, what: str) -> str:
        if not text.strip():
            raise InvalidArgument(f"{what} is empty")
        if len(text) > limit:
            raise InvalidArgument(f"{what} has {len(text)} characters; at most {limit}",
                                  details={"chars": len(text), "limit": limit})
        return text

    async def vector_of(self, text: str) -> np.ndarray:
        return (await self.embed.embed([text]))[0]

    # -- facts ----------------------------------------------------------------------------------------------

    async def _remember(self, args: RememberArgs, ctx: RequestContext | None = None) -> RememberResult:
        content = self.content(args.content, self.config.memory.max_fact_chars, "the fact")
        project = self.project(args.project) or ""
        tags = self.tags(args.tags)
        content_hash = fact_rows.norm_hash(content)
        # The model is the slow part: it starts at once, beside the exact-duplicate lookup (dropped if that hits).
        embedding = asyncio.ensure_future(self.vector_of(content))
        try:
            existing = await self.db.read(lambda conn: fact_rows.find_exact(conn, project, content_hash))
        except BaseException:
            embedding.cancel()
            raise
        if existing is not None:
            embedding.cancel()
            self.counts["duplicates"] += 1
            return RememberResult(fact=existing, created=False, duplicate="exact")
        vector = await embedding
        model_id = self.model_id
        threshold = self.config.memory.near_duplicate_threshold
        where = Filter("f").projects([project])
        # Near-duplicate candidates from the index, unchecked: they are checked against SQLite inside the write
        # (or, to merge, in a read first), so a remember costs one round trip to the writer and none to a reader.
        near = [hit for hit in await self.fact_vectors.search([project], vector, 3, where, model_id, verify=False)
                if hit[1] >= threshold]

        def near_hits_of(found: dict[str, Any]) -> list[FactHit]:
            present = [hit for hit in near if hit[0] in found][:3]
            return [FactHit(fact=found[id_], score=similarity, similarity=similarity, vector_rank=rank)
                    for rank, (id_, similarity) in enumerate(present, start=1)]

        if near and self.config.memory.merge_near_duplicates:
            found = await self.db.read(lambda conn: fact_rows.rows_for_ids(conn, [hit[0] for hit in near], where))
            near_hits = near_hits_of(found)
            if near_hits:
                target = near_hits[0].fact
                merged = await self._apply_update(
                    target.id, content=content, tags=list(dict.fromkeys([*target.tags, *tags])),
                    source=args.source or target.source, importance=max(target.importance, args.importance),
                    metadata={**target.metadata, **args.metadata}, reason=f"merged a near-duplicate "
                    f"(similarity {near_hits[0].similarity:.3f})", vector=vector)
                self.counts["merged"] += 1
                return RememberResult(fact=merged[0], created=False, duplicate="near", merged=True,
                                      near_duplicates=near_hits)
        now = self.clock()
        fact_id = fact_rows.new_id("f")

        def write(conn: Any) -> tuple[Any, bool, list[FactHit]]:
            twin = fact_rows.find_exact(conn, project, content_hash)  # a concurrent twin committed meanwhile
            if twin is not None:
                return twin, False, []
            near_hits = near_hits_of(fact_rows.rows_for_ids(conn, [hit[0] for hit in near], where)) if near else []
            return fact_rows.insert(conn, fact_id=fact_id, project=project, content=content, tags=tags,
                                    source=args.source, importance=args.importance, metadata=dict(args.metadata),
                                    created_at=now, updated_at=now, version=1, model_id=model_id,
                                    vector=vector)[1], True, near_hits

        since = self.fact_vectors.mark()   # before the write: a drop of the project after it is noticed
        fact, created, near_hits = await self.db.write(write)
        if not created:
            self.counts["duplicates"] += 1
            return RememberResult(fact=fact, created=False, duplicate="exact")
        self.cache.bump(project)
        self.fact_vectors.queue_upsert(project, [fact.id], vector[None, :], since=since)
        self.counts["remembered"] += 1
        return RememberResult(fact=fact, created=True, duplicate="near" if near_hits else "",
                              near_duplicates=near_hits)

    async def _recall(self, args: RecallArgs, ctx: RequestContext | None = None) -> RecallResult:
        started = time.perf_counter()
        project = self.project(args.project) or ""
        projects = [project, ""] if args.include_global and project else [project]
        tags = self.tags(args.tags)
        span = self.when(args.when)
        if not args.query.strip():
            raise InvalidArgument("the query is empty")
        key = ("recall", args.query, tuple(projects), tuple(tags), args.tag_mode, span and (span.start, span.end),
               args.k, args.mode, self.cache.generation(projects))
        cached = self.cache.get(key)
        self.counts["recalls"] += 1
        if cached is not None:
            return RecallResult(facts=cached, took_ms=(time.perf_counter() - started) * 1000, cached=True)
        where = Filter("f").projects(projects).fact_tags(tags, args.tag_mode)
        if span is not None:
            where.time("created_at", span.start, span.end)
        fetch = min(100, max(args.k * 3, 30))
        result = [FactHit(fact=fact, score=round(item.score, 6), similarity=item.similarity,
                          vector_rank=item.vector_rank, keyword_rank=item.keyword_rank)
                  for fact, item in await hybrid(self, self.fact_vectors, fact_rows, args.query, args.mode, projects,
                                                 where, fetch, args.k)]
        self.cache.put(key, result)
        return RecallResult(facts=result, took_ms=(time.perf_counter() - started) * 1000)

    async def _get_fact(self, args: GetFactArgs, ctx: RequestContext | None = None) -> GetFactResult:
        def read(conn: Any) -> GetFactResult:
            seq, fact = fact_rows.get(conn, args.id)
            return GetFactResult(fact=fact, history=fact_rows.history(conn, seq) if args.history else [])

        return await self.db.read(read)

    async def _list_facts(self, args: ListFactsArgs, ctx: RequestContext | None = None) -> ListFactsResult:
        project = self.project(args.project)
        where = Filter("f").projects([project] if project is not None else None)
        where.fact_tags(self.tags(args.tags), args.tag_mode)
        span = self.when(args.when)
        if span is not None:
            where.time("created_at", span.start, span.end)
        facts, next_cursor = await self.db.read(
            lambda conn: fact_rows.list_page(conn, where, args.order, args.limit, args.cursor))
        return ListFactsResult(facts=facts, next_cursor=next_cursor)

    async def _apply_update(self, fact_id: str, *, content: str | None, tags: list[str] | None, source: str | None,
                            importance: float | None, metadata: dict[str, Any] | None, reason: str,
                            vector: np.ndarray | None = None) -> tuple[Any, int]:
        if content is not None and vector is None:
            vector = await self.vector_of(content)
        model_id = self.model_id
        since = self.fact_vectors.mark()
        seq, fact, previous = await self.db.write(lambda conn: fact_rows.update(
            conn, fact_id, now=self.clock(), reason=reason, content=content, tags=tags, source=source,
            importance=importance, metadata=metadata, model_id=model_id, vector=vector))
        self.cache.bump(fact.project)
        if vector is not None:
            self.fact_vectors.queue_upsert(fact.project, [fact.id], vector[None, :], since=since)
        self.counts["updated"] += 1
        return fact, previous

    async def _update_fact(self, args: UpdateFactArgs, ctx: RequestContext | None = None) -> UpdateFactResult:
        content = None if args.content is None else self.content(args.content, self.config.memory.max_fact_chars,
                                                                  "the fact")
        tags = None if args.tags is None else self.tags(args.tags)
        fact, previous = await self._apply_update(
            args.id, content=content, tags=tags, source=args.source, importance=args.importance,
            metadata=None if args.metadata is None else dict(args.metadata), reason=args.reason)
        return UpdateFactResult(fact=fact, previous_version=previous)

    async def _forget(self, args: ForgetArgs, ctx: RequestContext | None = None) -> ForgetResult:
        deleted = await self.db.write(lambda conn: fact_rows.delete(conn, args.ids))
        by_project: dict[str, list[str]] = {}
        for fact_id, project in deleted:
            by_project.setdefault(project, []).append(fact_id)
        for project, ids in by_project.items():
            self.cache.bump(project)
            await self.fact_vectors.delete(project, ids)
        self.cache.clear()  # no cached result may still quote a forgotten fact
        self.counts["forgotten"] += len(deleted)
        return ForgetResult(forgotten=len(deleted))

    async def drop_project(self, name: str) -> dict[str, int]:
        """Delete every fact and episode of ``name`` (rows, history, FTS entries, both vector collections)."""
        facts, episodes = await self.db.write(
            lambda conn: (fact_rows.delete_project(conn, name), episode_rows.delete_project(conn, name)))
        for side in (self.fact_vectors, self.episodes.vectors):
            try:
                await side.drop(name)
            except Exception:
                log.exception("dropping the %s collection of %r failed; it is rebuilt from SQLite", side.kind, name)
        self.cache.bump(name)
        self.cache.clear()
        return {"facts": len(facts), "episodes": len(episodes)}

    # -- export / import / backup ---------------------------------------------------------------------------

    async def _export(self, args: ExportMemoryArgs, ctx: RequestContext | None = None) -> ExportMemoryResult:
        try:
            after = int(args.cursor or 0)
        except ValueError as exc:
            raise InvalidArgument(f"bad cursor {args.cursor!r}") from exc
        project = self.project(args.project)
        if args.what == "facts":
            page, last = await self.db.read(lambda conn: fact_rows.export_page(conn, project, after, args.limit))
            records: list[Any] = [
                ExportedFact(id=f.id, project=f.project, content=f.content, tags=f.tags, source=f.source,
                             importance=f.importance, metadata=f.metadata, created_at=f.created_at,
                             updated_at=f.updated_at, version=f.version, history=history)
                for _, f, history in page]
        else:
            rows, last = await self.db.read(lambda conn: episode_rows.export_page(conn, project, after, args.limit))
            records = [ExportedEpisode(id=e.id, session=e.session, project=e.project, kind=e.kind, role=e.role,
                                       content=e.content, timestamp=e.timestamp, metadata=e.metadata)
                       for _, e in rows]
        return ExportMemoryResult(records=records, next_cursor=str(last) if len(records) == args.limit else "")

    async def _import(self, args: ImportMemoryArgs, ctx: RequestContext | None = None) -> ImportMemoryResult:
        facts = [r for r in args.records if isinstance(r, ExportedFact)]
        episodes = [r for r in args.records if isinstance(r, ExportedEpisode)]
        for record in facts:
            self.content(record.content, self.config.memory.max_fact_chars, f"fact {record.id}")
            self.project(record.project)
        for record in episodes:
            self.content(record.content, self.config.memory.max_episode_chars, f"episode {record.id}")
            self.project(record.project)
            self.episodes.kind(record.kind)
            self.episodes.timestamp(record.timestamp)
        fact_tags = {record.id: self.tags(record.tags) for record in facts}
        result = ImportMemoryResult()
        if facts:
            def known(conn: Any) -> set[str]:
                present = set()
                for record in facts:
                    if conn.execute("SELECT 1 FROM fact WHERE id = ?", (record.id,)).fetchone() or \
                            fact_rows.find_exact(conn, record.project, fact_rows.norm_hash(record.content)):
                        present.add(record.id)
                return present

            present = await self.db.read(known)
            fresh = [record for record in facts if record.id not in present]
            fresh = list({(r.project, fact_rows.norm_hash(r.content)): r for r in fresh}.values())
            result.skipped += len(facts) - len(fresh)
            model_id = self.model_id
            for start in range(0, len(fresh), _IMPORT_EMBED_BATCH):
                batch = fresh[start:start + _IMPORT_EMBED_BATCH]
                vectors = await self.embed.embed([record.content for record in batch], bulk=True)

                def write(conn: Any, batch: list[ExportedFact] = batch, vectors: np.ndarray = vectors) -> list[int]:
                    written = []
                    for index, record in enumerate(batch):
                        if conn.execute("SELECT 1 FROM fact WHERE id = ?", (record.id,)).fetchone() or \
                                fact_rows.find_exact(conn, record.project, fact_rows.norm_hash(record.content)):
                            continue
                        fact_rows.insert(conn, fact_id=record.id, project=record.project, content=record.content,
                                         tags=fact_tags[record.id], source=record.source,
                                         importance=record.importance, metadata=dict(record.metadata),
                                         created_at=record.created_at, updated_at=record.updated_at,
                                         version=record.version, model_id=model_id, vector=vectors[index],
                                         versions=record.history)
                        written.append(index)
                    return written

                since = self.fact_vectors.mark()
                written = await self.db.write(write)
                result.facts += len(written)
                result.skipped += len(batch) - len(written)
                by_project: dict[str, list[int]] = {}
                for index in written:
                    by_project.setdefault(batch[index].project, []).append(index)
                for project, indices in by_project.items():
                    self.cache.bump(project)
                    await self.fact_vectors.upsert(project, [batch[i].id for i in indices], vectors[indices],
                                                   since=since)
        if episodes:
            now = self.clock()
            rows = [(r.id, r.session, r.project, r.kind.lower(), r.role, r.content, r.timestamp,
                     json.dumps(dict(r.metadata)), now) for r in episodes]
            inserted = await self.db.write(lambda conn: episode_rows.insert_many(conn, rows))
            result.episodes += inserted
            result.skipped += len(episodes) - inserted
            self.episodes.wake()
        return result

    async def _backup(self, args: BackupArgs, ctx: RequestContext | None = None) -> BackupResult:
        path = Path(args.path).expanduser()
        if not path.is_absolute():
            path = self.config.state_path / "backups" / path
        if path.resolve() == self.db.path.resolve():
            raise InvalidArgument("the backup cannot overwrite the live database")
        if path.is_dir():
            raise InvalidArgument(f"{path} is a directory; name the backup file")
        try:
            info = await self.db.backup(path)
        except OSError as exc:
            raise InvalidArgument(f"cannot write the backup to {path}: {exc.strerror or exc}") from exc
        return BackupResult(path=info["path"], bytes=info["bytes"], pages=info["pages"], seconds=info["seconds"])

    # -- background -----------------------------------------------------------------------------------------

    async def _maintain_facts(self) -> None:
        """Re-embed facts of another model, then bring every fact collection in step with SQLite."""
        try:
            model_id = self.model_id
            while True:
                stale = await self.db.read(lambda conn: fact_rows.stale_vectors(conn, model_id, 64))
                if not stale:
                    break
                vectors = await self.embed.embed([row[3] for row in stale], bulk=True)
                await self.db.write(lambda conn: fact_rows.set_vectors(
                    conn, model_id, [(row[0], vectors[i]) for i, row in enumerate(stale)]))
                self.counts["reembedded"] += len(stale)
            await check_index(self.fact_vectors, fact_rows, model_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("memory: fact index maintenance failed; recall uses exact search meanwhile")


async def check_index(side: VectorSide, rows: Any, model_id: str) -> None:
    """Bring every collection of ``side`` in step with SQLite, then trust collections made later."""
    side.model_id = model_id   # what a compaction of its collections reloads
    counts = await side.db.read(lambda conn: rows.counts_by_project(conn, model_id))
    for project, expected in counts.items():
        outcome = await side.ensure(project, expected, model_id)
        if outcome == "rebuilt":
            log.info("memory: rebuilt the %s index of project %r (%d vectors)", side.kind, project, expected)
    side.checked = True


async def hybrid(memory: MemoryService, side: VectorSide, rows: Any, query: str, mode: str, projects: list[str],
                 where: Filter, fetch: int, k: int) -> list[tuple[Any, Scored]]:
    """A query through the retrieval core (``services/retrieval.py``) for facts or episodes (``rows`` is their
    store module): the keyword side (a read) runs while the query is embedded and the index searched; one more
    read completes the pool (rows, similarities). Returns the best ``k`` (row, score)."""
    model_id = memory.model_id

    async def embed_query() -> np.ndarray:
        return await memory.vector_of(query)

    async def vector_side(vector: np.ndarray) -> list[tuple[str, float]]:
        return await side.search(projects, vector, fetch, where, model_id, verify=False)

    def complete(conn: Any, pool: list[str], query_vector: np.ndarray | None, missing: set[str]) -> Completed[str]:
        found, blobs = rows.complete_pool(conn, pool, where, missing, model_id)
        near = similarities(list(blobs), list(blobs.values()), query_vector) if query_vector is not None else {}
        return Completed(rows=found, similarity=near)

    ranked, completed = await retrieve(
        memory.db, mode, fetch, query, embed_query, vector_side,
        lambda conn: rows.keyword_search(conn, query, where, fetch * KEYWORD_SCORED), complete,
        lambda row: row.content, WEIGHTS[side.kind], memory.phases[side.kind])
    return [(completed.rows[item.key], item) for item in ranked[:k]]
