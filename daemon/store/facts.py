"""The rows of facts: plain SQL functions that run on a connection handed out by the SQLite pool.

Each function takes ``conn`` and runs inside the transaction the pool opened (``db.write`` or ``db.read``), so
a caller composes several of them atomically. Nothing here loads a model or talks to Chroma (DESIGN.md: the
store keeps rows and vectors). Schema: ``migrations.py``.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pirag.client.errors import InvalidArgument, NotFound
from pirag.client.protocol.memory import Fact, FactVersion

from . import fts

FACT_COLUMNS = "seq, id, project, content, tags, source, importance, metadata, created_at, updated_at, version"
_COLUMNS_F = ", ".join("f." + column.strip() for column in FACT_COLUMNS.split(","))
_MAX_FTS_TERMS = 32


# -- values -----------------------------------------------------------------------------------------------------

def normalize(text: str) -> str:
    """The form two facts must share to be exact duplicates: NFKC, case-folded, whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def norm_hash(text: str) -> str:
    return hashlib.sha256(normalize(text).encode()).hexdigest()


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def vector_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def blob_vector(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4")


STOPWORDS = frozenset("""a an and are as at be but by can do does for from had has have how i if in into is it its
me my no not of on or our so than that the their them then there these they this to was we were what when where
which who why will with you your""".split())

# Keyword search on a big store (100k facts): OR-ing frequent words makes FTS5 score every row that has any of
# them (tens of milliseconds). A word found in more than this share of the rows (and at least _FREQUENT_MIN
# rows) is treated like a stopword when the rarer words of the query alone find enough rows.
_FREQUENT_SHARE = 0.02
_FREQUENT_MIN = 1000
_DF_TTL_S = 60.0
_DF_ENTRIES = 4096
# (id of the connection, FTS table, word) -> (when, rows): a stale or reused entry only changes which words
# are left out, never which rows can match.
_df_cache: dict[tuple[int, str, str], tuple[float, int]] = {}


def query_words(text: str) -> list[str]:
    """The words of a query (identifiers whole, ``fts.query_words``), stopwords dropped (all of them when
    nothing else is left), each once."""
    words = fts.query_words(text)
    kept = [word for word in words if word.casefold() not in STOPWORDS] or words
    return kept[:_MAX_FTS_TERMS]


def fts_match(words: Sequence[str], conjunction: bool = False) -> str:
    """A safe FTS5 query: every word as ``fts.match_word`` makes it, joined by AND (all words) or OR (any)."""
    return (" AND " if conjunction else " OR ").join(fts.match_word(word) for word in words)


def fts_query(text: str, conjunction: bool = False) -> str:
    """A safe FTS5 query from free text (see ``query_words`` and ``fts_match``)."""
    return fts_match(query_words(text), conjunction)


def _doc_frequency(conn: sqlite3.Connection, fts: str, word: str) -> int:
    """How many rows of ``fts`` hold ``word`` (cached a minute per connection: it only steers the plan)."""
    cache = _df_cache
    key = (id(conn), fts, word)
    now = time.monotonic()
    hit = cache.get(key)
    if hit is not None and now - hit[0] < _DF_TTL_S:
        return hit[1]
    count = int(conn.execute(f"SELECT count(*) FROM {fts} WHERE {fts} MATCH ?", (fts_match([word]),)).fetchone()[0])
    if len(cache) >= _DF_ENTRIES:
        cache.clear()
    cache[key] = (now, count)
    return count


def _ranked_ids(conn: sqlite3.Connection, fts: str, table: str, where: "Filter", match: str,
                limit: int) -> list[tuple[str, float]]:
    """(id, BM25) by BM25 among the rows that pass ``where``: FTS5 ranks inside its own index first (cheap), only
    the best rows are joined and filtered; too few survive the filter: the inner limit widens (finally: every
    match)."""
    alias = where.alias
    # A selective filter (tags, time) keeps few of the best rows: rank every match at once, not in rounds.
    inner = -1 if where.selective else limit * 4
    while True:
        rows = conn.execute(
            f"SELECT {alias}.id, -m.score FROM (SELECT rowid AS seq, rank AS score FROM {fts} WHERE {fts} MATCH ? "
            f"ORDER BY rank LIMIT ?) m JOIN {table} {alias} ON {alias}.seq = m.seq "
            f"WHERE {where.sql_by_id} ORDER BY m.score LIMIT ?", [match, inner, *where.params, limit]).fetchall()
        if len(rows) >= limit or inner < 0:
            return [(row[0], row[1]) for row in rows]
        matched = conn.execute(f"SELECT count(*) FROM {fts} WHERE {fts} MATCH ?", (match,)).fetchone()[0]
        if matched <= inner:
            return [(row[0], row[1]) for row in rows]
        inner = inner * 16 if inner * 16 < matched else -1


def ranked_keyword_search(conn: sqlite3.Connection, fts: str, table: str, query: str, where: "Filter",
                          limit: int) -> list[tuple[str, float]]:
    """(id, BM25) by BM25 (best first) among the rows of ``table`` that pass ``where``, cheaply on a big store.

    Every word first (few, cheap matches); when that finds too little, any word, but words found in a big
    share of the rows are left out while the rarer words alone find ``limit`` rows (their posting lists are
    long and, with a low IDF, they barely change the ranking); finally any word at all.
    """
    words = query_words(query)
    if not words:
        return []
    found: list[tuple[str, float]] = []
    if len(words) > 1:
        found = _ranked_ids(conn, fts, table, where, fts_match(words, conjunction=True), limit)
        if len(found) >= max(1, limit // 2):
            return found
    if len(words) > 1:
        total = conn.execute(f"SELECT max(seq) FROM {table}").fetchone()[0] or 0
        frequent = max(_FREQUENT_MIN, int(total * _FREQUENT_SHARE))
        rare = [word for word in words if _doc_frequency(conn, fts, word) <= frequent]
        if rare and len(rare) < len(words):
            narrow = _ranked_ids(conn, fts, table, where, fts_match(rare), limit)
            if len(narrow) >= limit:
                return narrow
    everything = _ranked_ids(conn, fts, table, where, fts_match(words), limit)
    return everything if len(everything) >= len(found) else found


def _fact(row: Sequence[Any]) -> Fact:
    return Fact(id=row[1], project=row[2], content=row[3], tags=json.loads(row[4]), source=row[5],
                importance=row[6], metadata=json.loads(row[7]), created_at=row[8], updated_at=row[9],
                version=row[10])


# -- filters ----------------------------------------------------------------------------------------------------

@dataclass
class Filter:
    """A WHERE clause over the ``fact`` (alias ``f``) or ``episode`` (alias ``e``) table, built safely."""

    alias: str
    clauses: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)

    def add(self, clause: str, *params: Any) -> "Filter":
        self.clauses.append(clause.replace("{a}", self.alias))
        self.params.extend(params)
        return self

    def projects(self, projects: Sequence[str] | None) -> "Filter":
        if projects is not None:
            self.add(f"{{a}}.project IN ({','.join('?' * len(projects))})", *projects)
        return self

    def time(self, column: str, start: float | None, end: float | None) -> "Filter":
        if start is not None:
            self.add(f"{{a}}.{column} >= ?", start)
        if end is not None:
            self.add(f"{{a}}.{column} < ?", end)
        return self

    def fact_tags(self, tags: Sequence[str], mode: str) -> "Filter":
        if not tags:
            return self
        marks = ",".join("?" * len(tags))
        # Tags are the selective part: keep the planner from walking the whole project's index to test them.
        self.clauses = [f"+{clause}" if clause.startswith(f"{self.alias}.project IN") else clause
                        for clause in self.clauses]
        if mode == "all":
            self.add(f"{{a}}.seq IN (SELECT fact_seq FROM fact_tag WHERE tag IN ({marks}) "
                     f"GROUP BY fact_seq HAVING count(*) = ?)", *tags, len(set(tags)))
        else:
            self.add(f"{{a}}.seq IN (SELECT fact_seq FROM fact_tag WHERE tag IN ({marks}))", *tags)
        return self

    @property
    def sql(self) -> str:
        return " AND ".join(self.clauses) if self.clauses else "1"

    @property
    def sql_by_id(self) -> str:
        """The clause for rows already picked by id: unary ``+`` keeps SQLite's planner on the id index
        (without it, ``project IN (?)`` can make it scan a whole project to check 30 ids)."""
        if not self.clauses:
            return "1"
        return re.sub(rf"(?<![\w.+]){self.alias}\.(\w+)", rf"+{self.alias}.\1", self.sql)

    @property
    def selective(self) -> bool:
        """True when something beyond the project narrows the rows (the vector index cannot filter it)."""
        return any(".project IN" not in clause for clause in self.clauses)


def encode_cursor(timestamp: float, seq: int) -> str:
    return f"{timestamp!r}:{seq}"


def decode_cursor(cursor: str) -> tuple[float, int] | None:
    if not cursor:
        return None
    try:
        timestamp, seq = cursor.rsplit(":", 1)
        return float(timestamp), int(seq)
    except ValueError as exc:
        raise InvalidArgument(f"bad cursor {cursor!r}: pass back the next_cursor of the previous page") from exc


# -- reads ------------------------------------------------------------------------------------------------------

def get(conn: sqlite3.Connection, fact_id: str) -> tuple[int, Fact]:
    row = conn.execute(f"SELECT {FACT_COLUMNS} FROM fact WHERE id = ?", (fact_id,)).fetchone()
    if row is None:
        raise NotFound(f"no fact with id {fact_id!r}", details={"id": fact_id})
    return row[0], _fact(row)


def find_exact(conn: sqlite3.Connection, project: str, content_hash: str) -> Fact | None:
    row = conn.execute(f"SELECT {FACT_COLUMNS} FROM fact WHERE project = ? AND norm_hash = ?",
                       (project, content_hash)).fetchone()
    return _fact(row) if row else None


def by_ids(conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, Fact]:
    found: dict[str, Fact] = {}
    for start in range(0, len(ids), 500):
        part = ids[start:start + 500]
        for row in conn.execute(f"SELECT {FACT_COLUMNS} FROM fact WHERE id IN ({','.join('?' * len(part))})",
                                part):
            found[row[1]] = _fact(row)
    return found


def seqs_for_ids(conn: sqlite3.Connection, ids: Sequence[str], where: Filter) -> dict[str, int]:
    """The ``seq`` of each id that still exists and passes ``where`` (vector hits are checked against SQLite)."""
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    rows = conn.execute(f"SELECT f.id, f.seq FROM fact f WHERE f.id IN ({marks}) AND {where.sql_by_id}",
                        [*ids, *where.params])
    return dict(rows.fetchall())


def history(conn: sqlite3.Connection, seq: int) -> list[FactVersion]:
    rows = conn.execute("SELECT version, content, tags, source, importance, valid_from, valid_to, reason "
                        "FROM fact_history WHERE fact_seq = ? ORDER BY version", (seq,))
    return [FactVersion(version=r[0], content=r[1], tags=json.loads(r[2]), source=r[3], importance=r[4],
                        valid_from=r[5], valid_to=r[6], reason=r[7]) for r in rows]


def list_page(conn: sqlite3.Connection, where: Filter, order: str, limit: int,
              cursor: str) -> tuple[list[Fact], str]:
    position = decode_cursor(cursor)
    where = Filter(where.alias, list(where.clauses), list(where.params))
    newest = order == "newest"
    if position is not None:
        where.add(f"({{a}}.created_at, {{a}}.seq) {'<' if newest else '>'} (?, ?)", *position)
    direction = "DESC" if newest else "ASC"
    rows = conn.execute(f"SELECT {_COLUMNS_F} FROM fact f "
                        f"WHERE {where.sql} ORDER BY f.created_at {direction}, f.seq {direction} LIMIT ?",
                        [*where.params, limit + 1]).fetchall()
    facts = [_fact(row) for row in rows[:limit]]
    next_cursor = encode_cursor(rows[limit - 1][8], rows[limit - 1][0]) if len(rows) > limit else ""
    return facts, next_cursor


def keyword_search(conn: sqlite3.Connection, query: str, where: Filter, limit: int) -> list[tuple[str, float]]:
    """(fact id, BM25) best first among the rows that pass ``where``."""
    return ranked_keyword_search(conn, "fact_fts", "fact", query, where, limit)


def complete_pool(conn: sqlite3.Connection, ids: Sequence[str], where: Filter, missing: set[str],
                  model_id: str) -> tuple[dict[str, Fact], dict[str, bytes]]:
    """``complete`` for facts."""
    return complete(conn, columns=_COLUMNS_F, table="fact f", alias="f", convert=_fact, ids=ids, where=where,
                    missing=missing, model_id=model_id)


def rows_for_ids(conn: sqlite3.Connection, ids: Sequence[str], where: Filter) -> dict[str, Fact]:
    """The facts among ``ids`` that still exist and pass ``where`` (vector hits checked against SQLite)."""
    return select_by_ids(conn, f"SELECT {_COLUMNS_F} FROM fact f", "f", ids, where, _fact)


def candidate_vectors(conn: sqlite3.Connection, where: Filter, model_id: str,
                      max_rows: int) -> tuple[list[str], np.ndarray] | None:
    """Every (id, vector) passing ``where`` for an exact search, or None when there are more than ``max_rows``."""
    return exact_candidates(conn, "fact f", "f", where, model_id, max_rows)


def select_by_ids(conn: sqlite3.Connection, select: str, alias: str, ids: Sequence[str], where: Filter,
                  convert: Any) -> dict[str, Any]:
    """Rows of ``select`` (its table named ``alias``, its second column the id) among ``ids`` that pass
    ``where``, converted; shared by the fact and episode stores."""
    if not ids:
        return {}
    found: dict[str, Any] = {}
    unique = list(dict.fromkeys(ids))
    for start in range(0, len(unique), 500):
        part = unique[start:start + 500]
        for row in conn.execute(f"{select} WHERE {alias}.id IN ({','.join('?' * len(part))}) "
                                f"AND {where.sql_by_id}", [*part, *where.params]):
            found[row[1]] = convert(row)
    return found


def complete(conn: sqlite3.Connection, *, columns: str, table: str, alias: str, convert: Any, ids: Sequence[str],
             where: Filter, missing: set[str], model_id: str) -> tuple[dict[str, Any], dict[str, bytes]]:
    """One read that completes a pool of candidates (the retrieval core's step 2), shared by facts and episodes:
    the rows among ``ids`` that exist and pass ``where`` (``columns`` start with ``seq, id``; ``convert`` makes
    the row) and the stored vectors of those in ``missing`` (no similarity yet)."""
    rows: dict[str, Any] = {}
    blobs: dict[str, bytes] = {}
    raw = select_by_ids(conn, f"SELECT {columns}, {alias}.model_id, {alias}.vector FROM {table}", alias, ids, where,
                        tuple)
    for key, row in raw.items():
        rows[key] = convert(row[:-2])
        if key in missing and row[-2] == model_id and row[-1] is not None:
            blobs[key] = row[-1]
    return rows, blobs


def exact_candidates(conn: sqlite3.Connection, table: str, alias: str, where: Filter, model_id: str,
                     max_rows: int) -> tuple[list[str], np.ndarray] | None:
    """Every (id, vector) of ``table`` passing ``where``, or None when there are more than ``max_rows``."""
    rows = conn.execute(f"SELECT {alias}.id, {alias}.vector FROM {table} WHERE {where.sql} "
                        f"AND {alias}.model_id = ? AND {alias}.vector IS NOT NULL LIMIT ?",
                        [*where.params, model_id, max_rows + 1]).fetchall()
    if len(rows) > max_rows:
        return None
    if not rows:
        return [], np.zeros((0, 0), np.float32)
    return [row[0] for row in rows], np.stack([blob_vector(row[1]) for row in rows])


def vector_page(conn: sqlite3.Connection, project: str, model_id: str, after_seq: int,
                batch: int = 2000) -> tuple[int, list[str], np.ndarray] | None:
    """One batch of (ids, vectors) of ``project`` after ``after_seq``, for rebuilding the index; None at the end."""
    rows = conn.execute("SELECT seq, id, vector FROM fact WHERE project = ? AND model_id = ? AND seq > ? "
                        "ORDER BY seq LIMIT ?", (project, model_id, after_seq, batch)).fetchall()
    if not rows:
        return None
    return rows[-1][0], [row[1] for row in rows], np.stack([blob_vector(row[2]) for row in rows])


def counts_by_project(conn: sqlite3.Connection, model_id: str) -> dict[str, int]:
    return dict(conn.execute("SELECT project, count(*) FROM fact WHERE model_id = ? GROUP BY project",
                             (model_id,)).fetchall())


def stale_vectors(conn: sqlite3.Connection, model_id: str, limit: int) -> list[tuple[int, str, str, str]]:
    """Facts whose vector is missing or from another model: (seq, id, project, content)."""
    return conn.execute("SELECT seq, id, project, content FROM fact WHERE model_id IS NOT ? OR vector IS NULL "
                        "ORDER BY seq LIMIT ?", (model_id, limit)).fetchall()


def export_page(conn: sqlite3.Connection, project: str | None, after_seq: int,
                limit: int) -> tuple[list[tuple[int, Fact, list[FactVersion]]], int]:
    where = Filter("f").projects([project] if project is not None else None).add("{a}.seq > ?", after_seq)
    rows = conn.execute(f"SELECT {_COLUMNS_F} FROM fact f "
                        f"WHERE {where.sql} ORDER BY f.seq LIMIT ?", [*where.params, limit]).fetchall()
    page = [(row[0], _fact(row), history(conn, row[0])) for row in rows]
    return page, (rows[-1][0] if rows else after_seq)


# -- writes -----------------------------------------------------------------------------------------------------

def _set_tags(conn: sqlite3.Connection, seq: int, tags: Sequence[str]) -> None:
    conn.execute("DELETE FROM fact_tag WHERE fact_seq = ?", (seq,))
    conn.executemany("INSERT OR IGNORE INTO fact_tag (tag, fact_seq) VALUES (?, ?)", [(tag, seq) for tag in tags])


def insert(conn: sqlite3.Connection, *, fact_id: str, project: str, content: str, tags: Sequence[str], source: str,
           importance: float, metadata: dict[str, Any], created_at: float, updated_at: float, version: int,
           model_id: str | None, vector: np.ndarray | None,
           versions: Sequence[FactVersion] = ()) -> tuple[int, Fact]:
    cursor = conn.execute(
        "INSERT INTO fact (id, project, content, norm_hash, tags, source, importance, metadata, created_at, "
        "updated_at, version, model_id, vector, idents) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (fact_id, project, content, norm_hash(content), json.dumps(list(tags)), source, importance,
         json.dumps(metadata), created_at, updated_at, version, model_id,
         vector_blob(vector) if vector is not None else None, fts.idents(content)))
    seq = int(cursor.lastrowid or 0)
    _set_tags(conn, seq, tags)
    conn.executemany(
        "INSERT OR IGNORE INTO fact_history (fact_seq, version, content, tags, source, importance, valid_from, "
        "valid_to, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(seq, v.version, v.content, json.dumps(v.tags), v.source, v.importance, v.valid_from, v.valid_to, v.reason)
         for v in versions])
    return seq, Fact(id=fact_id, project=project, content=content, tags=list(tags), source=source,
                     importance=importance, metadata=dict(metadata), created_at=created_at, updated_at=updated_at,
                     version=version)


