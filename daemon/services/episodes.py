"""Episodes: the timeline of what happened (messages, actions, decisions, errors, observations...).

Served by the ``memory`` component (``services/memory.py``), which owns the pool, the embedder and the index.

- ``log_episode`` appends one row and replies once it is committed; it never waits for the model. The
  **indexer** task embeds new episodes in batches afterwards (``memory.embed_episodes``) and adds them to the
  ``episodes`` collection of their project, so ``recall_episodes``' keyword side sees an episode at once and
  its vector side a moment later.
- ``timeline`` is a keyset-paginated index scan (``(ts, seq)``), newest or oldest first.
- **Retention**: ``memory.episode_retention`` (every project) and ``memory.retention."<project>"`` (one project)
  give a maximum age and/or count; the pruner applies them every ``memory.prune_interval_s`` in batches of a
  few thousand rows per transaction, so the writer is never held for long.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from typing import TYPE_CHECKING, Any

from pirag.client.errors import InvalidArgument
from pirag.client.protocol.memory import (
    EpisodeHit, ListSessionsArgs, ListSessionsResult, LogEpisodeArgs, LogEpisodeResult, PruneEpisodesArgs,
    PruneEpisodesResult, RecallEpisodesArgs, RecallEpisodesResult, TimelineArgs, TimelineResult,
)

from ..app import RequestContext
from ..config import RetentionRule
from ..store import episodes as episode_rows
from ..store.facts import Filter, new_id
from .recall import VectorSide

if TYPE_CHECKING:
    from .memory import MemoryService

log = logging.getLogger("pirag.memory.episodes")

_KIND = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_EMBED_BATCH = 32
_PRUNE_BATCH = 2000
_YEAR = 365.25 * 86400


class Episodes:
    def __init__(self, memory: "MemoryService"):
        self.memory = memory
        self.vectors = VectorSide("episodes", episode_rows, memory.db, memory.vectors)
        self.tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self.logged = 0
        self.embedded = 0
        self.pruned = 0
        self.embed_failures = 0

    # -- lifecycle ------------------------------------------------------------------------------------------

    def start_tasks(self) -> list[asyncio.Task[None]]:
        self._wake = asyncio.Event()
        self._wake.set()
        self.tasks = [asyncio.create_task(self._indexer(), name="pirag-episode-indexer"),
                      asyncio.create_task(self._pruner(), name="pirag-episode-pruner")]
        return self.tasks

    def wake(self) -> None:
        self._wake.set()

    def stats(self) -> dict[str, Any]:
        return {"episodes_logged": self.logged, "episodes_embedded": self.embedded, "episodes_pruned": self.pruned,
                "episode_embed_failures": self.embed_failures,
                "episode_collections_ready": len(self.vectors.ready)}

    # -- validation -----------------------------------------------------------------------------------------

    @staticmethod
    def kind(kind: str) -> str:
        kind = kind.strip().lower()
        if not _KIND.match(kind):
            raise InvalidArgument(f"bad episode kind {kind!r}: a short identifier such as message, action, "
                                  "decision, error, observation", details={"kind": kind})
        return kind

    def timestamp(self, value: float | None) -> float:
        now = self.memory.clock()
        if value is None:
            return now
        if not math.isfinite(value) or value < 0 or value > now + 100 * _YEAR:
            raise InvalidArgument(f"bad timestamp {value!r}: Unix seconds, not before 1970", details={"timestamp": value})
        return float(value)

    def _where(self, *, session: str | None, project: str | None, kinds: list[str], when: str) -> Filter:
        memory = self.memory
        project = memory.project(project)
        where = Filter("e").projects([project] if project is not None else None)
        if session is not None:
            where.add("{a}.session = ?", session)
        if kinds:
            cleaned = [self.kind(kind) for kind in kinds]
            where.add(f"{{a}}.kind IN ({','.join('?' * len(cleaned))})", *cleaned)
        span = memory.when(when)
        if span is not None:
            where.time("ts", span.start, span.end)
        return where

    # -- ops ------------------------------------------------------------------------------------------------

    async def log(self, args: LogEpisodeArgs, ctx: RequestContext | None = None) -> LogEpisodeResult:
        memory = self.memory
        content = memory.content(args.content, memory.config.memory.max_episode_chars, "the episode")
        project = memory.project(args.project) or ""
        kind = self.kind(args.kind)
        if _blank_or_control(args.session):
            raise InvalidArgument(f"bad session id {args.session!r}")
        timestamp = self.timestamp(args.timestamp)
        episode_id = new_id("e")
        now = memory.clock()
        episode = await memory.db.write(lambda conn: episode_rows.insert(
            conn, episode_id=episode_id, session=args.session, project=project, kind=kind, role=args.role,
            content=content, timestamp=timestamp, metadata=dict(args.metadata), created_at=now))
        self.logged += 1
        self._wake.set()
        return LogEpisodeResult(episode=episode)

    async def timeline(self, args: TimelineArgs, ctx: RequestContext | None = None) -> TimelineResult:
        where = self._where(session=args.session, project=args.project, kinds=args.kinds, when=args.when)
        episodes, next_cursor = await self.memory.db.read(
            lambda conn: episode_rows.page(conn, where, args.order, args.limit, args.cursor))
        return TimelineResult(episodes=episodes, next_cursor=next_cursor)

    async def recall(self, args: RecallEpisodesArgs, ctx: RequestContext | None = None) -> RecallEpisodesResult:
        from .memory import hybrid

        started = time.perf_counter()
        if not args.query.strip():
            raise InvalidArgument("the query is empty")
        memory = self.memory
        project = memory.project(args.project) or ""
        where = self._where(session=args.session, project=project, kinds=args.kinds, when=args.when)
        fetch = min(100, max(args.k * 3, 30))
        hits = await hybrid(memory, self.vectors, episode_rows, args.query, args.mode, [project], where, fetch, args.k)
        return RecallEpisodesResult(
            episodes=[EpisodeHit(episode=episode, score=round(item.score, 6), similarity=item.similarity,
                                 vector_rank=item.vector_rank, keyword_rank=item.keyword_rank)
                      for episode, item in hits],
            took_ms=(time.perf_counter() - started) * 1000)

    async def sessions(self, args: ListSessionsArgs, ctx: RequestContext | None = None) -> ListSessionsResult:
        where = self._where(session=None, project=args.project, kinds=[], when=args.when)
        return ListSessionsResult(sessions=await self.memory.db.read(
            lambda conn: episode_rows.sessions(conn, where, args.limit)))

    async def prune_op(self, args: PruneEpisodesArgs, ctx: RequestContext | None = None) -> PruneEpisodesResult:
        return PruneEpisodesResult(pruned=await self.prune(self.memory.project(args.project)))

    # -- retention ------------------------------------------------------------------------------------------

    def rule(self, project: str) -> RetentionRule:
        config = self.memory.config.memory
        return config.retention.get(project, config.episode_retention)

    async def prune(self, only: str | None = None) -> dict[str, int]:
        memory = self.memory
        projects = await memory.db.read(episode_rows.projects)
        pruned: dict[str, int] = {}
        for project in projects:
            if only is not None and project != only:
                continue
            rule = self.rule(project)
            if not rule.max_age_days and not rule.max_count:
                continue
            older_than = memory.clock() - rule.max_age_days * 86400 if rule.max_age_days else None
            keep = rule.max_count or None
            total = 0
            while True:
                ids = await memory.db.write(lambda conn: episode_rows.prune(
                    conn, project, older_than=older_than, keep=keep, batch=_PRUNE_BATCH))
                if not ids:
                    break
                total += len(ids)
                await self.vectors.delete(project, ids)
            if total:
                pruned[project] = total
                self.pruned += total
                log.info("episodes: pruned %d of project %r (retention %s)", total, project, rule)
        return pruned

    async def _pruner(self) -> None:
        while True:
            try:
                await self.prune()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("episodes: pruning failed; trying again at the next interval")
            await asyncio.sleep(self.memory.config.memory.prune_interval_s)

    # -- the indexer ----------------------------------------------------------------------------------------

    async def _indexer(self) -> None:
        memory = self.memory
        try:
            from .memory import check_index

            await check_index(self.vectors, episode_rows, memory.model_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("episodes: index check failed; recall_episodes uses exact search meanwhile")
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not memory.config.memory.embed_episodes:
                continue
            try:
                while await self._embed_batch():
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:
                self.embed_failures += 1
                log.exception("episodes: embedding failed; retrying in 5 s")
                await asyncio.sleep(5)
                self._wake.set()

    async def _embed_batch(self) -> int:
        memory = self.memory
        model_id = memory.model_id
        # Marked before the read: if a project of these rows is dropped while they are embedded, their vectors
        # are not written (the flusher checks them against SQLite), so the drop's collection stays dropped.
        since = self.vectors.mark()
        rows = await memory.db.read(lambda conn: episode_rows.unembedded(conn, model_id, _EMBED_BATCH))
        if not rows:
            return 0
        vectors = await memory.embed.embed([row[3] for row in rows], bulk=True)
        present = await memory.db.write(lambda conn: episode_rows.set_vectors(
            conn, model_id, [(row[0], vectors[i]) for i, row in enumerate(rows)]))
        by_project: dict[str, list[int]] = {}
        for index, row in enumerate(rows):
            if row[0] in present:   # not pruned or forgotten while it was embedded
                by_project.setdefault(row[2], []).append(index)
        for project, indices in by_project.items():   # written by the flusher when the daemon is idle
            self.vectors.queue_upsert(project, [rows[i][1] for i in indices], vectors[indices], since=since)
        self.embedded += len(rows)
        return len(rows)


def _blank_or_control(text: str) -> bool:
    return not text.strip() or bool(re.search(r"[\x00-\x1f\x7f]", text))
