"""Re-ingested sources must not grow the vector index for ever: Chroma's HNSW only marks a deleted chunk, so once
a project's deletions outnumber its live chunks its collection is rebuilt from SQLite (real index worker, fake
embedder). Searches find every live chunk afterwards, and the index holds exactly SQLite's chunks."""

from __future__ import annotations

import asyncio

import pytest

from pirag.client.protocol.documents import DocumentIn, IngestArgs, SearchArgs
from pirag.daemon.store import vectors as vectors_module

from .helpers import Stack, make_config

NOTES = 6


def notes(version: int) -> list[DocumentIn]:
    """The same six sources, new contents each version: every re-ingest deletes and adds their chunks."""
    return [DocumentIn(source=f"notes/n{i}.md", text="\n\n".join(
        f"Note {i} version {version} paragraph {p}: valve {i * 100 + p} of zone {version}." for p in range(6)))
            for i in range(NOTES)]


def test_a_collection_with_more_deleted_than_live_chunks_is_compacted(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(vectors_module, "COMPACT_MIN_DELETED", 40)

    async def scenario() -> None:
        config = make_config(tmp_path / "state", ingest={"chunk_tokens": 16})
        async with Stack(config) as s:
            first = await s.call("ingest", IngestArgs(project="garden", documents=notes(0)))
            live = first.chunks_total
            assert live >= NOTES
            collection = s.documents.projects["garden"].collection
            version = 0
            while s.vectors.compactions == 0 and version < 40:
                version += 1
                result = await s.call("ingest", IngestArgs(project="garden", documents=notes(version)))
                assert result.sources_updated == NOTES
                await asyncio.sleep(0)   # the compaction task takes the project's lock after the ingest
            for _ in range(500):
                if s.vectors.compactions and not s.documents._compacting:
                    break
                await asyncio.sleep(0.02)
            assert s.vectors.compactions >= 1, "deletions outnumbered live chunks and nothing compacted"
            assert s.vectors.deleted.get(collection, 0) < max(40, live)
            assert await s.vectors.count(collection) == await s.documents._expected(s.documents.projects["garden"])
            for i in range(NOTES):   # every live note is found by its own words, through the vector side
                found = await s.call("search", SearchArgs(query=f"Note {i} version {version} paragraph 0",
                                                          projects=["garden"], k=3, mode="vector",
                                                          use_cache=False))
                assert any(hit.source == f"notes/n{i}.md" for hit in found.hits), (i, found.hits)

    asyncio.run(scenario())


@pytest.mark.parametrize("deleted, live, due", [(39, 0, False), (40, 41, False), (40, 40, True), (500, 10, True)])
def test_compaction_is_due_past_the_minimum_and_the_live_count(deleted, live, due, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(vectors_module, "COMPACT_MIN_DELETED", 40)
    index = vectors_module.VectorIndex(make_config(tmp_path / "state"))
    index.deleted["c"] = deleted
    assert index.compaction_due("c", live) is due
