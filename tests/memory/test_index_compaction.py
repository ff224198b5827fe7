"""Forgotten facts must not stay in the vector index's memory for ever: once a project's deletions outnumber its
live facts (and pass the minimum), its collection is rebuilt from SQLite, and recall still finds what is left.
Plumbing: the numpy stand-in counts deletions as ``VectorIndex`` does (Chroma's own growth is measured by
``pirag-stress memory-leaks``; the documents side runs the real worker in tests/documents)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pirag.daemon.store import vectors as vectors_module

from .helpers import Stack, run


def test_forgetting_more_facts_than_are_left_compacts_the_collection(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(vectors_module, "COMPACT_MIN_DELETED", 20)

    async def main() -> None:
        async with Stack(tmp_path) as s:
            keep = [(await s.call("remember", content=f"keeper {i} waters bed {i} at dawn")).fact for i in range(5)]
            gone = [(await s.call("remember", content=f"temporary note {i} zebra {i * 7}")).fact for i in range(30)]
            await s.settle()
            collection = s.memory.fact_vectors.collection("")
            for fact in gone:                       # one forget at a time, as an agent does
                assert (await s.call("forget", ids=[fact.id])).forgotten == 1
            for _ in range(500):
                if s.vectors.compactions and not s.memory.fact_vectors._compacting:
                    break
                await asyncio.sleep(0.01)
            assert s.vectors.compactions == 1, "30 deletions for 5 live facts and no compaction"
            await s.settle()
            assert set(s.vectors.collections[collection]) == {fact.id for fact in keep}
            found = await s.call("recall", query="keeper 3 waters bed 3 at dawn", k=1)
            assert found.facts and found.facts[0].fact.id == keep[3].id

    run(main())
