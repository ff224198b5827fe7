"""The rows of the documents area: projects, sources, chunks and their vectors, FTS5, ingestion jobs.

Plain SQL on a connection handed in by ``Database.write``/``read`` (each call is one transaction there).
Registered as migration area ``"documents"``; version N is ``DOCUMENT_MIGRATIONS[N - 1]``, append only.

- ``doc_project``: one row per project name (free text); ``collection`` is its Chroma collection name.
- ``doc_source``: one row per ingested file or named text, with the SHA-256 of its bytes. ``content_hash``
  is empty while a source is half written (its chunks arrive over several batches): a crash in between
  leaves a hash that matches nothing, so the resumed job writes it again.
- ``doc_chunk``: text, line range, heading path, the chunk hash (reused vectors are found by it) and the
  ``model_id`` of its vector.
- ``doc_vector``: the vector of each chunk (float32 blob), apart from the chunk rows so that keyword search
  joins read small rows (version 2); Chroma is rebuilt from here. Deleted with its chunk (cascade).
- ``doc_chunk_fts``: external-content FTS5 over text, heading, ``idents`` (the parts of the text's camelCase
  words, ``store/fts.py``; version 3) and ``context`` (the file's short path; version 4), kept in step by
  triggers (a cascade delete of a project or source removes its keyword entries in the same transaction).
- ``doc_job``: the journal of background ingestion jobs, written before the job is acknowledged.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .fts import add_idents_column, idents, recreate_fts, short_path

DOCUMENT_MIGRATIONS: list[str | Callable[[Any], None]] = [
    """
    CREATE TABLE doc_project (
        id              INTEGER PRIMARY KEY,
        name            TEXT NOT NULL UNIQUE,
        collection      TEXT NOT NULL UNIQUE,
        created_at      REAL NOT NULL,
        last_ingest_at  REAL
    );
    CREATE TABLE doc_source (
        id            INTEGER PRIMARY KEY,
        project_id    INTEGER NOT NULL REFERENCES doc_project (id) ON DELETE CASCADE,
        source        TEXT NOT NULL,
        file_type     TEXT NOT NULL,
        content_hash  TEXT NOT NULL,
        bytes         INTEGER NOT NULL,
        mtime         REAL,
        ingested_at   REAL NOT NULL,
        chunks        INTEGER NOT NULL DEFAULT 0,
        note          TEXT NOT NULL DEFAULT '',
        UNIQUE (project_id, source)
    );
    CREATE TABLE doc_chunk (
        id          INTEGER PRIMARY KEY,
        source_id   INTEGER NOT NULL REFERENCES doc_source (id) ON DELETE CASCADE,
        project_id  INTEGER NOT NULL,
        ordinal     INTEGER NOT NULL,
        chunk_hash  TEXT NOT NULL,
        text        TEXT NOT NULL,
        heading     TEXT NOT NULL DEFAULT '',
        line_start  INTEGER NOT NULL,
        line_end    INTEGER NOT NULL,
        tokens      INTEGER NOT NULL,
        model_id    TEXT NOT NULL,
        vector      BLOB NOT NULL
    );
    CREATE INDEX doc_chunk_source ON doc_chunk (source_id, ordinal);
    CREATE INDEX doc_chunk_project_hash ON doc_chunk (project_id, chunk_hash);
    CREATE VIRTUAL TABLE doc_chunk_fts USING fts5 (
        text, heading, content = 'doc_chunk', content_rowid = 'id', tokenize = 'unicode61 remove_diacritics 2'
    );
    CREATE TRIGGER doc_chunk_fts_insert AFTER INSERT ON doc_chunk BEGIN
        INSERT INTO doc_chunk_fts (rowid, text, heading) VALUES (new.id, new.text, new.heading);
    END;
    CREATE TRIGGER doc_chunk_fts_delete AFTER DELETE ON doc_chunk BEGIN
        INSERT INTO doc_chunk_fts (doc_chunk_fts, rowid, text, heading) VALUES ('delete', old.id, old.text, old.heading);
    END;
    CREATE TABLE doc_job (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        project       TEXT NOT NULL,
        state         TEXT NOT NULL,            -- queued | running | done | failed | cancelled
        request       TEXT NOT NULL,            -- JSON: paths and options, enough to run it again
        created_at    REAL NOT NULL,
        started_at    REAL,
        finished_at   REAL,
        attempts      INTEGER NOT NULL DEFAULT 0,
        files_total   INTEGER NOT NULL DEFAULT 0,
        files_done    INTEGER NOT NULL DEFAULT 0,
        chunks_total  INTEGER NOT NULL DEFAULT 0,
        chunks_done   INTEGER NOT NULL DEFAULT 0,
        summary       TEXT NOT NULL DEFAULT '{}', -- JSON: counts, skipped, errors (kept short)
        error         TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX doc_job_state ON doc_job (state);
    """,
    # 2: vectors move to their own table: the chunk rows that keyword search joins shrink from ~2.7 KB (one per
    # 4 KB page, plus overflow) to ~1.2 KB. 114k chunks: ~8 s on a loaded 2-core x86 (a one-off rewrite; the
    # freed pages stay in the file until a VACUUM).
    """
    CREATE TABLE doc_vector (
        chunk_id  INTEGER PRIMARY KEY REFERENCES doc_chunk (id) ON DELETE CASCADE,
        vector    BLOB NOT NULL
    );
    INSERT INTO doc_vector (chunk_id, vector) SELECT id, vector FROM doc_chunk;
    ALTER TABLE doc_chunk DROP COLUMN vector;
    """,
    # 3: identifier-aware keyword search (store/fts.py): chunks get an ``idents`` column (the camelCase words'
    # parts) that FTS5 indexes beside text and heading; the FTS table is re-created and rebuilt from the rows.
    lambda conn: add_idents_column(conn, table="doc_chunk", rowid="id", text="text", fts="doc_chunk_fts",
                                   columns=("text", "heading"), weights=(1.0, 0.5, 0.5)),
    # 4: every chunk's keyword text also holds its file's path (``context``: the last parts, ``fts.short_path``),
    # so "message" finds email/message.py; filled from the sources and the FTS table rebuilt (docs/RETRIEVAL.md).
    lambda conn: _add_context_column(conn),
]
# BM25 column weights: text, heading (definition path), idents (camel parts), context (path). Chosen on code search
# (tests/retrieval/code_study.py): the names say what code does better than its body's words, so they weigh more
# (keyword R@1 0.500 -> 0.547 against (1, 0.5, 0.5, 0); docs/RETRIEVAL.md).
CHUNK_FTS_WEIGHTS = (1.0, 2.0, 1.0, 1.0)


def _add_context_column(conn: Any) -> None:
    conn.execute("ALTER TABLE doc_chunk ADD COLUMN context TEXT NOT NULL DEFAULT ''")
    conn.executemany("UPDATE doc_chunk SET context = ? WHERE source_id = ?",
                     [(short_path(source), source_id) for source_id, source in conn.execute(
                         "SELECT id, source FROM doc_source")])
    recreate_fts(conn, table="doc_chunk", rowid="id", fts="doc_chunk_fts",
                 columns=("text", "heading", "idents", "context"), weights=CHUNK_FTS_WEIGHTS)


@dataclass
class ProjectRow:
    id: int
    name: str
    collection: str


@dataclass
class ChunkRow:
    ordinal: int
    chunk_hash: str
    text: str
    heading: str
    line_start: int
    line_end: int
    tokens: int
    vector: np.ndarray


def vector_blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def blob_vector(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4")


# -- projects -------------------------------------------------------------------------------------------------


def get_project(conn: sqlite3.Connection, name: str) -> ProjectRow | None:
    row = conn.execute("SELECT id, name, collection FROM doc_project WHERE name = ?", (name,)).fetchone()
    return ProjectRow(*row) if row else None


def ensure_project(conn: sqlite3.Connection, name: str, collection: str) -> ProjectRow:
    conn.execute("INSERT OR IGNORE INTO doc_project (name, collection, created_at) VALUES (?, ?, ?)",
                 (name, collection, time.time()))
    project = get_project(conn, name)
    assert project is not None
    return project


def all_projects(conn: sqlite3.Connection) -> list[ProjectRow]:
    return [ProjectRow(*row) for row in conn.execute("SELECT id, name, collection FROM doc_project ORDER BY name")]


def project_summaries(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT p.name, p.collection, p.created_at, p.last_ingest_at,"
        " (SELECT count(*) FROM doc_source s WHERE s.project_id = p.id),"
        " (SELECT coalesce(sum(s.chunks), 0) FROM doc_source s WHERE s.project_id = p.id),"
        " (SELECT coalesce(sum(s.bytes), 0) FROM doc_source s WHERE s.project_id = p.id)"
        " FROM doc_project p ORDER BY p.name").fetchall()
    return [{"name": name, "collection": collection, "created_at": created, "last_ingest_at": last,
             "sources": sources, "chunks": chunks, "bytes": size}
            for name, collection, created, last, sources, chunks, size in rows]


def delete_project(conn: sqlite3.Connection, name: str) -> int:
    """Delete the project with its sources, chunks and keyword entries; returns the chunks removed."""
    project = get_project(conn, name)
    if project is None:
        return 0
    chunks = conn.execute("SELECT count(*) FROM doc_chunk WHERE project_id = ?", (project.id,)).fetchone()[0]
    conn.execute("DELETE FROM doc_chunk WHERE project_id = ?", (project.id,))
    conn.execute("DELETE FROM doc_project WHERE id = ?", (project.id,))
    conn.execute("DELETE FROM doc_job WHERE project = ? AND state IN ('done', 'failed', 'cancelled')", (name,))
    return chunks


def chunk_count(conn: sqlite3.Connection, project_id: int) -> int:
    return conn.execute("SELECT count(*) FROM doc_chunk WHERE project_id = ?", (project_id,)).fetchone()[0]


def touch_project(conn: sqlite3.Connection, project_id: int) -> None:
    conn.execute("UPDATE doc_project SET last_ingest_at = ? WHERE id = ?", (time.time(), project_id))


# -- sources --------------------------------------------------------------------------------------------------


def source_hashes(conn: sqlite3.Connection, project_id: int, model_id: str) -> dict[str, str]:
    """Content hash per source; a source holding vectors of another model reports no hash (re-embed it)."""
    return dict(conn.execute(
        "SELECT s.source, s.content_hash FROM doc_source s WHERE s.project_id = ? AND NOT EXISTS"
        " (SELECT 1 FROM doc_chunk c WHERE c.source_id = s.id AND c.model_id != ?)", (project_id, model_id)))


def sources_under(conn: sqlite3.Connection, project_id: int, directory: str) -> list[str]:
    prefix = directory.rstrip("/") + "/"
    return [row[0] for row in conn.execute(
        "SELECT source FROM doc_source WHERE project_id = ? AND substr(source, 1, ?) = ?",
        (project_id, len(prefix), prefix))]


def list_sources(conn: sqlite3.Connection, project_id: int, prefix: str = "", limit: int = 10_000,
                 offset: int = 0) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT source, file_type, bytes, chunks, ingested_at, content_hash, note FROM doc_source"
        " WHERE project_id = ? AND substr(source, 1, ?) = ? ORDER BY source LIMIT ? OFFSET ?",
        (project_id, len(prefix), prefix, limit, offset)).fetchall()
    return [{"source": source, "file_type": file_type, "bytes": size, "chunks": chunks, "ingested_at": at,
             "complete": bool(digest), "note": note}
            for source, file_type, size, chunks, at, digest, note in rows]


def delete_sources(conn: sqlite3.Connection, project_id: int, sources: Iterable[str]) -> list[int]:
    """Delete sources with their chunks; returns the chunk ids removed (for the vector index)."""
    removed: list[int] = []
    for source in sources:
        row = conn.execute("SELECT id FROM doc_source WHERE project_id = ? AND source = ?",
                           (project_id, source)).fetchone()
        if row is None:
            continue
        removed.extend(r[0] for r in conn.execute("SELECT id FROM doc_chunk WHERE source_id = ?", (row[0],)))
        conn.execute("DELETE FROM doc_chunk WHERE source_id = ?", (row[0],))
        conn.execute("DELETE FROM doc_source WHERE id = ?", (row[0],))
    return removed


def begin_source(conn: sqlite3.Connection, project_id: int, source: str, file_type: str, size: int,
                 mtime: float | None, note: str) -> tuple[int, list[int]]:
    """Start (re)writing a source: its row exists with an empty hash and no chunks. Returns the source id
    and the chunk ids that were removed (to delete from the vector index)."""
    row = conn.execute("SELECT id FROM doc_source WHERE project_id = ? AND source = ?",
                       (project_id, source)).fetchone()
    removed: list[int] = []
    if row is not None:
        source_id = row[0]
        removed = [r[0] for r in conn.execute("SELECT id FROM doc_chunk WHERE source_id = ?", (source_id,))]
        conn.execute("DELETE FROM doc_chunk WHERE source_id = ?", (source_id,))
        conn.execute("UPDATE doc_source SET content_hash = '', file_type = ?, bytes = ?, mtime = ?, ingested_at = ?,"
                     " chunks = 0, note = ? WHERE id = ?", (file_type, size, mtime, time.time(), note, source_id))
    else:
        source_id = conn.execute(
            "INSERT INTO doc_source (project_id, source, file_type, content_hash, bytes, mtime, ingested_at, note)"
            " VALUES (?, ?, ?, '', ?, ?, ?, ?)", (project_id, source, file_type, size, mtime, time.time(), note)
        ).lastrowid
    return source_id, removed


def insert_chunks(conn: sqlite3.Connection, project_id: int, source_id: int, model_id: str,
                  chunks: Sequence[ChunkRow]) -> list[int]:
    ids = []
    context = short_path(conn.execute("SELECT source FROM doc_source WHERE id = ?", (source_id,)).fetchone()[0])
    for chunk in chunks:
        ids.append(conn.execute(
            "INSERT INTO doc_chunk (source_id, project_id, ordinal, chunk_hash, text, heading, line_start, line_end,"
            " tokens, model_id, idents, context) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (source_id, project_id, chunk.ordinal, chunk.chunk_hash, chunk.text, chunk.heading, chunk.line_start,
             chunk.line_end, chunk.tokens, model_id, idents(chunk.text), context)).lastrowid)
    conn.executemany("INSERT INTO doc_vector (chunk_id, vector) VALUES (?, ?)",
                     [(chunk_id, vector_blob(chunk.vector)) for chunk_id, chunk in zip(ids, chunks)])
    return ids


def finish_source(conn: sqlite3.Connection, source_id: int, content_hash: str, chunks: int) -> None:
    conn.execute("UPDATE doc_source SET content_hash = ?, chunks = ? WHERE id = ?", (content_hash, chunks, source_id))


def vectors_by_hash(conn: sqlite3.Connection, project_id: int, model_id: str,
                    hashes: Sequence[str]) -> dict[str, np.ndarray]:
    """Stored vectors for chunk hashes already embedded in this project (with this model)."""
    found: dict[str, np.ndarray] = {}
    for start in range(0, len(hashes), 500):
        part = list(hashes[start:start + 500])
        marks = ",".join("?" * len(part))
        for digest, blob in conn.execute(
                f"SELECT c.chunk_hash, v.vector FROM doc_chunk c JOIN doc_vector v ON v.chunk_id = c.id"
                f" WHERE c.project_id = ? AND c.model_id = ? AND c.chunk_hash IN ({marks})", (project_id, model_id, *part)):
            found.setdefault(digest, blob_vector(blob))
    return found


def iter_vectors(conn: sqlite3.Connection, project_id: int, after_id: int, limit: int,
                 model_id: str | None = None) -> list[tuple[int, bytes]]:
    if model_id is None:
        return conn.execute("SELECT c.id, v.vector FROM doc_chunk c JOIN doc_vector v ON v.chunk_id = c.id"
                            " WHERE c.project_id = ? AND c.id > ? ORDER BY c.id LIMIT ?",
                            (project_id, after_id, limit)).fetchall()
    return conn.execute("SELECT c.id, v.vector FROM doc_chunk c JOIN doc_vector v ON v.chunk_id = c.id"
                        " WHERE c.project_id = ? AND c.id > ? AND c.model_id = ? ORDER BY c.id LIMIT ?",
                        (project_id, after_id, model_id, limit)).fetchall()


# -- jobs -----------------------------------------------------------------------------------------------------


def create_job(conn: sqlite3.Connection, project: str, request: dict[str, Any]) -> int:
    return conn.execute("INSERT INTO doc_job (project, state, request, created_at) VALUES (?, 'queued', ?, ?)",
                        (project, json.dumps(request), time.time())).lastrowid


def unfinished_jobs(conn: sqlite3.Connection) -> list[tuple[int, str, dict[str, Any]]]:
    return [(job_id, project, json.loads(request)) for job_id, project, request in conn.execute(
        "SELECT id, project, request FROM doc_job WHERE state IN ('queued', 'running') ORDER BY id")]


def update_job(conn: sqlite3.Connection, job_id: int, **fields: Any) -> None:
    if not fields:
        return
    if "summary" in fields and not isinstance(fields["summary"], str):
        fields["summary"] = json.dumps(fields["summary"])
    assignments = ", ".join(f"{key} = ?" for key in fields)
    conn.execute(f"UPDATE doc_job SET {assignments} WHERE id = ?", (*fields.values(), job_id))


def job_rows(conn: sqlite3.Connection, job_id: int | None, limit: int = 20) -> list[dict[str, Any]]:
    columns = ("id", "project", "state", "created_at", "started_at", "finished_at", "attempts", "files_total",
               "files_done", "chunks_total", "chunks_done", "summary", "error")
    select = f"SELECT {', '.join(columns)} FROM doc_job"
    rows = (conn.execute(select + " WHERE id = ?", (job_id,)) if job_id is not None
            else conn.execute(select + " ORDER BY id DESC LIMIT ?", (limit,))).fetchall()
    result = []
    for row in rows:
        item = dict(zip(columns, row))
        item["summary"] = json.loads(item["summary"] or "{}")
        result.append(item)
    return result
