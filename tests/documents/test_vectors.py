"""The vector index: names, upsert/query/delete/count, drop leaves no directory, health rebuilds."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import numpy as np
import pytest

from pirag.daemon.store.vectors import VectorIndex, collection_name

from .helpers import make_config

NAME_RULE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]$")


@pytest.mark.parametrize("project", ["a", "My Notes", "ü", "..", "x" * 300, "a/b c", "-_-", "192.168.1.1", "A"])
def test_collection_names_are_valid(project):
    name = collection_name(project, "docs")
    assert NAME_RULE.match(name), name
    assert ".." not in name


def test_collection_names_do_not_collide():
    names = {collection_name(p, k) for p in ("notes", "Notes", "notes ", "notes!", "NOTES") for k in ("docs", "facts")}
    assert len(names) == 10


def _vectors(n: int, dims: int = 16, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, dims)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_upsert_query_delete_drop(tmp_path):
    async def scenario():
        index = VectorIndex(make_config(tmp_path))
        await index.start()
        try:
            name = collection_name("p", "docs")
            vectors = _vectors(50)
            ids = [f"c{i}" for i in range(50)]
            await index.upsert(name, ids, vectors)
            await index.upsert(name, ids[:5], vectors[:5])  # upsert, not add: no duplicates
            assert await index.count(name) == 50
            hits = await index.query(name, vectors[7], 3)
            assert hits[0][0] == "c7" and hits[0][1] < 1e-4
            await index.delete(name, ["c7"])
            assert (await index.query(name, vectors[7], 1))[0][0] != "c7"
            assert await index.count(name) == 49
            assert await index.query(collection_name("other", "docs"), vectors[0], 3) == []
            # enough vectors for Chroma to write an HNSW segment directory
            await index.upsert(name, [f"d{i}" for i in range(1500)], _vectors(1500, seed=1))
            dirs = [p for p in (tmp_path / "chroma").iterdir() if p.is_dir()]
            assert dirs
            await index.drop(name)
            assert await index.count(name) == 0
            assert [p for p in (tmp_path / "chroma").iterdir() if p.is_dir()] == []
            await index.drop(name)  # dropping twice is fine
        finally:
            await index.close()

    asyncio.run(scenario())


def test_ensure_rebuilds_a_disagreeing_collection(tmp_path):
    async def scenario():
        index = VectorIndex(make_config(tmp_path))
        await index.start()
        try:
            name = collection_name("p", "docs")
            vectors = _vectors(20)
            ids = [f"c{i}" for i in range(20)]

            async def load():
                for start in range(0, 20, 7):
                    yield ids[start:start + 7], vectors[start:start + 7], None

            await index.upsert(name, ids[:3], vectors[:3])
            assert await index.ensure(name, 20, load) == "rebuilt"
            assert await index.count(name) == 20
            assert await index.ensure(name, 20, load) == "ok"
        finally:
            await index.close()

    asyncio.run(scenario())


def test_unopenable_directory_is_set_aside(tmp_path):
    chroma = tmp_path / "chroma"
    chroma.mkdir()
    (chroma / "chroma.sqlite3").write_bytes(b"this is not a database" * 100)

    async def scenario():
        index = VectorIndex(make_config(tmp_path))
        await index.start()
        try:
            assert await index.count(collection_name("p", "docs")) == 0
        finally:
            await index.close()

    asyncio.run(scenario())
    assert list(tmp_path.glob("chroma.broken-*"))


def _open_descriptors_under(path, pid: int) -> int:
    """Descriptors of process ``pid`` (the index's worker, which holds every Chroma file) under ``path``."""
    import os

    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        count += str(path) in target
    return count


def _segment_dirs(state: Path) -> list[Path]:
    return [entry for entry in state.rglob("*") if entry.is_dir() and len(entry.name) == 36]


@pytest.mark.parametrize("overlap", [True, False], ids=["overlap", "stop-first"])
def test_dropping_collections_releases_their_files(tmp_path, overlap):
    """Chroma's embedded frontend keeps a dropped collection's HNSW files (and memory) open
    (chroma-core/chroma#3296); the index replaces its worker process after a drop, so that project churn and
    compactions leak neither descriptors nor memory, and the other collections stay intact. Either way of
    replacing it: the successor started first (the default), or the old worker stopped first (a tight
    ``MemoryMax``: never two workers at once)."""

    async def main() -> None:
        index = VectorIndex(make_config(tmp_path, store={"vectors_recycle_overlap": overlap}))
        await index.start()
        try:
            await index.upsert("keeper-docs", ["k"], _vectors(1))
            await index.query("keeper-docs", _vectors(1)[0], 1)
            pid = index.worker_pid
            baseline = _open_descriptors_under(tmp_path, pid)
            segments = len(_segment_dirs(tmp_path))
            assert baseline > 0  # the worker, not this process, has the index open
            for round_ in range(6):
                name = f"churn{round_}-docs"
                await index.upsert(name, [str(i) for i in range(300)], _vectors(300, seed=round_))
                assert len(await index.query(name, _vectors(1)[0], 3)) == 3
                await index.drop(name)
            assert index.worker_pid != pid
            assert _open_descriptors_under(tmp_path, index.worker_pid) <= baseline
            assert await index.count("keeper-docs") == 1  # the other collection is intact after the recycles
            assert await index.query("keeper-docs", _vectors(1)[0], 1)
            stats = index.stats()
            assert stats["worker"]["recycles"] == 6
            assert stats["worker"]["recycle_overlap"] is overlap
            assert stats["worker"]["restarts"] == 0       # planned replacements, not recoveries
            assert len(_segment_dirs(tmp_path)) <= segments   # the dropped collections' directories went
        finally:
            await index.close()

    asyncio.run(main())
