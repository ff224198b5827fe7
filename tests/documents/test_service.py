"""The documents component in process (real SQLite and Chroma, fake embedder): incremental ingestion,
drop leaves nothing, cache staleness, confinement, isolation, filters, sent documents."""

from __future__ import annotations

import asyncio
import os
import sqlite3

import pytest

from pirag.client.errors import Forbidden, InvalidArgument, NotFound
from pirag.client.protocol.documents import (
    DocumentIn, DropProjectArgs, DropSourceArgs, IngestArgs, IngestStatusArgs, ListProjectsArgs, ListSourcesArgs,
    ReindexArgs, SearchArgs,
)

from .helpers import Stack, make_config


def write_tree(root, count=12):
    (root / "docs").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (root / "docs" / f"note{i}.md").write_text(
            f"# Note {i}\n\nThis note talks about topic{i} and the shared subject of gardening.\n\n"
            f"## Details\n\nTomatoes need sun; note {i} says water them at dawn.\n")
    (root / "code.py").write_text("def sprinkler(zone):\n    return zone * 2\n\n\nclass Valve:\n    pass\n")


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def dirs(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_tree(data)
    return tmp_path, data


def stack(tmp_path, data, **extra):
    return Stack(make_config(tmp_path / "state", ingest={"allowed_roots": [str(data)]}, **extra))


def test_incremental_reingest_embeds_only_the_changed_file(dirs):
    tmp_path, data = dirs

    async def scenario():
        async with stack(tmp_path, data) as s:
            first = await s.call("ingest", IngestArgs(project="garden", paths=[str(data)], wait=True))
            assert first.state == "done" and first.sources_added == 13 and first.job_id is not None
            embedded_first = len(s.embed.texts)
            assert embedded_first == first.chunks_embedded > 0
            again = await s.call("ingest", IngestArgs(project="garden", paths=[str(data)], wait=True))
            assert again.sources_unchanged == 13 and len(s.embed.texts) == embedded_first
            # change one section of one file: only its changed chunk is embedded
            path = data / "docs" / "note3.md"
            path.write_text(path.read_text().replace("water them at dawn", "water them at dusk, never noon"))
            s.embed.texts.clear()
            changed = await s.call("ingest", IngestArgs(project="garden", paths=[str(data)], wait=True))
            assert changed.sources_updated == 1 and changed.sources_unchanged == 12
            assert len(s.embed.texts) == 1 and "dusk" in s.embed.texts[0]
            assert changed.chunks_reused >= 0
            # a vanished file is removed on directory re-ingest
            os.remove(data / "docs" / "note5.md")
            pruned = await s.call("ingest", IngestArgs(project="garden", paths=[str(data)], wait=True))
            assert pruned.sources_removed == 1
            sources = (await s.call("list_sources", ListSourcesArgs(project="garden"))).sources
            assert len(sources) == 12 and not any(src.source.endswith("note5.md") for src in sources)
            hits = (await s.call("search", SearchArgs(query="note 5 topic5", k=20))).hits
            assert not any(hit.source.endswith("note5.md") for hit in hits)
            total = sum(src.chunks for src in sources)
            assert await s.vectors.count(s.documents.projects["garden"].collection) == total

    run(scenario())


def test_drop_project_leaves_nothing(dirs):
    tmp_path, data = dirs

    async def scenario():
        async with stack(tmp_path, data) as s:
            await s.call("ingest", IngestArgs(project="gone soon", paths=[str(data)], wait=True))
            await s.call("ingest", IngestArgs(project="kept", documents=[DocumentIn(source="k.md", text="# K\n\nkeep me")]))
            collection = s.documents.projects["gone soon"].collection
            # enough vectors for Chroma to persist an HNSW directory for the project
            import numpy as np
            await s.vectors.upsert(collection, [f"x{i}" for i in range(1200)],
                                   np.eye(1200, 384, dtype=np.float32))
            await s.vectors.delete(collection, [f"x{i}" for i in range(1200)])
            await s.call("search", SearchArgs(query="gardening", projects=["gone soon"]))
            assert len(s.documents.cache) == 1
            chroma_dirs_before = {p.name for p in (tmp_path / "state" / "chroma").iterdir() if p.is_dir()}
            dropped = await s.call("drop_project", DropProjectArgs(project="gone soon"))
            assert dropped.dropped and dropped.chunks > 0
            assert len(s.documents.cache) == 0
            assert collection not in await s.vectors.list_collections()
            chroma_dirs_after = {p.name for p in (tmp_path / "state" / "chroma").iterdir() if p.is_dir()}
            assert len(chroma_dirs_after) < len(chroma_dirs_before)
            names = [p.name for p in (await s.call("list_projects", ListProjectsArgs())).projects]
            assert names == ["kept"]
            with pytest.raises(NotFound):
                await s.call("search", SearchArgs(query="gardening", projects=["gone soon"]))
            assert (await s.call("drop_project", DropProjectArgs(project="gone soon"))).dropped is False
        conn = sqlite3.connect(tmp_path / "state" / "pirag.sqlite3")
        try:
            assert conn.execute("SELECT count(*) FROM doc_project WHERE name = 'gone soon'").fetchone()[0] == 0
            assert conn.execute("SELECT count(*) FROM doc_source").fetchone()[0] == 1
            assert conn.execute("SELECT count(*) FROM doc_chunk").fetchone()[0] == 1
            assert conn.execute("SELECT count(*) FROM doc_chunk_fts WHERE doc_chunk_fts MATCH 'gardening'"
                                ).fetchone()[0] == 0
            assert conn.execute("SELECT count(*) FROM doc_job WHERE project = 'gone soon'").fetchone()[0] == 0
        finally:
            conn.close()
        # the remaining Chroma directories all belong to live segments
        conn = sqlite3.connect(tmp_path / "state" / "chroma" / "chroma.sqlite3")
        live = {row[0] for row in conn.execute("SELECT id FROM segments")}
        conn.close()
        assert {p.name for p in (tmp_path / "state" / "chroma").iterdir() if p.is_dir()} <= live

    run(scenario())


def test_cache_is_never_stale(dirs):
    tmp_path, data = dirs

    async def scenario():
        async with stack(tmp_path, data) as s:
            add = lambda text: s.call("ingest", IngestArgs(project="p", documents=[DocumentIn(source="a.md", text=text)]))
            await add("# A\n\nthe quick brown fox")
            query = SearchArgs(query="  Quick   BROWN fox ", projects=["p"])
            first = await s.call("search", query)
            assert not first.cached and "quick brown fox" in first.hits[0].text
            second = await s.call("search", SearchArgs(query="quick brown fox", projects=["p"]))
            assert second.cached and second.hits[0].text == first.hits[0].text
            await add("# A\n\nthe slow purple fox")
            third = await s.call("search", query)
            assert not third.cached and "purple" in third.hits[0].text
            await s.call("drop_source", DropSourceArgs(project="p", sources=["a.md"]))
            assert (await s.call("search", query)).hits == []
            stats = s.documents.stats()["query_cache"]
            assert stats["hits"] == 1 and stats["misses"] >= 3

    run(scenario())


def test_confinement_and_errors(dirs, tmp_path):
    _, data = dirs
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    os.symlink(outside / "secret.txt", data / "sneaky.txt")

    async def scenario():
        async with stack(tmp_path, data) as s:
            with pytest.raises(Forbidden):
                await s.call("ingest", IngestArgs(project="p", paths=[str(outside)]))
            with pytest.raises(Forbidden):
                await s.call("ingest", IngestArgs(project="p", paths=[str(data / "sneaky.txt")]))
            with pytest.raises(NotFound):
                await s.call("ingest", IngestArgs(project="p", paths=[str(data / "missing")]))
            with pytest.raises(InvalidArgument):
                await s.call("ingest", IngestArgs(project="p"))
            result = await s.call("ingest", IngestArgs(project="p", paths=[str(data)], wait=True))
            assert any("outside the allowed roots" in item.reason for item in result.skipped)
            hits = (await s.call("search", SearchArgs(query="secret", k=50))).hits
            assert not any("secret" == hit.text for hit in hits)
        async with Stack(make_config(tmp_path / "state2")) as s:   # no allowed roots: nothing is read
            with pytest.raises(Forbidden):
                await s.call("ingest", IngestArgs(project="p", paths=[str(data)]))

    run(scenario())


def test_projects_never_leak_and_filters(dirs):
    tmp_path, data = dirs

    async def scenario():
        async with stack(tmp_path, data) as s:
            await s.call("ingest", IngestArgs(project="a", documents=[
                DocumentIn(source="/x/alpha.md", text="# Alpha\n\nzebra stripes are black and white"),
                DocumentIn(source="/x/code.py", text="def zebra():\n    return 'stripes'\n")]))
            await s.call("ingest", IngestArgs(project="b", documents=[
                DocumentIn(source="/y/beta.md", text="# Beta\n\nzebra herds cross the river")]))
            only_b = (await s.call("search", SearchArgs(query="zebra stripes", projects=["b"], k=10))).hits
            assert {hit.project for hit in only_b} == {"b"} and len(only_b) == 1
            both = (await s.call("search", SearchArgs(query="zebra", k=10))).hits
            assert {hit.project for hit in both} == {"a", "b"}
            md = (await s.call("search", SearchArgs(query="zebra", file_types=["md"], k=10))).hits
            assert {hit.source for hit in md} == {"/x/alpha.md", "/y/beta.md"}
            py = (await s.call("search", SearchArgs(query="zebra", path_glob="*.py", k=10))).hits
            assert [hit.source for hit in py] == ["/x/code.py"]
            hit = py[0]
            assert (hit.line_start, hit.line_end, hit.heading) == (1, 2, "def zebra")
            assert hit.vector_rank == 1 and hit.keyword_rank == 1
            future = (await s.call("search", SearchArgs(query="zebra", ingested_after=4e9))).hits
            assert future == []
            budget = await s.call("search", SearchArgs(query="zebra", k=10, max_chars=40))
            assert sum(len(h.text) for h in budget.hits) <= 40 and budget.truncated

    run(scenario())


def test_index_rebuilt_from_sqlite_when_it_disagrees(dirs):
    tmp_path, data = dirs

    async def scenario():
        async with stack(tmp_path, data) as s:
            await s.call("ingest", IngestArgs(project="p", paths=[str(data)], wait=True))
            collection = s.documents.projects["p"].collection
            expected = await s.vectors.count(collection)
            await s.vectors.drop(collection)          # the index loses everything
            result = await s.call("reindex", ReindexArgs(project="p"))
            assert result.projects == {"p": expected}
            await s.vectors.delete(collection, ["1", "2"])
        async with stack(tmp_path, data) as s:      # at start: disagreement found and repaired
            for _ in range(100):
                if s.documents.health.get("p"):
                    break
                await asyncio.sleep(0.05)
            assert s.documents.health["p"] == "rebuilt"
            assert await s.vectors.count(s.documents.projects["p"].collection) == expected

    run(scenario())


def test_job_status_and_non_utf8(dirs):
    tmp_path, data = dirs
    (data / "latin.txt").write_bytes("caf\xe9 au lait, cr\xe8me br\xfbl\xe9e".encode("cp1252"))
    (data / "blob.txt").write_bytes(b"\x00\x01binary\x00" * 10)

    async def scenario():
        async with stack(tmp_path, data) as s:
            started = await s.call("ingest", IngestArgs(project="p", paths=[str(data)]))
            assert started.state == "queued" and started.job_id
            for _ in range(200):
                jobs = (await s.call("ingest_status", IngestStatusArgs(job_id=started.job_id))).jobs
                if jobs[0].state == "done":
                    break
                await asyncio.sleep(0.05)
            job = jobs[0]
            assert job.state == "done" and job.files_done == job.files_total == 15
            assert job.result is not None and any("NUL" in item.reason for item in job.result.skipped)
            hits = (await s.call("search", SearchArgs(query="crème brûlée", k=3))).hits
            assert hits[0].source.endswith("latin.txt")

    run(scenario())
