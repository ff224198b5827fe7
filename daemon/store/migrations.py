"""The numbered schema migrations of the memory area (facts and episodes), for ``Database.register_migrations``.

Version N is ``MEMORY_MIGRATIONS[N - 1]``; append only, never edit an applied one. Other areas keep their own
lists (documents registers ``"documents"``); ``schema_migrations(area, version)`` records what is applied.

Layout, and why:

- ``fact`` / ``episode`` rows carry a text id (``f_...``, ``e_...``: stable across export/import) and an
  integer ``seq`` (``AUTOINCREMENT``: never reused, so a forgotten fact's number can never come back) that
  the FTS5 tables use as their rowid.
- ``fact_fts`` / ``episode_fts`` are external-content FTS5 tables kept in step by triggers, so a row and its
  keyword entry are written (and deleted) in the same transaction.
- The embedding lives in the row (``model_id`` + float32 ``vector`` blob): SQLite is the truth and the
  Chroma index is rebuilt from it. Episodes are embedded after they are acknowledged (``vector`` NULL until
  then) so that logging never waits for the model.
- ``UNIQUE(project, norm_hash)`` makes the exact-duplicate check race-free on the single writer.
- ``fact_tag`` makes tag filters an index lookup; ``fact_history`` keeps superseded versions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .fts import add_idents_column


# The previous episode of the same session and project (the one a new episode follows), cut to 1000 characters:
# the keyword text of an episode carries it (``context``), because a reply rarely repeats the words of what it
# answers ("Yes, it was in Paris" after "Where did you go in May?"). Formatted with the SQL of the new row's values.
PREVIOUS_EPISODE = ("SELECT substr(p.content, 1, 1000) FROM episode p WHERE p.session = {session} AND p.project = "
                    "{project} AND (p.ts < {ts} OR (p.ts = {ts} AND p.seq < {seq})) ORDER BY p.ts DESC, p.seq DESC "
                    "LIMIT 1")


def _identifier_fts(conn: Any) -> None:
    """3: identifier-aware keyword search (``store/fts.py``): an ``idents`` column beside the text of facts and
    episodes, indexed by FTS5; episodes also get ``context`` (the previous episode of their session) indexed
    with half the weight of their own text. Both FTS tables are re-created and rebuilt from the rows."""
    add_idents_column(conn, table="fact", rowid="seq", text="content", fts="fact_fts", columns=("content", "tags"),
                      weights=(1.0, 0.5, 0.5), update_of=("content", "tags"))
    conn.execute("ALTER TABLE episode ADD COLUMN context TEXT NOT NULL DEFAULT ''")
    previous = PREVIOUS_EPISODE.format(session="episode.session", project="episode.project", ts="episode.ts",
                                       seq="episode.seq")
    conn.execute(f"UPDATE episode SET context = coalesce(({previous}), '')")
    add_idents_column(conn, table="episode", rowid="seq", text="content", fts="episode_fts",
                      columns=("content", "context"), weights=(1.0, 0.5, 0.5))


MEMORY_MIGRATIONS: list[str | Callable[[Any], None]] = [
    # 1: facts
    """
    CREATE TABLE fact (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        id          TEXT NOT NULL UNIQUE,
        project     TEXT NOT NULL DEFAULT '',
        content     TEXT NOT NULL,
        norm_hash   TEXT NOT NULL,
        tags        TEXT NOT NULL DEFAULT '[]',
        source      TEXT NOT NULL DEFAULT '',
        importance  REAL NOT NULL DEFAULT 0.5,
        metadata    TEXT NOT NULL DEFAULT '{}',
        created_at  REAL NOT NULL,
        updated_at  REAL NOT NULL,
        version     INTEGER NOT NULL DEFAULT 1,
        model_id    TEXT,
        vector      BLOB,
        UNIQUE (project, norm_hash)
    );
    CREATE INDEX fact_project_created ON fact (project, created_at, seq);
    CREATE INDEX fact_created ON fact (created_at, seq);

    CREATE TABLE fact_tag (
        tag       TEXT NOT NULL,
        fact_seq  INTEGER NOT NULL REFERENCES fact (seq) ON DELETE CASCADE,
        PRIMARY KEY (tag, fact_seq)
    ) WITHOUT ROWID;
    CREATE INDEX fact_tag_by_fact ON fact_tag (fact_seq);

    CREATE TABLE fact_history (
        fact_seq    INTEGER NOT NULL REFERENCES fact (seq) ON DELETE CASCADE,
        version     INTEGER NOT NULL,
        content     TEXT NOT NULL,
        tags        TEXT NOT NULL,
        source      TEXT NOT NULL,
        importance  REAL NOT NULL,
        valid_from  REAL NOT NULL,
        valid_to    REAL NOT NULL,
        reason      TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (fact_seq, version)
    ) WITHOUT ROWID;

    CREATE VIRTUAL TABLE fact_fts USING fts5 (
        content, tags, content='fact', content_rowid='seq', tokenize='unicode61 remove_diacritics 2'
    );
    CREATE TRIGGER fact_fts_insert AFTER INSERT ON fact BEGIN
        INSERT INTO fact_fts (rowid, content, tags) VALUES (new.seq, new.content, new.tags);
    END;
    CREATE TRIGGER fact_fts_delete AFTER DELETE ON fact BEGIN
        INSERT INTO fact_fts (fact_fts, rowid, content, tags) VALUES ('delete', old.seq, old.content, old.tags);
    END;
    CREATE TRIGGER fact_fts_update AFTER UPDATE OF content, tags ON fact BEGIN
        INSERT INTO fact_fts (fact_fts, rowid, content, tags) VALUES ('delete', old.seq, old.content, old.tags);
        INSERT INTO fact_fts (rowid, content, tags) VALUES (new.seq, new.content, new.tags);
    END;
    """,
    # 2: episodes
    """
    CREATE TABLE episode (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        id          TEXT NOT NULL UNIQUE,
        session     TEXT NOT NULL,
        project     TEXT NOT NULL DEFAULT '',
        kind        TEXT NOT NULL,
        role        TEXT NOT NULL DEFAULT '',
        content     TEXT NOT NULL,
        ts          REAL NOT NULL,
        metadata    TEXT NOT NULL DEFAULT '{}',
        created_at  REAL NOT NULL,
        model_id    TEXT,
        vector      BLOB
    );
    CREATE INDEX episode_ts ON episode (ts, seq);
    CREATE INDEX episode_project_ts ON episode (project, ts, seq);
    CREATE INDEX episode_session_ts ON episode (session, ts, seq);
    CREATE INDEX episode_unembedded ON episode (seq) WHERE vector IS NULL;

    CREATE VIRTUAL TABLE episode_fts USING fts5 (
        content, content='episode', content_rowid='seq', tokenize='unicode61 remove_diacritics 2'
    );
    CREATE TRIGGER episode_fts_insert AFTER INSERT ON episode BEGIN
        INSERT INTO episode_fts (rowid, content) VALUES (new.seq, new.content);
    END;
    CREATE TRIGGER episode_fts_delete AFTER DELETE ON episode BEGIN
        INSERT INTO episode_fts (episode_fts, rowid, content) VALUES ('delete', old.seq, old.content);
    END;
    """,
    _identifier_fts,
]
