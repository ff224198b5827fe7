"""Helpers shared by the memory tests (kept here, not in tests/conftest.py, which the lead owns)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from pirag.daemon.config import Config

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a fresh loop; an exception that reaches the loop's handler fails the test."""
    failures: list[dict[str, Any]] = []

    async def main() -> T:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: failures.append(context))
        return await coroutine

    result = asyncio.run(main())
    assert not failures, failures
    return result


def make_config(state_dir: Path, **sections: dict[str, Any]) -> Config:
    """A Config on ``state_dir`` with some section keys overridden: make_config(p, memory={"timezone": "UTC"})."""
    raw: dict[str, Any] = {"state_dir": str(state_dir)}
    raw.update(sections)
    return msgspec.convert(raw, Config)


class Stack:
    """An in-process memory stack: Database + FakeEmbedder + numpy vector index + MemoryService."""

    def __init__(self, state_dir: Path, clock: Any = None, vectors: Any = "numpy", **sections: dict[str, Any]):
        from pirag.daemon.embed.fake import FakeEmbedder
        from pirag.daemon.services.memory import MemoryService
        from pirag.daemon.store.sqlite_pool import Database

        from .fakes import NumpyVectorIndex

        sections.setdefault("memory", {}).setdefault("timezone", "UTC")
        self.config = make_config(state_dir, **sections)
        self.db = Database(self.config)
        self.embed = FakeEmbedder()
        self.vectors = NumpyVectorIndex() if vectors == "numpy" else vectors
        kwargs = {"clock": clock} if clock is not None else {}
        self.memory = MemoryService(self.config, self.db, self.embed, self.vectors, **kwargs)

    async def __aenter__(self) -> "Stack":
        await self.db.start()
        await self.embed.start()
        await self.memory.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.memory.close()
        await self.db.close()

    async def call(self, op: str, **args: Any) -> Any:
        """Call a handler the way the server does: args decoded into the op's Args Struct first."""
        from pirag.client.protocol import OPS

        spec = OPS[op]
        decoded = msgspec.convert(args, spec.args)
        return await self.memory.handlers()[op](decoded, None)

    async def settle(self) -> None:
        """Wait until the episode indexer has embedded everything logged so far, then write every queued
        vector to the index (the flusher would do it once the daemon is idle)."""
        for _ in range(3000):
            pending = await self.db.read(lambda c: c.execute(
                "SELECT count(*) FROM episode WHERE vector IS NULL").fetchone()[0])
            if not pending:
                await self.memory.fact_vectors.flush()
                await self.memory.episodes.vectors.flush()
                return
            await asyncio.sleep(0.01)
        raise AssertionError("episodes were not embedded in time")
