"""Hybrid search over document chunks: vector (Chroma) and keyword (SQLite FTS5, BM25) fused by RRF.

- **Vector**: the query is embedded once; each searched project's collection returns its nearest chunks;
  candidates from several projects are merged by distance. With a filter (path glob, file type, ingest
  time) the filter is applied in SQLite first and, while the matching set is small, the vectors of exactly
  those chunks are scored with numpy (exact, and no Chroma ``where`` slow path); a large matching set asks
  Chroma for more candidates and filters them.
- **Keyword**: FTS5 ``MATCH`` over chunk text and heading (any query word), ranked by ``bm25``.
- **Fusion**: reciprocal rank fusion, ``score = sum(1 / (rrf_k + rank))`` over both lists.
- **Isolation**: every SQL statement names the searched projects' ids, every vector query goes to the
  searched projects' collections only: a project never leaks into another's results.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from pirag.client.protocol.documents import SearchArgs, SearchHit, SearchResult

from ..store import documents as rows
from .walk import match_glob

_WORD = re.compile(r"\w+", re.UNICODE)
EXACT_LIMIT = 20_000       # filtered sets up to this size are scored exactly from SQLite's vectors


STOPWORDS = frozenset("""a an and are as at be but by can do does for from had has have how i if in into is it its
me my no not of on or our so than that the their them then there these they this to was we were what when where
which who why will with you your""".split())


def fts_query(query: str, conjunction: bool = False) -> str:
    """Quoted query words (stopwords dropped: their posting lists are huge and rank nothing), joined by AND
    (all words: few, cheap matches) or OR (any word)."""
    words = [word for word in _WORD.findall(query) if word.casefold() not in STOPWORDS][:32]
    if not words:
        words = _WORD.findall(query)[:32]
    return (" AND " if conjunction else " OR ").join('"' + word.replace('"', '""') + '"' for word in dict.fromkeys(words))


class Searcher:
    def __init__(self, db: Any, vectors: Any, embed: Any):
        self.db = db
        self.vectors = vectors
        self.embed = embed

    async def search(self, args: SearchArgs, projects: Sequence[rows.ProjectRow], k: int, rrf_k: int) -> SearchResult:
        started = time.perf_counter()
        if not projects or not args.query.strip():
            return SearchResult(hits=[], took_ms=round((time.perf_counter() - started) * 1000, 3))
        candidates = max(3 * k, 30)
        filtered = bool(args.path_glob or args.file_types or args.ingested_after is not None
                        or args.ingested_before is not None)
        project_ids = [project.id for project in projects]
        vector_task = asyncio.ensure_future(self._vector_ranks(args, projects, candidates, filtered))
        keyword_task = asyncio.ensure_future(self.db.read(
            lambda conn: self._keyword_ranks(conn, args, project_ids, candidates, filtered)))
        try:
            vector_hits, keyword_hits = await asyncio.gather(vector_task, keyword_task)
        except BaseException:
            vector_task.cancel()
            keyword_task.cancel()
            raise
        fused: dict[int, float] = {}
        vector_rank: dict[int, int] = {}
        distance_of: dict[int, float] = {}
        keyword_rank: dict[int, int] = {}
        for rank, (chunk_id, distance) in enumerate(vector_hits, start=1):
            vector_rank[chunk_id] = rank
            distance_of[chunk_id] = distance
            fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (rrf_k + rank)
        for rank, chunk_id in enumerate(keyword_hits, start=1):
            keyword_rank[chunk_id] = rank
            fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (rrf_k + rank)
        ordered = sorted(fused, key=lambda chunk_id: (-fused[chunk_id], chunk_id))
        details = await self.db.read(lambda conn: _chunk_details(conn, ordered[:k * 2], project_ids))
        names = {project.id: project.name for project in projects}
        hits: list[SearchHit] = []
        budget = args.max_chars
        used = 0
        truncated = False
        for chunk_id in ordered:
            row = details.get(chunk_id)
            if row is None:   # deleted since the index answered, or another project's id
                continue
            project_id, source, file_type, text, heading, line_start, line_end = row
            if budget:
                if used + len(text) > budget:
                    truncated = True
                    if hits:
                        break
                    text = text[:budget]
                used += len(text)
            hits.append(SearchHit(project=names[project_id], source=source, text=text, line_start=line_start,
                                  line_end=line_end, heading=heading, file_type=file_type,
                                  score=round(fused[chunk_id], 6), vector_rank=vector_rank.get(chunk_id),
                                  keyword_rank=keyword_rank.get(chunk_id), distance=distance_of.get(chunk_id),
                                  chunk_id=chunk_id))
            if len(hits) >= k:
                break
        return SearchResult(hits=hits, truncated=truncated, took_ms=round((time.perf_counter() - started) * 1000, 3))

    async def _vector_ranks(self, args: SearchArgs, projects: Sequence[rows.ProjectRow], candidates: int,
                            filtered: bool) -> list[tuple[int, float]]:
        vector = (await self.embed.embed([args.query]))[0]
        if filtered:
            project_ids = [project.id for project in projects]
            exact = await self.db.read(lambda conn: _exact_filtered(conn, args, project_ids, vector, candidates,
                                                                   self.embed.model.model_id))
            if exact is not None:
                return exact
            candidates *= 8
        results = await asyncio.gather(*(self.vectors.query(project.collection, vector, candidates)
                                         for project in projects))
        merged = sorted(((int(chunk_id), distance) for result in results for chunk_id, distance in result),
                        key=lambda item: item[1])
        if filtered:
            allowed = await self.db.read(lambda conn: _filter_ids(conn, args, [c for c, _ in merged]))
            merged = [item for item in merged if item[0] in allowed]
        return merged[:candidates]

    @staticmethod
    def _keyword_ranks(conn: sqlite3.Connection, args: SearchArgs, project_ids: list[int], candidates: int,
                       filtered: bool) -> list[int]:
        if not fts_query(args.query):
            return []
        where, params = _filter_sql(args)
        marks = ",".join("?" * len(project_ids))
        limit = candidates * (4 if args.path_glob else 1)
        found: list[tuple[int, str]] = []
        # every word first (selective, so cheap on a big corpus); any word when that finds too little
        for match in dict.fromkeys((fts_query(args.query, conjunction=True), fts_query(args.query))):
            # FTS5 ranks inside its own index first (cheap); only the best rows are joined and filtered by
            # project. Too few survive the filters: widen the inner limit (finally: every match).
            inner = limit * 4
            while True:
                found = conn.execute(
                    f"SELECT c.id, s.source FROM (SELECT rowid AS id, bm25(doc_chunk_fts, 1.0, 0.5) AS score"
                    f" FROM doc_chunk_fts WHERE doc_chunk_fts MATCH ? ORDER BY score LIMIT ?) m"
                    f" JOIN doc_chunk c ON c.id = m.id JOIN doc_source s ON s.id = c.source_id"
                    f" WHERE c.project_id IN ({marks}){where} ORDER BY m.score LIMIT ?",
                    (match, inner, *project_ids, *params, limit)).fetchall()
                if len(found) >= limit or inner < 0:
                    break
                matched = conn.execute("SELECT count(*) FROM doc_chunk_fts WHERE doc_chunk_fts MATCH ?",
                                       (match,)).fetchone()[0]
                if matched <= inner:
                    break
                inner = inner * 16 if inner * 16 < matched else -1
            if len(found) >= min(limit, candidates // 2):
                break
        if args.path_glob:
            found = [(chunk_id, source) for chunk_id, source in found if match_glob(source, args.path_glob)]
        return [chunk_id for chunk_id, _ in found[:candidates]]


def _filter_sql(args: SearchArgs) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if args.file_types:
        clauses.append(f"s.file_type IN ({','.join('?' * len(args.file_types))})")
        params.extend(file_type.lower().lstrip(".") for file_type in args.file_types)
    if args.ingested_after is not None:
        clauses.append("s.ingested_at >= ?")
        params.append(args.ingested_after)
    if args.ingested_before is not None:
        clauses.append("s.ingested_at < ?")
        params.append(args.ingested_before)
    return "".join(f" AND {clause}" for clause in clauses), params


def _exact_filtered(conn: sqlite3.Connection, args: SearchArgs, project_ids: list[int], vector: np.ndarray,
                    candidates: int, model_id: str) -> list[tuple[int, float]] | None:
    where, params = _filter_sql(args)
    marks = ",".join("?" * len(project_ids))
    sources = conn.execute(f"SELECT s.id, s.source, s.chunks FROM doc_source s WHERE s.project_id IN ({marks}){where}",
                           (*project_ids, *params)).fetchall()
    if args.path_glob:
        sources = [row for row in sources if match_glob(row[1], args.path_glob)]
    if sum(row[2] for row in sources) > EXACT_LIMIT:
        return None
    ids: list[int] = []
    blobs: list[bytes] = []
    for start in range(0, len(sources), 500):
        part = [row[0] for row in sources[start:start + 500]]
        for chunk_id, blob in conn.execute(
                f"SELECT id, vector FROM doc_chunk WHERE source_id IN ({','.join('?' * len(part))}) AND model_id = ?",
                (*part, model_id)):
            ids.append(chunk_id)
            blobs.append(blob)
    if not ids:
        return []
    matrix = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(ids), -1)
    distances = 1.0 - matrix @ np.asarray(vector, np.float32)
    order = np.argsort(distances)[:candidates]
    return [(ids[i], float(distances[i])) for i in order]


def _filter_ids(conn: sqlite3.Connection, args: SearchArgs, chunk_ids: list[int]) -> set[int]:
    where, params = _filter_sql(args)
    allowed: set[int] = set()
    for start in range(0, len(chunk_ids), 500):
        part = chunk_ids[start:start + 500]
        for chunk_id, source in conn.execute(
                f"SELECT c.id, s.source FROM doc_chunk c JOIN doc_source s ON s.id = c.source_id"
                f" WHERE c.id IN ({','.join('?' * len(part))}){where}", (*part, *params)):
            if not args.path_glob or match_glob(source, args.path_glob):
                allowed.add(chunk_id)
    return allowed


def _chunk_details(conn: sqlite3.Connection, chunk_ids: list[int], project_ids: list[int]) -> dict[int, tuple]:
    if not chunk_ids:
        return {}
    marks = ",".join("?" * len(chunk_ids))
    project_marks = ",".join("?" * len(project_ids))
    return {row[0]: row[1:] for row in conn.execute(
        f"SELECT c.id, c.project_id, s.source, s.file_type, c.text, c.heading, c.line_start, c.line_end"
        f" FROM doc_chunk c JOIN doc_source s ON s.id = c.source_id"
        f" WHERE c.id IN ({marks}) AND c.project_id IN ({project_marks})", (*chunk_ids, *project_ids))}
