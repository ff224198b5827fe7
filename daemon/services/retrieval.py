"""The retrieval core: how a query is answered, the same way for document chunks, facts and episodes.

1. **Candidates, at once.** The vector side (the query's embedding against the kind's index, or an exact scan
   of SQLite's vectors under a selective filter) runs beside the keyword side (FTS5 BM25 over the text and its
   identifier parts, ``store/fts.py``). Each brings ``fetch`` candidates.
2. **One read completes them.** For every candidate of either side: its row (checked against SQLite, the truth,
   and the filters) and its true cosine similarity (a keyword-only candidate's vector is read from SQLite). Its
   BM25 comes from the keyword side, which scores four times as many rows as it proposes (FTS5 scores every
   match to order them anyway), so a vector-only candidate gets its own BM25 too unless it ranks below those.
   Whether the candidate's text holds the query as typed (a phrase) is checked on the text itself.
   So both signals are known for the whole pool, not only for what each side ranked.
3. **Score-aware fusion** (``fuse``): ``score = w * sim_n + (1 - w) * bm25_n + phrase``, where
   ``sim_n = (sim - low) / (1 - low)`` is how far the similarity rises above the pool's lowest, as a share of
   what is left up to a perfect match (min-max scaling would blow a flat spread such as 0.30-0.33 up to 0-1),
   ``bm25_n`` the BM25 divided by the pool's best, and ``phrase`` a bonus for an item holding the query word
   for word. ``w`` is per kind of item (``Weights``). Reciprocal rank
   fusion, used before, threw the scores away: a chunk that was keyword rank 1 and absent from the vector list
   scored 1/61 and lost to chunks both sides ranked weakly.
4. **Grouped by file** (document chunks, ``by_source``): a file's best chunk lifted by a share of its second
   best, then at most ``per_file`` chunks of one file while other files have candidates.
5. **Budget**: ``within_budget`` keeps results in order until a character budget is spent.

``mode="vector"`` / ``"keyword"`` rank by one side alone (for measuring each half, ``pirag-stress quality``).
docs/RETRIEVAL.md gives the figures behind every choice.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

import numpy as np

from ..metrics import quantile_ms
from ..store.fts import phrase_pattern

Key = TypeVar("Key", bound=Hashable)
KEYWORD_SCORED = 4    # the keyword side scores this many times ``fetch`` rows (see ``retrieve``)


@dataclass(frozen=True, slots=True)
class Weights:
    """How much the similarity counts against BM25, and the phrase bonus, for one kind of item."""

    vector: float          # share of the (scaled) similarity; BM25 gets 1 - vector
    phrase: float = 0.15   # added when the item holds the query as typed


# Chosen on the benchmark (docs/RETRIEVAL.md): on LoCoMo dev w = 0.3-0.7 is a plateau (episodes R@5
# 0.641-0.667), so conversational memory takes its middle, equal weight; code questions rarely use the code's
# words (keyword R@1 0.52 vs vector 0.57 on stdlib code search), so meaning weighs more for chunks (0.8: MRR
# 0.679 and R@10 0.885, above both halves; 0.6 gave 0.672 / 0.863).
WEIGHTS: dict[str, Weights] = {
    "chunks": Weights(vector=0.8),
    "facts": Weights(vector=0.5),
    "episodes": Weights(vector=0.5),
}


class Phases:
    """Where one service's recent queries spent their time, per step of ``retrieve`` (``status``: ``phases_ms``).

    ``embed``: the query's embedding (0 when cached); ``vector``: the index query after it; ``keyword``: from the
    embedding's end until the keyword side was ready (it runs beside the vector query); ``complete``: the
    completing read; ``fuse``: fusion and the phrase check. p50 and p90 over the last ``window`` queries."""

    STEPS = ("embed", "vector", "keyword", "complete", "fuse")

    def __init__(self, window: int = 512):
        self._seconds = {step: deque(maxlen=window) for step in self.STEPS}

    def add(self, step: str, seconds: float) -> None:
        self._seconds[step].append(seconds)

    def stats(self) -> dict[str, dict[str, float]]:
        figures = {}
        for step, values in self._seconds.items():
            if values:
                ordered = sorted(values)
                figures[step] = {"p50": quantile_ms(ordered, 0.5), "p90": quantile_ms(ordered, 0.9)}
        return figures


@dataclass(slots=True)
class Completed(Generic[Key]):
    """What the completing read found for the pool of candidates."""

    rows: dict[Any, Any]                                      # key -> row, only the ones that exist and pass
    similarity: dict[Any, float] = field(default_factory=dict)  # key -> cosine (keyword-only ones included)
    bm25: dict[Any, float] = field(default_factory=dict)      # key -> BM25 (> 0) of those that match
    phrase: set[Any] = field(default_factory=set)             # keys whose text holds the query as typed


@dataclass(slots=True)
class Scored:
    key: Any
    score: float
    similarity: float | None
    bm25: float
    vector_rank: int | None
    keyword_rank: int | None


def fuse(vector_hits: Sequence[tuple[Any, float]], keyword_hits: Sequence[tuple[Any, float]],
         completed: Completed[Any], weights: Weights, mode: str) -> list[Scored]:
    """Every candidate that exists, best first (see the module docstring for the formula)."""
    vector_rank = {key: rank for rank, (key, _) in enumerate(vector_hits, start=1)}
    keyword_rank = {key: rank for rank, (key, _) in enumerate(keyword_hits, start=1)}
    similarity = {**dict(vector_hits), **completed.similarity}
    bm25 = {**dict(keyword_hits), **completed.bm25}
    pool = [key for key in dict.fromkeys([*vector_rank, *keyword_rank]) if key in completed.rows]
    if not pool:
        return []
    low = min((similarity[key] for key in pool if key in similarity), default=0.0)
    headroom = 1.0 - low
    best_bm25 = max((bm25.get(key, 0.0) for key in pool), default=0.0)
    scored: list[Scored] = []
    for key in pool:
        sim = similarity.get(key)
        sim_n = ((sim - low) / headroom if headroom > 0 else 1.0) if sim is not None else 0.0
        bm_n = bm25.get(key, 0.0) / best_bm25 if best_bm25 > 0 else 0.0
        if mode == "vector":
            score = sim if sim is not None else -1.0
        elif mode == "keyword":
            score = bm_n
        else:
            score = weights.vector * sim_n + (1.0 - weights.vector) * bm_n
            if key in completed.phrase:
                score += weights.phrase
        scored.append(Scored(key, score, sim, bm25.get(key, 0.0), vector_rank.get(key), keyword_rank.get(key)))
    scored.sort(key=lambda item: (-item.score, -(item.similarity or -1.0), item.keyword_rank or 1 << 30))
    return scored


async def retrieve(db: Any, mode: str, fetch: int, query: str,
                   embed_query: Callable[[], Awaitable[np.ndarray]],
                   vector_side: Callable[[np.ndarray], Awaitable[list[tuple[Any, float]]]],
                   keyword_side: Callable[[Any], list[tuple[Any, float]]],
                   complete: Callable[[Any, list[Any], Any, set[Any]], Completed[Any]],
                   text_of: Callable[[Any], str], weights: Weights,
                   phases: Phases | None = None) -> tuple[list[Scored], Completed[Any]]:
    """Steps 1-3 for one query. ``embed_query()`` gives the query's vector, ``vector_side(vector)`` its hits;
    ``keyword_side(conn)`` returns (key, BM25) best first, up to ``KEYWORD_SCORED * fetch`` of them: the first
    ``fetch`` are candidates, the rest only lend their BM25 to vector candidates (ranking them cost FTS5 nothing
    more: it scores every match to order them). ``complete(conn, pool, query vector, keys without a similarity)``
    runs on a reader; ``text_of(row)`` is the text the phrase is looked for in; ``phases`` records each step's
    time.

    The keyword side starts once the query is embedded, beside the vector query: the embedding's latency lane
    runs on every CPU, and a reader thread competing with it for a core made the embedding 30-50% slower on 2
    cores, more than running the two sides at once saved (docs/PERFORMANCE_IMPROVEMENTS.md). The vector query
    itself runs in the index worker's process, so the keyword side has a core meanwhile."""
    began = time.perf_counter()
    query_vector = await embed_query() if mode != "keyword" else None
    embedded = time.perf_counter()
    keyword = asyncio.ensure_future(db.read(keyword_side)) if mode != "vector" else None
    try:
        vector_hits = await vector_side(query_vector) if query_vector is not None else []
        searched = time.perf_counter()
        scored_keywords: list[tuple[Any, float]] = await keyword if keyword is not None else []
    except BaseException:
        if keyword is not None:
            keyword.cancel()
        raise
    keyworded = time.perf_counter()
    keyword_hits = scored_keywords[:fetch]
    with_similarity = {key for key, _ in vector_hits}
    pool = list(dict.fromkeys([*with_similarity, *(key for key, _ in keyword_hits)]))
    missing = {key for key in pool if key not in with_similarity} if query_vector is not None else set()
    completed = await db.read(lambda conn: complete(conn, pool, query_vector, missing))
    completed_at = time.perf_counter()
    # A vector candidate below the widest keyword list (or matching no word) counts as BM25 0: its true BM25 is
    # at most that list's last, a small share of the best.
    completed.bm25 = dict(scored_keywords)
    pattern = phrase_pattern(query) if mode == "hybrid" else None
    if pattern is not None:
        completed.phrase = {key for key, row in completed.rows.items() if pattern.search(text_of(row))}
    ranked = fuse(vector_hits, keyword_hits, completed, weights, mode)
    if phases is not None:
        for step, seconds in (("embed", embedded - began), ("vector", searched - embedded),
                              ("keyword", keyworded - embedded), ("complete", completed_at - keyworded),
                              ("fuse", time.perf_counter() - completed_at)):
            phases.add(step, seconds)
    return ranked, completed