def update(conn: sqlite3.Connection, fact_id: str, *, now: float, reason: str, content: str | None = None,
           tags: Sequence[str] | None = None, source: str | None = None, importance: float | None = None,
           metadata: dict[str, Any] | None = None, model_id: str | None = None,
           vector: np.ndarray | None = None) -> tuple[int, Fact, int]:
    """Replace some fields of a fact; the version it supersedes goes to ``fact_history``.

    Returns (seq, the new fact, the superseded version number). An update that would make the fact an exact
    duplicate of another fact of its project is refused (``invalid_argument``).
    """
    seq, old = get(conn, fact_id)
    new_content = old.content if content is None else content
    if content is not None and normalize(content) != normalize(old.content):
        twin = find_exact(conn, old.project, norm_hash(content))
        if twin is not None and twin.id != fact_id:
            raise InvalidArgument(f"fact {twin.id} already says that", details={"duplicate_of": twin.id})
    conn.execute("INSERT INTO fact_history (fact_seq, version, content, tags, source, importance, valid_from, "
                 "valid_to, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                 (seq, old.version, old.content, json.dumps(old.tags), old.source, old.importance,
                  old.updated_at, now, reason))
    new = Fact(id=old.id, project=old.project, content=new_content,
               tags=list(old.tags if tags is None else tags), source=old.source if source is None else source,
               importance=old.importance if importance is None else importance,
               metadata=dict(old.metadata if metadata is None else metadata), created_at=old.created_at,
               updated_at=now, version=old.version + 1)
    assignments = ["content = ?", "norm_hash = ?", "tags = ?", "source = ?", "importance = ?", "metadata = ?",
                   "updated_at = ?", "version = ?", "idents = ?"]
    params: list[Any] = [new.content, norm_hash(new.content), json.dumps(new.tags), new.source, new.importance,
                         json.dumps(new.metadata), now, new.version, fts.idents(new.content)]
    if vector is not None:
        assignments += ["model_id = ?", "vector = ?"]
        params += [model_id, vector_blob(vector)]
    conn.execute(f"UPDATE fact SET {', '.join(assignments)} WHERE seq = ?", [*params, seq])
    if tags is not None:
        _set_tags(conn, seq, new.tags)
    return seq, new, old.version


