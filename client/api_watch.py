"""Client methods for watched folders (see api_core.py for the pattern)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .protocol.watch import (
    WATCH_ADD, WATCH_LIST, WATCH_REMOVE, WatchAddArgs, WatchAddResult, WatchListArgs, WatchListResult,
    WatchRemoveArgs, WatchRemoveResult,
)


class WatchMethods:
    _call: Any

    def watch_add(self, project: str, paths: Sequence[str] | str, *, wait: bool = False) -> WatchAddResult:
        """Keep ``project`` in step with the directories ``paths`` (read by the daemon: under its
        ``ingest.allowed_roots``). ``wait=True`` answers once their first scan is searchable."""
        if isinstance(paths, str):
            paths = [paths]
        return self._call(WATCH_ADD, WatchAddArgs(project=project, paths=list(paths), wait=wait))

    def watch_list(self, project: str = "") -> WatchListResult:
        return self._call(WATCH_LIST, WatchListArgs(project=project))

    def watch_remove(self, paths: Sequence[str] | str = (), *, project: str = "") -> WatchRemoveResult:
        """Stop watching ``paths``, or every watch of ``project``; what was ingested stays."""
        if isinstance(paths, str):
            paths = [paths]
        return self._call(WATCH_REMOVE, WatchRemoveArgs(paths=list(paths), project=project))
