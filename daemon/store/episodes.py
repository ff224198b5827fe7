"""The rows of episodes (the timeline): plain SQL functions on a connection handed out by the SQLite pool.

Like ``facts.py``: every function runs inside the caller's transaction. Episodes are appended with their
vector NULL; the episode indexer (``services/episodes.py``) fills it in after the write is acknowledged.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

import numpy as np

from pirag.client.protocol.memory import Episode, SessionInfo

from . import fts
from .facts import (
    Filter, blob_vector, complete, decode_cursor, encode_cursor, exact_candidates, ranked_keyword_search, vector_blob,
)
from .migrations import PREVIOUS_EPISODE

EPISODE_COLUMNS = ("e.seq", "e.id", "e.session", "e.project", "e.kind", "e.role", "e.content", "e.ts",
                   "e.metadata")
_SELECT = ", ".join(EPISODE_COLUMNS)


def _episode(row: Sequence[Any]) -> Episode:
    return Episode(id=row[1], session=row[2], project=row[3], kind=row[4], role=row[5], content=row[6],
                   timestamp=row[7], metadata=json.loads(row[8]))


_WITH_CONTEXT = ("INSERT{ignore} INTO episode (id, session, project, kind, role, content, ts, metadata, created_at, "
                 "idents, context) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, coalesce(("
                 + PREVIOUS_EPISODE.format(session="?2", project="?3", ts="?7", seq="1 << 62") + "), ''))")


def insert(conn: sqlite3.Connection, *, episode_id: str, session: str, project: str, kind: str, role: str,
           content: str, timestamp: float, metadata: dict[str, Any], created_at: float) -> Episode:
    conn.execute(_WITH_CONTEXT.format(ignore=""),
                 (episode_id, session, project, kind, role, content, timestamp, json.dumps(metadata), created_at,
                  fts.idents(content)))
    return Episode(id=episode_id, session=session, project=project, kind=kind, role=role, content=content,
                   timestamp=timestamp, metadata=dict(metadata))


def insert_many(conn: sqlite3.Connection, rows: Sequence[tuple[str, str, str, str, str, str, float, str, float]],
                ) -> int:
    """Bulk insert (import): rows of (id, session, project, kind, role, content, ts, metadata_json, created_at);
    ids already present are skipped. Returns how many were inserted."""
    cursor = conn.executemany(_WITH_CONTEXT.format(ignore=" OR IGNORE"), [(*row, fts.idents(row[5])) for row in rows])
    return max(cursor.rowcount, 0)  # sqlite3_changes: the rows of the statement itself, not the FTS trigger's


def page(conn: sqlite3.Connection, where: Filter, order: str, limit: int, cursor: str) -> tuple[list[Episode], str]:
    position = decode_cursor(cursor)
    where = Filter(where.alias, list(where.clauses), list(where.params))
    newest = order == "newest"
    if position is not None:
        where.add(f"({{a}}.ts, {{a}}.seq) {'<' if newest else '>'} (?, ?)", *position)
    direction = "DESC" if newest else "ASC"
    rows = conn.execute(f"SELECT {_SELECT} FROM episode e WHERE {where.sql} "
                        f"ORDER BY e.ts {direction}, e.seq {direction} LIMIT ?", [*where.params, limit + 1]).fetchall()
    episodes = [_episode(row) for row in rows[:limit]]
    next_cursor = encode_cursor(rows[limit - 1][7], rows[limit - 1][0]) if len(rows) > limit else ""
    return episodes, next_cursor


def by_ids(conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, Episode]:
    found: dict[str, Episode] = {}
    for start in range(0, len(ids), 500):
        part = ids[start:start + 500]
        for row in conn.execute(f"SELECT {_SELECT} FROM episode e WHERE e.id IN ({','.join('?' * len(part))})",
                                part):
            found[row[1]] = _episode(row)
    return found


def seqs_for_ids(conn: sqlite3.Connection, ids: Sequence[str], where: Filter) -> dict[str, int]:
    if not ids:
        return {}
    rows = conn.execute(f"SELECT e.id, e.seq FROM episode e WHERE e.id IN ({','.join('?' * len(ids))}) "
                        f"AND {where.sql_by_id}", [*ids, *where.params])
    return dict(rows.fetchall())


def keyword_search(conn: sqlite3.Connection, query: str, where: Filter, limit: int) -> list[tuple[str, float]]:
    """(episode id, BM25) best first among the rows that pass ``where``."""
    return ranked_keyword_search(conn, "episode_fts", "episode", query, where, limit)


def complete_pool(conn: sqlite3.Connection, ids: Sequence[str], where: Filter, missing: set[str],
                  model_id: str) -> tuple[dict[str, Episode], dict[str, bytes]]:
    """``facts.complete`` for episodes."""
    return complete(conn, columns=_SELECT, table="episode e", alias="e", convert=_episode, ids=ids, where=where,
                    missing=missing, model_id=model_id)


def candidate_vectors(conn: sqlite3.Connection, where: Filter, model_id: str,
                      max_rows: int) -> tuple[list[str], np.ndarray] | None:
    return exact_candidates(conn, "episode e", "e", where, model_id, max_rows)


def unembedded(conn: sqlite3.Connection, model_id: str, limit: int) -> list[tuple[int, str, str, str]]:
    """Episodes without a vector of ``model_id``: (seq, id, project, content), oldest first."""
    rows = conn.execute("SELECT seq, id, project, content FROM episode WHERE vector IS NULL ORDER BY seq LIMIT ?",
                        (limit,)).fetchall()
    if len(rows) < limit:
        rows += conn.execute("SELECT seq, id, project, content FROM episode WHERE vector IS NOT NULL "
                             "AND model_id IS NOT ? ORDER BY seq LIMIT ?", (model_id, limit - len(rows))).fetchall()
    return rows


def set_vectors(conn: sqlite3.Connection, model_id: str, rows: Sequence[tuple[int, np.ndarray]]) -> set[int]:
    """Store the vectors; returns the seqs whose rows still exist. An episode pruned or forgotten while it was
    being embedded is not updated, and its vector must not reach the index either: the delete that removed
    it from the index ran before the vector was there, so an upsert now would leave a ghost."""
    conn.executemany("UPDATE episode SET model_id = ?, vector = ? WHERE seq = ?",
                     [(model_id, vector_blob(vector), seq) for seq, vector in rows])
    seqs = [seq for seq, _ in rows]
    present: set[int] = set()
    for start in range(0, len(seqs), 500):
        part = seqs[start:start + 500]
        present.update(row[0] for row in conn.execute(
            f"SELECT seq FROM episode WHERE seq IN ({','.join('?' * len(part))})", part))
    return present


def vector_page(conn: sqlite3.Connection, project: str, model_id: str, after_seq: int,
                batch: int = 2000) -> tuple[int, list[str], np.ndarray] | None:
    """One batch of (ids, vectors) of ``project`` after ``after_seq``, for rebuilding the index; None at the end."""
    rows = conn.execute("SELECT seq, id, vector FROM episode WHERE project = ? AND model_id = ? AND seq > ? "
                        "AND vector IS NOT NULL ORDER BY seq LIMIT ?", (project, model_id, after_seq, batch)).fetchall()
    if not rows:
        return None
    return rows[-1][0], [row[1] for row in rows], np.stack([blob_vector(row[2]) for row in rows])


def counts_by_project(conn: sqlite3.Connection, model_id: str) -> dict[str, int]:
    return dict(conn.execute("SELECT project, count(*) FROM episode WHERE model_id = ? AND vector IS NOT NULL "
                             "GROUP BY project", (model_id,)).fetchall())


def sessions(conn: sqlite3.Connection, where: Filter, limit: int) -> list[SessionInfo]:
    rows = conn.execute(f"SELECT e.session, e.project, count(*), min(e.ts), max(e.ts) FROM episode e "
                        f"WHERE {where.sql} GROUP BY e.session, e.project ORDER BY max(e.ts) DESC LIMIT ?",
                        [*where.params, limit])
    return [SessionInfo(session=r[0], project=r[1], episodes=r[2], first_at=r[3], last_at=r[4]) for r in rows]


def projects(conn: sqlite3.Connection) -> list[str]:
    return [row[0] for row in conn.execute("SELECT DISTINCT project FROM episode")]


def prune(conn: sqlite3.Connection, project: str, *, older_than: float | None, keep: int | None,
          batch: int) -> list[str]:
    """Delete up to ``batch`` episodes of ``project`` that break its retention rule; their ids."""
    deleted: list[str] = []
    if older_than is not None:
        deleted += [row[0] for row in conn.execute(
            "DELETE FROM episode WHERE seq IN (SELECT seq FROM episode WHERE project = ? AND ts < ? "
            "ORDER BY ts LIMIT ?) RETURNING id", (project, older_than, batch))]
    if keep is not None and len(deleted) < batch:
        deleted += [row[0] for row in conn.execute(
            "DELETE FROM episode WHERE seq IN (SELECT seq FROM episode WHERE project = ? "
            "ORDER BY ts DESC, seq DESC LIMIT ? OFFSET ?) RETURNING id", (project, batch - len(deleted), keep))]
    return deleted


def export_page(conn: sqlite3.Connection, project: str | None, after_seq: int,
                limit: int) -> tuple[list[tuple[int, Episode]], int]:
    where = Filter("e").projects([project] if project is not None else None).add("{a}.seq > ?", after_seq)
    rows = conn.execute(f"SELECT {_SELECT} FROM episode e WHERE {where.sql} ORDER BY e.seq LIMIT ?",
                        [*where.params, limit]).fetchall()
    return [(row[0], _episode(row)) for row in rows], (rows[-1][0] if rows else after_seq)


def delete_project(conn: sqlite3.Connection, project: str) -> list[str]:
    return [row[0] for row in conn.execute("DELETE FROM episode WHERE project = ? RETURNING id", (project,))]
