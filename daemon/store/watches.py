"""The rows of watched folders: the watches themselves and the changes seen but not yet synced.

Registered as migration area ``"watch"``; version N is ``WATCH_MIGRATIONS[N - 1]``, append only.

- ``watch``: one row per (project, directory). ``path`` is absolute, as the user named it (the sources it
  produces are named under it, like ``ingest``'s). Kept until ``watch_remove`` (or the project's drop).
- ``watch_pending``: paths inotify reported changed that no sync has committed yet. Written as they arrive and
  deleted only after the sync that took them committed, so a crash or a restart loses none of them (the
  start-up scan finds what changed while the daemon was down; these rows also cover changes a scan cannot see,
  such as a rewrite that kept a file's size and time). ``seq`` tells a path seen again during a sync (it stays
  pending) from the one the sync took.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass

WATCH_MIGRATIONS: list[str] = [
    """
    CREATE TABLE watch (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        project       TEXT NOT NULL,
        path          TEXT NOT NULL,
        created_at    REAL NOT NULL,
        last_sync_at  REAL,
        UNIQUE (project, path)
    );
    CREATE TABLE watch_pending (
        watch_id  INTEGER NOT NULL REFERENCES watch (id) ON DELETE CASCADE,
        path      TEXT NOT NULL,
        seen_at   REAL NOT NULL,
        seq       INTEGER NOT NULL,
        PRIMARY KEY (watch_id, path)
    ) WITHOUT ROWID;
    """,
]


@dataclass
class WatchRow:
    id: int
    project: str
    path: str
    created_at: float
    last_sync_at: float | None


def all_watches(conn: sqlite3.Connection) -> list[WatchRow]:
    return [WatchRow(*row) for row in conn.execute(
        "SELECT id, project, path, created_at, last_sync_at FROM watch ORDER BY id")]


def add_watches(conn: sqlite3.Connection, project: str, paths: Iterable[str]) -> list[WatchRow]:
    """Insert the watches that do not exist yet; returns the new rows (all in the caller's one transaction)."""
    added = []
    now = time.time()
    for path in paths:
        cursor = conn.execute("INSERT OR IGNORE INTO watch (project, path, created_at) VALUES (?, ?, ?)",
                              (project, path, now))
        if cursor.rowcount:
            added.append(WatchRow(cursor.lastrowid, project, path, now, None))
    return added


def delete_watches(conn: sqlite3.Connection, ids: Iterable[int]) -> int:
    return sum(conn.execute("DELETE FROM watch WHERE id = ?", (watch_id,)).rowcount for watch_id in ids)


def pending(conn: sqlite3.Connection, watch_id: int) -> list[tuple[str, float, int]]:
    return conn.execute("SELECT path, seen_at, seq FROM watch_pending WHERE watch_id = ?", (watch_id,)).fetchall()


def add_pending(conn: sqlite3.Connection, watch_id: int, changes: Iterable[tuple[str, float, int]]) -> None:
    """Record changed paths; a path already pending keeps its first ``seen_at`` (the lag counts from it)."""
    conn.executemany(
        "INSERT INTO watch_pending (watch_id, path, seen_at, seq) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (watch_id, path) DO UPDATE SET seq = excluded.seq",
        [(watch_id, path, seen_at, seq) for path, seen_at, seq in changes])


def finish_sync(conn: sqlite3.Connection, watch_id: int, taken: Iterable[tuple[str, int]], at: float) -> None:
    """After a sync committed: drop the pending paths it took (unless seen again since) and stamp the watch."""
    conn.executemany("DELETE FROM watch_pending WHERE watch_id = ? AND path = ? AND seq = ?",
                     [(watch_id, path, seq) for path, seq in taken])
    conn.execute("UPDATE watch SET last_sync_at = ? WHERE id = ?", (at, watch_id))


def source_stats(conn: sqlite3.Connection, project: str, directory: str) -> dict[str, tuple[float | None, int, bool]]:
    """``source -> (mtime, bytes, complete)`` for the project's sources under ``directory`` (for the cheap
    rescan: a file whose size and time match a complete source is not read again)."""
    prefix = directory.rstrip("/") + "/"
    return {source: (mtime, size, bool(digest)) for source, mtime, size, digest in conn.execute(
        "SELECT s.source, s.mtime, s.bytes, s.content_hash FROM doc_source s JOIN doc_project p ON p.id = s.project_id"
        " WHERE p.name = ? AND substr(s.source, 1, ?) = ?", (project, len(prefix), prefix))}


def count_sources(conn: sqlite3.Connection, project: str, directory: str) -> int:
    prefix = directory.rstrip("/") + "/"
    return conn.execute(
        "SELECT count(*) FROM doc_source s JOIN doc_project p ON p.id = s.project_id"
        " WHERE p.name = ? AND substr(s.source, 1, ?) = ?", (project, len(prefix), prefix)).fetchone()[0]
