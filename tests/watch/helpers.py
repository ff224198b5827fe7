"""Helpers of the watch tests: files on disk, and waiting for the daemon to reflect them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.conftest import wait_until


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def sources(client: Any, project: str) -> set[str]:
    try:
        return {item.source for item in client.list_sources(project).sources}
    except Exception:  # noqa: BLE001 - no such project yet
        return set()


def wait_sources(client: Any, project: str, expected: set[str], timeout: float = 15.0) -> set[str]:
    """Wait until the project's sources are exactly ``expected`` (AssertionError naming both otherwise)."""
    try:
        wait_until(lambda: sources(client, project) == expected, timeout=timeout)
    except AssertionError:
        raise AssertionError(f"sources {sorted(sources(client, project))} != expected {sorted(expected)}") from None
    return expected


def the_watch(client: Any, path: Path) -> Any:
    found = [watch for watch in client.watch_list().watches if watch.path == str(path)]
    assert len(found) == 1, client.watch_list().watches
    return found[0]


def wait_idle(client: Any, path: Path, timeout: float = 15.0) -> Any:
    """Wait until the watch on ``path`` has nothing pending and is watching; returns its info."""
    return wait_until(lambda: (lambda w: w if w.pending == 0 and w.state == "watching" else None)(
        the_watch(client, path)), timeout=timeout)


def texts(client: Any, project: str, query: str) -> list[tuple[str, str]]:
    return [(hit.source, hit.text) for hit in client.search(query, project, k=50, use_cache=False).hits]


def settle(seconds: float = 0.3) -> None:
    time.sleep(seconds)


def wait_word(client: Any, project: str, word: str, timeout: float = 15.0) -> list[str]:
    """Wait until a search finds ``word`` in some chunk; the sources whose chunks hold it."""
    def found() -> list[str]:
        return [hit.source for hit in client.search(word, project, k=10, use_cache=False).hits if word in hit.text]

    return wait_until(found, timeout=timeout)
