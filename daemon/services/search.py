"""The document-chunk sides of hybrid search: vector (Chroma) and keyword (SQLite FTS5, BM25), fused by the core.

- **Vector**: the query is embedded once; each searched project's collection returns its nearest chunks;
  candidates from several projects are merged by distance. With a filter (path glob, file type, ingest
  time) the filter is applied in SQLite first and, while the matching set is small, the vectors of exactly
  those chunks are scored with numpy (exact, and no Chroma ``where`` slow path); a large matching set asks
  Chroma for more candidates and filters them.
- **Keyword**: FTS5 ``MATCH`` over chunk text, heading and identifier parts (any query word), ranked by BM25 inside the
  index; the ranked set is bounded (``keyword_expression``: rarest words first) so that common words cannot make
  one query cost the whole corpus; only the best rows are joined, filtered by project and filters.
- **Fusion** and the char budget: the retrieval core (``services/retrieval.py``), which this module feeds with
  its two sides and the read that completes their candidates (``_complete``).
- **Per file**: at most ``per_file`` chunks of one file (``search.per_file``, 1 by default) before the top k,
  so that one file's many chunks do not crowd the other files out (``retrieval.by_source``: a file's best chunk is
  lifted by half its second best, then at most ``per_file`` chunks of a file while other files have candidates).
- **Isolation**: every SQL statement names the searched projects' ids, every vector query goes to the
  searched projects' collections only: a project never leaks into another's results.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from pirag.client.protocol.documents import SearchArgs, SearchHit, SearchResult

from ..store import documents as rows
from ..store import fts
from .retrieval import KEYWORD_SCORED, WEIGHTS, Completed, Phases, by_source, retrieve, similarities, within_budget
from .walk import match_glob

EXACT_LIMIT = 20_000       # filtered sets up to this size are scored exactly from SQLite's vectors
KEYWORD_BUDGET = 1_200     # chunks FTS5 may rank by bm25 for one query (1.5-6 us each on a loaded 2-core x86)


STOPWORDS = frozenset("""a an and are as at be but by can do does for from had has have how i if in into is it its
me my no not of on or our so than that the their them then there these they this to was we were what when where
which who why will with you your""".split())


def fts_terms(query: str) -> list[str]:
    """The query's distinct words (identifiers whole, as typed: ``fts.query_words``; distinct ignoring case),
    stopwords dropped (their posting lists are huge and rank nothing) unless nothing else is left; at most 16."""
    words = list({word.casefold(): word for word in reversed(fts.query_words(query))}.values())[::-1]
    kept = [word for word in words if word.casefold() not in STOPWORDS] or words
    return kept[:16]


class Searcher:
    def __init__(self, db: Any, vectors: Any, embed: Any):
        self.db = db
        self.vectors = vectors
        self.embed = embed
        self.phases = Phases()

    async def search(self, args: SearchArgs, projects: Sequence[rows.ProjectRow], k: int,
                     per_file: int = 0) -> SearchResult:
        started = time.perf_counter()
        if not projects or not args.query.strip():
            return SearchResult(hits=[], took_ms=round((time.perf_counter() - started) * 1000, 3))
        candidates = max(3 * k, 30)
        filtered = bool(args.path_glob or args.file_types or args.ingested_after is not None
                        or args.ingested_before is not None)
        project_ids = [project.id for project in projects]
        model_id = self.embed.model.model_id

        async def embed_query() -> np.ndarray:
            return (await self.embed.embed([args.query]))[0]

        async def vector_side(vector: np.ndarray) -> list[tuple[int, float]]:
            hits = await self._vector_ranks(args, projects, vector, candidates, filtered)
            return [(chunk_id, 1.0 - distance) for chunk_id, distance in hits]

        def complete(conn: sqlite3.Connection, pool: list[int], query_vector: np.ndarray | None,
                     missing: set[int]) -> Completed[int]:
            return _complete(conn, pool, project_ids, query_vector, missing, model_id)

        ranked, completed = await retrieve(
            self.db, args.mode, candidates, args.query, embed_query, vector_side,
            lambda conn: self._keyword_ranks(conn, args, project_ids, candidates * KEYWORD_SCORED, filtered),
            complete, lambda row: row[3], WEIGHTS["chunks"], self.phases)
        # one file's chunks may not crowd the others out of the top k (the file is (project, source))
        ranked = by_source(ranked, lambda item: completed.rows[item.key][:2], per_file)[:k]
        names = {project.id: project.name for project in projects}
        texts = [completed.rows[item.key][3] for item in ranked]
        kept, cut, truncated = within_budget(texts, args.max_chars)
        hits: list[SearchHit] = []
        for item in ranked[:kept]:
            project_id, source, file_type, text, heading, line_start, line_end = completed.rows[item.key]
            distance = None if item.similarity is None else round(1.0 - item.similarity, 6)
            hits.append(SearchHit(project=names[project_id], source=source, text=cut if cut is not None else text,
                                  line_start=line_start, line_end=line_end, heading=heading, file_type=file_type,
                                  score=round(item.score, 6), vector_rank=item.vector_rank,
                                  keyword_rank=item.keyword_rank, distance=distance, chunk_id=item.key))
        return SearchResult(hits=hits, truncated=truncated, took_ms=round((time.perf_counter() - started) * 1000, 3))

    async def _vector_ranks(self, args: SearchArgs, projects: Sequence[rows.ProjectRow], vector: np.ndarray,
                            candidates: int, filtered: bool) -> list[tuple[int, float]]:
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
                       filtered: bool) -> list[tuple[int, float]]:
        terms = fts_terms(args.query)
        if not terms:
            return []
        def count(expression: str) -> int:   # cheap (~0.04 us a match): FTS5 walks doclists, ranks nothing
            return conn.execute("SELECT count(*) FROM doc_chunk_fts WHERE doc_chunk_fts MATCH ?",
                                (expression,)).fetchone()[0]

        expression, matched, newest = keyword_expression(terms, count)
        if not matched:
            return []
        where, params = _filter_sql(args)
        marks = ",".join("?" * len(project_ids))
        limit = candidates * (4 if args.path_glob else 1)
        newer = ""
        bounds: tuple[int, ...] = ()
        if newest:   # every word is common: rank the newest KEYWORD_BUDGET chunks that hold them
            cutoff = conn.execute("SELECT rowid FROM doc_chunk_fts WHERE doc_chunk_fts MATCH ? ORDER BY rowid DESC"
                                  " LIMIT 1 OFFSET ?", (expression, KEYWORD_BUDGET - 1)).fetchone()
            if cutoff is not None:
                newer, bounds, matched = " AND rowid >= ?", (cutoff[0],), KEYWORD_BUDGET
        # FTS5 ranks the (bounded) match set inside its index; only the best rows are joined and filtered.
        # Too few survive the filters: widen the inner limit (at most to the whole bounded set).
        # (other projects' rows are dropped by the join: start wide enough that one pass usually suffices)
        inner = limit * 4
        while True:
            found = conn.execute(
                f"SELECT c.id, s.source, -m.score FROM (SELECT rowid AS id, rank AS score"
                f" FROM doc_chunk_fts WHERE doc_chunk_fts MATCH ?{newer} ORDER BY rank LIMIT ?) m"
                f" JOIN doc_chunk c ON c.id = m.id JOIN doc_source s ON s.id = c.source_id"
                f" WHERE +c.project_id IN ({marks}){where} ORDER BY m.score LIMIT ?",
                (expression, *bounds, inner, *project_ids, *params, limit)).fetchall()
            if len(found) >= limit or inner >= matched:
                break
            inner *= 16
        if args.path_glob:
            found = [row for row in found if match_glob(row[1], args.path_glob)]
        return [(chunk_id, bm25) for chunk_id, _, bm25 in found[:candidates]]


def keyword_expression(terms: list[str], count: Any) -> tuple[str, int, bool]:
    """The FTS5 expression to rank, with its match count (an upper bound) and whether only its newest
    ``KEYWORD_BUDGET`` matches may be ranked.

    bm25 costs a few microseconds per matching row (it reads every row's positions), and common words
    ("file", "read", "0") match tens of thousands of chunks: ranking them all took 75-200 ms at 100k chunks.
    Counting matches is ~50x cheaper than ranking them, so: when the words' matches fit ``KEYWORD_BUDGET`` they
    are all ranked (plain BM25 over every word). Otherwise the rarest words are kept while their matches fit
    (they carry most of BM25's weight anyway), plus the chunks holding every remaining common word when those
    fit too. When every word is common (nothing fits), the chunks holding all of them (else any), newest first,
    are ranked up to the budget. The vector side is unaffected, so a common-word query still finds meaning.
    """
    phrases = {term: fts.match_word(term) for term in terms}
    any_word = " OR ".join(phrases.values())
    per_term = {term: count(phrases[term]) for term in terms}
    total = sum(per_term.values())   # >= the any-word matches
    if total <= KEYWORD_BUDGET:
        return any_word, total, False
    present = sorted((term for term in terms if per_term[term]), key=lambda term: per_term[term])
    chosen: list[str] = []
    used = 0
    for term in present:
        if used + per_term[term] > KEYWORD_BUDGET:
            break
        chosen.append(term)
        used += per_term[term]
    clauses = [phrases[term] for term in chosen]
    rest = present[len(chosen):]
    every = " AND ".join(phrases[term] for term in rest)
    together = count(every) if len(rest) > 1 else 0
    if together and used + together <= KEYWORD_BUDGET:
        clauses.append(f"({every})")
        used += together
    if clauses:
        return " OR ".join(clauses), used, False
    if together:
        return every, together, True
    return any_word, total, True


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
                f"SELECT c.id, v.vector FROM doc_chunk c JOIN doc_vector v ON v.chunk_id = c.id"
                f" WHERE c.source_id IN ({','.join('?' * len(part))}) AND c.model_id = ?",
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


def _complete(conn: sqlite3.Connection, pool: list[int], project_ids: list[int], query_vector: np.ndarray | None,
              missing: set[int], model_id: str) -> Completed[int]:
    """The retrieval core's step 2 for chunks: rows of the pool (of the searched projects only) and the stored
    vectors' similarity for the chunks the vector side did not bring."""
    if not pool:
        return Completed(rows={})
    marks = ",".join("?" * len(pool))
    project_marks = ",".join("?" * len(project_ids))
    found: dict[int, tuple] = {}
    keys: list[int] = []
    blobs: list[bytes] = []
    for row in conn.execute(
            f"SELECT c.id, c.project_id, s.source, s.file_type, c.text, c.heading, c.line_start, c.line_end,"
            f" c.model_id = ? FROM doc_chunk c JOIN doc_source s ON s.id = c.source_id"
            # "+": without it SQLite (no ANALYZE statistics) walks the project's whole (project_id, chunk_hash)
            # index instead of looking the few ids up: 20+ ms of CPU a search at 100k chunks
            f" WHERE c.id IN ({marks}) AND +c.project_id IN ({project_marks})", (model_id, *pool, *project_ids)):
        found[row[0]] = row[1:8]
        if row[0] in missing and row[8]:
            keys.append(row[0])
    if keys and query_vector is not None:
        stored = conn.execute(f"SELECT chunk_id, vector FROM doc_vector WHERE chunk_id IN ({','.join('?' * len(keys))})",
                              keys).fetchall()
        keys, blobs = [row[0] for row in stored], [row[1] for row in stored]
    return Completed(rows=found, similarity=similarities(keys, blobs, query_vector) if keys else {})
