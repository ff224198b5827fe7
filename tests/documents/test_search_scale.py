"""Search at scale, in process: the v1 -> v2 schema upgrade (vectors move to ``doc_vector``), the bounded keyword
ranking (``keyword_expression``) and that common words still find chunks when the budget is exceeded."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import numpy as np

from pirag.client.protocol.documents import DocumentIn, DropProjectArgs, IngestArgs, SearchArgs
from pirag.daemon.services import search as search_module
from pirag.daemon.services.search import fts_terms, keyword_expression
from pirag.daemon.store.documents import DOCUMENT_MIGRATIONS, vector_blob
from pirag.daemon.store.sqlite_pool import DB_FILENAME, split_sql

from .helpers import Stack, make_config


def run(coro):
    return asyncio.run(coro)


def test_a_v1_database_upgrades_and_keeps_its_vectors(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    vector = np.linspace(-1, 1, 384, dtype=np.float32)
    vector /= np.linalg.norm(vector)
    conn = sqlite3.connect(state / DB_FILENAME, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE schema_migrations (area TEXT NOT NULL, version INTEGER NOT NULL, applied_at REAL NOT NULL,"
                 " PRIMARY KEY (area, version)) WITHOUT ROWID")
    for statement in split_sql(DOCUMENT_MIGRATIONS[0]):
        conn.execute(statement)
    conn.execute("INSERT INTO schema_migrations VALUES ('documents', 1, ?)", (time.time(),))
    conn.execute("INSERT INTO doc_project (id, name, collection, created_at) VALUES (1, 'old', 'docs-old-0123456789', 0)")
    conn.execute("INSERT INTO doc_source (id, project_id, source, file_type, content_hash, bytes, ingested_at, chunks)"
                 " VALUES (1, 1, 'notes.md', 'md', 'abc', 40, 0, 1)")
    conn.execute("INSERT INTO doc_chunk (id, source_id, project_id, ordinal, chunk_hash, text, heading, line_start,"
                 " line_end, tokens, model_id, vector) VALUES (7, 1, 1, 0, 'h', 'the heron fishes at dawn', 'Birds',"
                 " 1, 3, 6, 'fake-384', ?)", (vector_blob(vector),))
    conn.close()

    async def scenario():
        config = make_config(state)
        async with Stack(config) as s:
            rows = await s.db.read(lambda c: (
                c.execute("SELECT chunk_id, vector FROM doc_vector").fetchall(),
                [row[1] for row in c.execute("PRAGMA table_info(doc_chunk)")],
                c.execute("SELECT max(version) FROM schema_migrations WHERE area = 'documents'").fetchone()[0]))
            vectors, columns, version = rows
            assert version == len(DOCUMENT_MIGRATIONS) >= 2
            assert "vector" not in columns
            assert [(chunk_id, np.frombuffer(blob, "<f4").tolist()) for chunk_id, blob in vectors] == [(7, vector.tolist())]
            hits = (await s.call("search", SearchArgs(query="heron", projects=["old"]))).hits
            assert [(hit.chunk_id, hit.keyword_rank) for hit in hits] == [(7, 1)]
            # new chunks keep their vectors in doc_vector; dropping the project removes them (cascade)
            await s.call("ingest", IngestArgs(project="old", documents=[DocumentIn(source="b.md", text="# B\n\nnew text")]))
            assert await s.db.read(lambda c: c.execute("SELECT count(*) FROM doc_vector").fetchone()[0]) == 2
            await s.call("drop_project", DropProjectArgs(project="old"))
            assert await s.db.read(lambda c: c.execute("SELECT count(*) FROM doc_vector").fetchone()[0]) == 0

    run(scenario())


def test_keyword_expression_keeps_the_rarest_words_within_the_budget(monkeypatch):
    monkeypatch.setattr(search_module, "KEYWORD_BUDGET", 100)
    counts = {'"rare"': 5, '"mid"': 60, '"common"': 5000, '"often"': 4000, '"often" AND "common"': 30,
              '"none"': 0}

    def count(expression):
        return counts[expression]

    assert keyword_expression(["rare", "mid"], count) == ('"rare" OR "mid"', 65, False)
    # too many matches: the rare words, plus the chunks that hold every common word (they fit)
    assert keyword_expression(["common", "rare", "often", "mid"], count) == (
        '"rare" OR "mid" OR ("often" AND "common")', 95, False)
    # only common words and their conjunction does not fit: the newest chunks holding all of them
    counts['"often" AND "common"'] = 900
    assert keyword_expression(["common", "often", "none"], count) == ('"often" AND "common"', 900, True)
    assert keyword_expression(["common"], count) == ('"common"', 5000, True)
    assert fts_terms("How do I read THE file, the File?") == ["read", "file"]
    assert fts_terms("the of") == ["the", "of"]


def test_common_words_still_find_chunks_beyond_the_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(search_module, "KEYWORD_BUDGET", 4)

    async def scenario():
        async with Stack(make_config(tmp_path / "state")) as s:
            documents = [DocumentIn(source=f"n{i}.md", text=f"# Note {i}\n\ngardening notes, topic{i} and tomatoes")
                         for i in range(12)]
            await s.call("ingest", IngestArgs(project="p", documents=documents))
            await s.call("ingest", IngestArgs(project="q", documents=[
                DocumentIn(source="other.md", text="# Other\n\ngardening topic3 elsewhere")]))
            common = (await s.call("search", SearchArgs(query="gardening tomatoes", projects=["p"], k=3))).hits
            assert len(common) == 3 and all(hit.keyword_rank for hit in common)
            rare = (await s.call("search", SearchArgs(query="gardening tomatoes topic3", projects=["p"], k=3))).hits
            assert rare[0].source == "n3.md" and rare[0].keyword_rank == 1
            assert {hit.project for hit in rare} == {"p"}

    run(scenario())
