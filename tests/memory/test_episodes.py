"""Episodes in process: retention (age and count, per project), drop_project, the background indexer."""

from __future__ import annotations

import asyncio
from pathlib import Path

from .helpers import Stack, run

DAY = 86400.0


def test_retention_by_age_and_count(tmp_path: Path) -> None:
    clock = [1_800_000_000.0]

    async def main() -> None:
        memory = {"episode_retention": {"max_age_days": 30}, "retention": {"chatty": {"max_count": 5}},
                  "prune_interval_s": 3600}
        async with Stack(tmp_path, clock=lambda: clock[0], memory=memory) as s:
            for n in range(10):
                await s.call("log_episode", content=f"old {n}", project="slow", timestamp=clock[0] - 40 * DAY + n)
                await s.call("log_episode", content=f"new {n}", project="slow", timestamp=clock[0] - n)
                await s.call("log_episode", content=f"chat {n}", project="chatty", timestamp=clock[0] - 60 * DAY + n)
            await s.settle()
            pruned = (await s.call("prune_episodes")).pruned
            # the background pruner's first pass (at start) can take the first old episodes before this call
            assert s.memory.episodes.pruned == 15 and set(pruned) <= {"slow", "chatty"}
            slow = [e.content for e in (await s.call("timeline", project="slow", limit=100)).episodes]
            assert slow == [f"new {n}" for n in range(10)]
            chatty = [e.content for e in (await s.call("timeline", project="chatty", limit=100)).episodes]
            assert chatty == [f"chat {n}" for n in range(9, 4, -1)]  # the newest five; no age rule of its own
            # (content only: an episode's ``context`` column quotes the episode before it, kept by design)
            left = await s.db.read(lambda c: c.execute("SELECT count(*) FROM episode_fts WHERE episode_fts "
                                                       "MATCH 'content: old'").fetchone()[0])
            assert left == 0
            stored = sum(len(v) for v in s.vectors.collections.values())
            assert stored == 15

    run(main())


def test_an_episode_pruned_while_it_is_embedded_never_reaches_the_index(tmp_path: Path) -> None:
    """The background indexer reads unembedded rows, embeds them (seconds on a busy Pi), then stores their
    vectors: a row pruned in between must not come back as a ghost vector (the prune's index delete already
    ran). CI on a loaded machine found 16 vectors for 15 episodes this way."""

    async def main() -> None:
        memory = {"retention": {"p": {"max_count": 1}}, "prune_interval_s": 3600}
        async with Stack(tmp_path, memory=memory) as s:
            embedding, release = asyncio.Event(), asyncio.Event()
            real_embed = s.embed.embed

            async def held_embed(texts, *, bulk=False):  # noqa: ANN001, ANN202
                if bulk:
                    embedding.set()
                    await release.wait()
                return await real_embed(texts, bulk=bulk)

            s.embed.embed = held_embed
            for n in range(3):
                await s.call("log_episode", content=f"turn {n}", project="p", timestamp=1_700_000_000.0 + n)
            await asyncio.wait_for(embedding.wait(), 10)          # the indexer holds the three rows
            await s.call("prune_episodes", project="p")           # two of them go meanwhile
            release.set()
            await s.settle()
            live = await s.db.read(lambda c: [row[0] for row in c.execute("SELECT id FROM episode")])
            assert len(live) == 1
            stored = [id_ for ids in s.vectors.collections.values() for id_ in ids]
            assert stored == live

    run(main())


def test_drop_project_removes_everything(tmp_path: Path) -> None:
    async def main() -> None:
        async with Stack(tmp_path) as s:
            await s.call("remember", content="doomed fact", project="doomed", tags=["t"])
            await s.call("log_episode", content="doomed episode", project="doomed")
            await s.call("remember", content="survivor fact", project="kept")
            await s.settle()
            assert await s.memory.drop_project("doomed") == {"facts": 1, "episodes": 1}

            def counts(conn):
                return [conn.execute(sql).fetchone()[0] for sql in (
                    "SELECT count(*) FROM fact WHERE project = 'doomed'",
                    "SELECT count(*) FROM episode WHERE project = 'doomed'",
                    "SELECT count(*) FROM fact_fts WHERE fact_fts MATCH 'doomed'",
                    "SELECT count(*) FROM episode_fts WHERE episode_fts MATCH 'doomed'",
                    "SELECT count(*) FROM fact_tag")]

            assert await s.db.read(counts) == [0, 0, 0, 0, 0]
            names = set(s.vectors.collections)
            assert s.vectors.collection_name("doomed", "facts") not in names
            assert s.vectors.collection_name("doomed", "episodes") not in names
            assert (await s.call("list_facts", project="kept")).facts

    run(main())


def test_recall_episodes_after_indexing(tmp_path: Path) -> None:
    async def main() -> None:
        async with Stack(tmp_path) as s:
            await s.call("log_episode", content="deployed the api gateway", session="a", kind="action")
            await s.call("log_episode", content="decided to use postgres", session="a", kind="decision")
            await s.call("log_episode", content="the build failed on arm64", session="b", kind="error")
            await s.settle()
            hits = (await s.call("recall_episodes", query="postgres decided", mode="vector")).episodes
            assert hits[0].episode.kind == "decision"
            errors = (await s.call("recall_episodes", query="build", kinds=["error"])).episodes
            assert [h.episode.session for h in errors] == ["b"]
            sessions = (await s.call("list_sessions")).sessions
            assert {x.session: x.episodes for x in sessions} == {"a": 2, "b": 1}

    run(main())
