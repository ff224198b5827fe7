"""Fixtures of the watch tests: a daemon (fake embedder: plumbing) allowed to read one directory tree."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FAKE_MODEL, merge

FAST_WATCH = {"quiet_ms": 200, "retry_interval_s": 0.5, "rescan_interval_s": 1.0}


@pytest.fixture(scope="module")
def tree_root(short_tmp: Path, request: pytest.FixtureRequest) -> Path:
    root = short_tmp / f"tree-{request.module.__name__.rsplit('.', 1)[-1][:12]}"
    root.mkdir()
    return root


def watch_config(root: Path, **watch: Any) -> dict[str, Any]:
    return merge(FAKE_MODEL, {"ingest": {"allowed_roots": [str(root)]}, "watch": {**FAST_WATCH, **watch}})


@pytest.fixture(scope="module")
def watch_daemon(daemon_factory: Any, tree_root: Path) -> Any:
    return daemon_factory("watch", watch_config(tree_root))


@pytest.fixture
def wclient(watch_daemon: Any) -> Iterator[Any]:
    with watch_daemon.client() as client:
        yield client
