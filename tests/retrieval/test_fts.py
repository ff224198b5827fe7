"""Identifier-aware keyword search (``store/fts.py``) on real SQLite FTS5 tables made by the real migrations."""

from __future__ import annotations

import sqlite3

import pytest

from pirag.daemon.store import facts as fact_rows
from pirag.daemon.store import fts
from pirag.daemon.store.facts import Filter
from pirag.daemon.store.migrations import MEMORY_MIGRATIONS
from pirag.daemon.store.sqlite_pool import split_sql


def migrate(conn: sqlite3.Connection, upto: int) -> None:
    for migration in MEMORY_MIGRATIONS[:upto]:
        if isinstance(migration, str):
            for statement in split_sql(migration):
                conn.execute(statement)
        else:
            migration(conn)


TEXTS = {
    "snake": "def zq12345_read_checksum(block): return crc(block)",
    "camel": "checksum = vorpalReadChecksum(frame)  # the frame's",
    "kebab": "see the zorbix-retry-budget page of the runbook",
    "dotted": "import plinth.codec.zephyrine_decode as decode",
    "pascal": "class XyloHTTPAdapter(BaseAdapter): pass",
    "plain": "we read the checksum of every block before writing it",
}


def facts_table(upto: int = len(MEMORY_MIGRATIONS)) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    migrate(conn, upto)
    return conn


def insert_old_style(conn: sqlite3.Connection) -> dict[str, str]:
    """Rows written the way migration 1's schema takes them (no idents column)."""
    ids = {}
    for name, text in TEXTS.items():
        fact_id = f"f_{name}"
        conn.execute("INSERT INTO fact (id, project, content, norm_hash, created_at, updated_at) VALUES (?, '', ?, ?, 0, 0)",
                     (fact_id, text, fact_rows.norm_hash(text)))
        ids[fact_id] = name
    return ids


def found(conn: sqlite3.Connection, query: str) -> list[str]:
    return [key for key, _ in fact_rows.keyword_search(conn, query, Filter("f").projects([""]), 10)]


@pytest.mark.parametrize(("query", "expected"), [
    ("zq12345_read_checksum", "snake"), ("zq12345", "snake"),
    ("vorpalReadChecksum", "camel"), ("vorpal read checksum", "camel"), ("vorpal", "camel"),
    ("zorbix-retry-budget", "kebab"), ("zorbix retry", "kebab"), ("zorbix_retry_budget", "kebab"),
    ("plinth.codec.zephyrine_decode", "dotted"), ("zephyrine_decode", "dotted"), ("zephyrineDecode", "dotted"),
    ("XyloHTTPAdapter", "pascal"), ("xylo http adapter", "pascal"), ("xylo", "pascal"),
])
def test_every_spelling_finds_every_spelling_in_part_and_whole(query: str, expected: str) -> None:
    conn = facts_table(upto=2)
    ids = insert_old_style(conn)
    migrate_from = MEMORY_MIGRATIONS[2]
    assert callable(migrate_from)
    migrate_from(conn)   # the migration rebuilds the FTS table of a database written before it
    hits = found(conn, query)
    assert hits and ids[hits[0]] == expected, (query, [ids[h] for h in hits])


def test_read_checksum_in_any_form_finds_both_the_snake_and_the_camel_text() -> None:
    conn = facts_table()
    for name, text in TEXTS.items():
        fact_rows.insert(conn, fact_id=f"f_{name}", project="", content=text, tags=[], source="", importance=0.5,
                         metadata={}, created_at=0, updated_at=0, version=1, model_id=None, vector=None)
    for query in ("readChecksum", "read_checksum", "read-checksum", "read.checksum"):
        names = {hit[2:] for hit in found(conn, query)}
        assert {"snake", "camel"} <= names, (query, names)   # the phrase "read checksum" in both spellings


def test_idents_and_query_words() -> None:
    assert fts.idents("x = vorpalReadChecksum(HTTPServerError, md5Hash) + vorpalReadChecksum") == \
        "vorpal read checksum ; http server error ; md5 hash"
    assert fts.idents("plain words, snake_case and UPPER_CASE only") == ""
    assert fts.query_words("where is plinth.codec.decode, read-checksum?") == \
        ["where", "is", "plinth.codec.decode", "read-checksum"]
    assert fts.match_word("readChecksum") == '("readChecksum" OR "read checksum")'
    assert fts.match_word('say"hi') == '"say""hi"'
    pattern = fts.phrase_pattern("zanzibar quokka, marmalade")
    assert pattern is not None and pattern.search("# Zanzibar quokka_marmalade protocol")
    assert pattern.search("zanzibarQuokkaMarmalade = 1")
    assert not pattern.search("zanzibar quokka marmalades") and not pattern.search("zanzibar marmalade quokka")
    assert fts.phrase_pattern("quokka") is None


def test_update_and_delete_keep_the_identifier_column_in_step() -> None:
    conn = facts_table()
    fact_rows.insert(conn, fact_id="f_1", project="", content="call fooBarBaz()", tags=[], source="",
                     importance=0.5, metadata={}, created_at=0, updated_at=0, version=1, model_id=None, vector=None)
    assert found(conn, "foo bar baz") == ["f_1"]
    fact_rows.update(conn, "f_1", now=1, reason="renamed", content="call quuxCorge()")
    assert found(conn, "foo bar baz") == []
    assert found(conn, "quux corge") == ["f_1"]
    fact_rows.delete(conn, ["f_1"])
    assert found(conn, "quux corge") == []
    assert conn.execute("SELECT count(*) FROM fact_fts WHERE fact_fts MATCH 'quux'").fetchone()[0] == 0
