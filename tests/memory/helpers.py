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