def set_vectors(conn: sqlite3.Connection, model_id: str, rows: Sequence[tuple[int, np.ndarray]]) -> None:
    conn.executemany("UPDATE fact SET model_id = ?, vector = ? WHERE seq = ?",
                     [(model_id, vector_blob(vector), seq) for seq, vector in rows])


def delete(conn: sqlite3.Connection, ids: Sequence[str]) -> list[tuple[str, str]]:
    """Delete facts (row, tags, history, FTS entry by trigger); all or nothing: NotFound names the missing ids."""
    unique = list(dict.fromkeys(ids))
    marks = ",".join("?" * len(unique))
    found = conn.execute(f"SELECT id, project FROM fact WHERE id IN ({marks})", unique).fetchall()
    if len(found) != len(unique):
        missing = sorted(set(unique) - {row[0] for row in found})
        raise NotFound(f"no fact with id {', '.join(map(repr, missing[:10]))}", details={"ids": missing[:100]})
    conn.execute(f"DELETE FROM fact WHERE id IN ({marks})", unique)
    return [(row[0], row[1]) for row in found]


def delete_project(conn: sqlite3.Connection, project: str) -> list[str]:
    return [row[0] for row in conn.execute("DELETE FROM fact WHERE project = ? RETURNING id", (project,))]