SECOND_CHUNK = 0.5   # share of a file's second-best chunk added to its best when results are grouped by file


def by_source(ranked: Sequence[Scored], source_of: Callable[[Scored], Hashable], cap: int,
              second: float = SECOND_CHUNK) -> list[Scored]:
    """Chunk results grouped by the file they come from, before the cut at k (``cap`` 0: left as they are).

    Several chunks of one file otherwise crowd the other files out of the top k; code-search tools collapse
    results by file the same way. Two steps, chosen on code search (docs/RETRIEVAL.md, "Code search"):

    - a file's best chunk scores ``best + second * second_best`` of that file's chunks in the pool (a file that
      two chunks match is likelier the one meant: passage evidence summed into the document's), the others
      keep their own scores;
    - at most ``cap`` chunks of one file while other files still have candidates; the rest then fill up, in
      order, so that a search of one big file still returns k hits.
    """
    if cap <= 0:
        return list(ranked)
    chunks_of: dict[Hashable, list[Scored]] = {}
    for item in ranked:
        chunks_of.setdefault(source_of(item), []).append(item)
    lifted = {id(items[0]): items[0].score + second * items[1].score
              for items in chunks_of.values() if len(items) > 1}
    order = sorted(ranked, key=lambda item: -lifted.get(id(item), item.score))
    taken: dict[Hashable, int] = {}
    kept: list[Scored] = []
    rest: list[Scored] = []
    for item in order:
        source = source_of(item)
        if id(item) in lifted:
            item = replace(item, score=lifted[id(item)])
        (kept if taken.get(source, 0) < cap else rest).append(item)
        taken[source] = taken.get(source, 0) + 1
    return kept + rest


def similarities(keys: Sequence[Any], blobs: Sequence[bytes], query_vector: np.ndarray) -> dict[Any, float]:
    """Cosine similarities of stored (normalised, float32) vectors to the query's."""
    if not keys:
        return {}
    matrix = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(keys), -1)
    values = matrix @ np.asarray(query_vector, np.float32)
    return {key: float(value) for key, value in zip(keys, values)}


def within_budget(texts: Sequence[str], budget: int) -> tuple[int, str | None, bool]:
    """How many leading items fit ``budget`` characters (0: no budget), the first item cut to fit when not even
    it does, and whether anything was left out."""
    if not budget:
        return len(texts), None, False
    used = 0
    for index, text in enumerate(texts):
        if used + len(text) > budget:
            if index == 0:
                return 1, text[:budget], True
            return index, None, True
        used += len(text)
    return len(texts), None, False
