"""drop_project racing the deferred index writers: nothing may re-create a dropped project's collection.

Seen in ``pirag-stress quick`` (project-churn): one vector collection and its segment directory outlived every
project, fact and episode. The episode indexer had read a project's new episode and was embedding it when the
project was dropped; it then queued the vector, and the flusher created the collection again. The same holds for
any writer whose vectors come from rows read before the drop (a remember, a start-up ``ensure`` rebuild).
These tests hold each writer at the worst moment, drop the project, let the writer go on, and check."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np

from .helpers import Stack, run


class Gate:
    """Holds the first ``embed`` call whose texts contain ``word`` until ``release()``."""

    def __init__(self, stack: Stack, word: str):
        self.entered = asyncio.Event()
        self.released = asyncio.Event()
        self.word = word
        original = stack.embed.embed

        async def embed(texts: Any, **kwargs: Any) -> np.ndarray:
            if not self.entered.is_set() and any(word in text for text in texts):
                self.entered.set()
                await self.released.wait()
            return await original(texts, **kwargs)

        stack.embed.embed = embed  # type: ignore[method-assign]

    def release(self) -> None:
        self.released.set()


async def until(condition: Any, what: str) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_episode_embedded_while_its_project_is_dropped_leaves_no_collection(tmp_path: Path) -> None:
    async def main() -> None:
        async with Stack(tmp_path) as s:
            await s.settle()
            gate = Gate(s, "doomed")
            await s.call("log_episode", content="doomed episode", project="doomed", session="s1")
            await asyncio.wait_for(gate.entered.wait(), 10)   # the indexer has read the row and is embedding it
            assert await s.memory.drop_project("doomed") == {"facts": 0, "episodes": 1}
            embedded = s.memory.episodes.embedded
            gate.release()
            await until(lambda: s.memory.episodes.embedded > embedded, "the indexer's batch")
            await s.settle()
            assert s.vectors.collection_name("doomed", "episodes") not in s.vectors.collections

    run(main())


def test_episode_logged_again_after_a_drop_is_indexed(tmp_path: Path) -> None:
    """The guard is exact: a project used again after its drop gets its collection back, with the new rows only."""
    async def main() -> None:
        async with Stack(tmp_path) as s:
            await s.settle()
            gate = Gate(s, "doomed")
            await s.call("log_episode", content="doomed episode", project="again", session="s1")
            await asyncio.wait_for(gate.entered.wait(), 10)
            await s.memory.drop_project("again")
            fresh = await s.call("log_episode", content="fresh episode", project="again", session="s1")
            gate.release()
            await s.settle()
            await until(lambda: s.memory.episodes.vectors.pending() == 0, "the flusher")
            stored = s.vectors.collections.get(s.vectors.collection_name("again", "episodes"), {})
            assert set(stored) == {fresh.episode.id}

    run(main())


def test_rebuild_racing_a_drop_leaves_no_collection(tmp_path: Path) -> None:
    """An ``ensure`` rebuild that read the rows before the drop must not write them after it."""
    async def main() -> None:
        async with Stack(tmp_path) as s:
            await s.call("remember", content="doomed fact", project="doomed")
            await s.settle()
            side = s.memory.fact_vectors
            collection = s.vectors.collection_name("doomed", "facts")
            s.vectors.collections.pop(collection)          # out of step: ensure() rebuilds it
            entered, released = asyncio.Event(), asyncio.Event()
            original = s.vectors.upsert

            async def slow_upsert(name: str, *args: Any, **kwargs: Any) -> None:
                if name == collection and not entered.is_set():
                    entered.set()
                    await released.wait()
                await original(name, *args, **kwargs)

            s.vectors.upsert = slow_upsert  # type: ignore[method-assign]
            rebuild = asyncio.ensure_future(side.ensure("doomed", 1, s.memory.model_id))
            await asyncio.wait_for(entered.wait(), 10)
            dropping = asyncio.ensure_future(s.memory.drop_project("doomed"))
            await asyncio.sleep(0.05)
            released.set()
            await rebuild
            await dropping
            assert collection not in s.vectors.collections

    run(main())
