"""Fixtures of the memory tests: a real daemon (`pirag serve`) serving the memory ops."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import DaemonHandle, merge

FAKE = {"embed": {"model": "fake"}, "memory": {"timezone": "UTC"}}


@pytest.fixture(scope="session")
def memory_daemon_factory(daemon_factory: Any) -> Any:
    """The shared daemon factory with the memory tests' defaults (fake embedder, UTC)."""

    def factory(name: str, config: dict[str, Any] | None = None) -> DaemonHandle:
        return daemon_factory(f"m{name[:12]}", merge(FAKE, config or {}))

    return factory


@pytest.fixture(scope="module")
def memory_daemon(memory_daemon_factory: Any) -> DaemonHandle:
    return memory_daemon_factory("mem")
