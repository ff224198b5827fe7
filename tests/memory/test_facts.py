"""Facts in process (fake embedder, numpy stand-in for the Chroma index): duplicates, history, hybrid recall,
filters, isolation, deletion that really deletes, bad inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from pirag.client.errors import InvalidArgument, NotFound

from .helpers import Stack, run


def test_remember_exact_and_near_duplicates(tmp_path: Path) -> None:
    async def main() -> None:
        async with Stack(tmp_path) as s:
            first = await s.call("remember", content="The NAS is at 10.0.0.5", tags=["Infra", "nas"])
            assert first.created and first.fact.tags == ["infra", "nas"]
            again = await s.call("remember", content="  the nas IS at   10.0.0.5 ")
            assert not again.created and again.duplicate == "exact" and again.fact.id == first.fact.id
            # Same words in another order: the fake embedder gives the same vector (cosine 1.0).
            near = await s.call("remember", content="at 10.0.0.5 is the NAS")
            assert near.created and near.duplicate == "near"
            assert near.near_duplicates[0].fact.id == first.fact.id
            # Another project is another namespace.
            other = await s.call("remember", content="The NAS is at 10.0.0.5", project="home")
            assert other.created and other.fact.project == "home"

    run(main())


def test_merge_near_duplicates_keeps_history(tmp_path: Path) -> None:
    async def main() -> None:
        async with Stack(tmp_path, memory={"merge_near_duplicates": True}) as s:
            first = await s.call("remember", content="Ana prefers tabs", tags=["style"])
            merged = await s.call("remember", content="tabs Ana prefers", tags=["people"], importance=0.9)
            assert merged.merged and not merged.created and merged.fact.id == first.fact.id
            assert merged.fact.tags == ["style", "people"] and merged.fact.importance == 0.9
            got = await s.call("get_fact", id=first.fact.id, history=True)
            assert got.fact.version == 2 and got.history[0].content == "Ana prefers tabs"

    run(main())


def test_update_keeps_history_and_reindexes(tmp_path: Path) -> None:
    async def main() -> None:
        async with Stack(tmp_path) as s:
            fact = (await s.call("remember", content="The printer is on the second floor")).fact
            updated = await s.call("update_fact", id=fact.id, content="The printer moved to the basement",
                                   reason="moved")
            assert updated.previous_version == 1 and updated.fact.version == 2
            got = await s.call("get_fact", id=fact.id, history=True)
            assert [v.content for v in got.history] == ["The printer is on the second floor"]
            assert got.history[0].reason == "moved"
            hits = (await s.call("recall", query="basement printer", mode="keyword")).facts
            assert hits and hits[0].fact.id == fact.id
            assert not (await s.call("recall", query="second floor", mode="keyword")).facts
            with pytest.raises(NotFound):
                await s.call("update_fact", id="f_nope", content="x")

    run(main())


def test_hybrid_recall_with_filters(tmp_path: Path) -> None:
    clock = [1_700_000_000.0]
    async def main() -> None:
        async with Stack(tmp_path, clock=lambda: clock[0]) as s:
            await s.call("remember", content="The backup server is called zeus", tags=["infra"])
            clock[0] += 86400 * 10
            await s.call("remember", content="The staging server is called hera", tags=["infra", "staging"])
            await s.call("remember", content="Lunch is at noon on fridays", tags=["office"])
            hits = (await s.call("recall", query="which server", k=5)).facts
            assert {h.fact.content for h in hits[:2]} == {"The backup server is called zeus",
                                                          "The staging server is called hera"}
            assert hits[0].keyword_rank is not None and hits[0].vector_rank is not None
            both = (await s.call("recall", query="server", tags=["infra", "staging"], tag_mode="all")).facts
            assert [h.fact.content for h in both] == ["The staging server is called hera"]
            anyof = (await s.call("recall", query="server", tags=["staging", "office"], tag_mode="any")).facts
            assert "The backup server is called zeus" not in [h.fact.content for h in anyof]
            recent = (await s.call("recall", query="server", when="past 2 days")).facts
            assert [h.fact.content for h in recent][:1] == ["The staging server is called hera"]
            assert all("zeus" not in h.fact.content for h in recent)
            assert (await s.call("recall", query="which server", k=1)).facts[0].fact.content.endswith(("zeus", "hera"))
            cached = await s.call("recall", query="which server", k=5)
            assert cached.cached
            with pytest.raises(InvalidArgument):
                await s.call("recall", query="server", when="next blue moon")

    run(main())


def test_projects_are_isolated(tmp_path: Path) -> None:
    async def main() -> None:
        async with Stack(tmp_path) as s:
            await s.call("remember", content="alpha secret password hint", project="alpha")
            await s.call("remember", content="beta public note", project="beta")
            await s.call("remember", content="global fact about password policy")
            alpha = (await s.call("recall", query="password", project="alpha", k=10)).facts
            assert [h.fact.project for h in alpha] == ["alpha"]
            beta = (await s.call("recall", query="password secret", project="beta", k=10)).facts
            assert all(h.fact.project == "beta" for h in beta)
            with_global = (await s.call("recall", query="password", project="alpha", include_global=True)).facts
            assert {h.fact.project for h in with_global} == {"alpha", ""}
            listed = (await s.call("list_facts", project="beta")).facts
            assert [f.content for f in listed] == ["beta public note"]
            assert len((await s.call("list_facts")).facts) == 3

    run(main())


def test_forget_really_deletes(tmp_path: Path) -> None:
    async def main() -> None:
        async with Stack(tmp_path) as s:
            keep = (await s.call("remember", content="keep this harmless note")).fact
            gone = (await s.call("remember", content="the door code is 4711 xyzzy", tags=["secret"])).fact
            await s.call("update_fact", id=gone.id, content="the door code is 4712 xyzzy")
            assert (await s.call("recall", query="door code xyzzy")).facts  # cached now
            assert (await s.call("forget", ids=[gone.id])).forgotten == 1
            with pytest.raises(NotFound):
                await s.call("get_fact", id=gone.id)
            assert all(h.fact.id != gone.id for h in (await s.call("recall", query="door code xyzzy")).facts)

            def leftovers(conn):
                return {
                    "rows": conn.execute("SELECT count(*) FROM fact WHERE id = ?", (gone.id,)).fetchone()[0],
                    "history": conn.execute("SELECT count(*) FROM fact_history").fetchone()[0],
                    "tags": conn.execute("SELECT count(*) FROM fact_tag WHERE tag = 'secret'").fetchone()[0],
                    "fts": conn.execute("SELECT count(*) FROM fact_fts WHERE fact_fts MATCH 'xyzzy'").fetchone()[0],
                }

            assert await s.db.read(leftovers) == {"rows": 0, "history": 0, "tags": 0, "fts": 0}
            await s.settle()  # queued vectors reach the index
            stored = [id_ for items in s.vectors.collections.values() for id_ in items]
            assert gone.id not in stored and keep.id in stored
            with pytest.raises(NotFound):  # all or nothing
                await s.call("forget", ids=[keep.id, "f_unknown"])
            assert (await s.call("get_fact", id=keep.id)).fact.id == keep.id

    run(main())


def test_bad_inputs(tmp_path: Path) -> None:
    async def main() -> None:
        async with Stack(tmp_path, memory={"max_fact_chars": 100}) as s:
            for bad in [{"content": "x" * 101}, {"content": "   "}, {"content": "ok", "tags": ["has space"]},
                        {"content": "ok", "tags": ["-dash-first"]}, {"content": "ok", "tags": [""]},
                        {"content": "ok", "project": "bad\x00name"}, {"content": "ok", "tags": ["t"] * 0 + [
                            f"tag{i}" for i in range(40)]}]:
                with pytest.raises(InvalidArgument):
                    await s.call("remember", **bad)
            with pytest.raises(NotFound):
                await s.call("get_fact", id="f_0000")
            with pytest.raises(InvalidArgument):
                await s.call("list_facts", cursor="garbage")
            with pytest.raises(InvalidArgument):
                await s.call("recall", query="  ")

    run(main())


def test_index_failure_falls_back_to_exact_search(tmp_path: Path) -> None:
    async def main() -> None:
        async with Stack(tmp_path) as s:
            fact = (await s.call("remember", content="the router password is on the fridge")).fact
            s.vectors.fail = True
            hits = (await s.call("recall", query="router fridge", mode="vector")).facts
            assert hits[0].fact.id == fact.id
            s.vectors.fail = False

    run(main())


def test_index_rebuilt_from_sqlite_at_start(tmp_path: Path) -> None:
    async def main() -> None:
        async with Stack(tmp_path) as s:
            for n in range(30):
                await s.call("remember", content=f"fact number {n} about topic {n % 3}", project="p")
        fresh = Stack(tmp_path)  # a new, empty index: the stand-in for a lost Chroma directory
        async with fresh as s:
            for _ in range(3000):
                if s.memory.fact_vectors.ready:
                    break
                import asyncio
                await asyncio.sleep(0.01)
            assert sum(len(v) for v in s.vectors.collections.values()) == 30
            assert (await s.call("recall", query="fact number 7", project="p", mode="vector")).facts

    run(main())
