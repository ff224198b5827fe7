"""Client methods for the memory ops: facts, episodes, export/import, backup (see api_core.py for the pattern).

Shared by ``Client`` (methods return results) and ``AsyncClient`` (methods return awaitables). ``when``
arguments take time ranges in words ("today", "last week", "past 3 days", "2026-11-01..2026-11-20").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .protocol.memory import (
    BACKUP, EXPORT_MEMORY, FORGET, GET_FACT, IMPORT_MEMORY, LIST_FACTS, LIST_SESSIONS, LOG_EPISODE, PRUNE_EPISODES,
    RECALL, RECALL_EPISODES, REMEMBER, TIMELINE, UPDATE_FACT, BackupArgs, ExportMemoryArgs, ExportRecord, ForgetArgs,
    GetFactArgs, ImportMemoryArgs, ListFactsArgs, ListSessionsArgs, LogEpisodeArgs, PruneEpisodesArgs, RecallArgs,
    RecallEpisodesArgs, RememberArgs, TimelineArgs, UpdateFactArgs,
)


class MemoryMethods:
    _call: Any

    # -- facts ------------------------------------------------------------------------------------------------

    def remember(self, content: str, *, project: str = "", tags: Sequence[str] = (), source: str = "",
                 importance: float = 0.5, metadata: dict[str, Any] | None = None) -> Any:
        """Keep a fact (``RememberResult``): an exact duplicate returns the existing fact (``created=False``)."""
        return self._call(REMEMBER, RememberArgs(content=content, project=project, tags=list(tags), source=source,
                                                 importance=importance, metadata=metadata or {}))

    def recall(self, query: str, *, project: str = "", include_global: bool = False, tags: Sequence[str] = (),
               tag_mode: str = "any", when: str = "", k: int = 8, mode: str = "hybrid") -> Any:
        """Hybrid search of facts (``RecallResult.facts``: ``FactHit`` best first)."""
        return self._call(RECALL, RecallArgs(query=query, project=project, include_global=include_global,
                                             tags=list(tags), tag_mode=tag_mode, when=when, k=k, mode=mode))

    def get_fact(self, fact_id: str, *, history: bool = False) -> Any:
        """One fact (``GetFactResult``); ``NotFound`` for an unknown id."""
        return self._call(GET_FACT, GetFactArgs(id=fact_id, history=history))

    def list_facts(self, *, project: str | None = None, tags: Sequence[str] = (), tag_mode: str = "any",
                   when: str = "", order: str = "newest", limit: int = 50, cursor: str = "") -> Any:
        """A page of facts (``ListFactsResult``); pass ``next_cursor`` back for the next page."""
        return self._call(LIST_FACTS, ListFactsArgs(project=project, tags=list(tags), tag_mode=tag_mode, when=when,
                                                    order=order, limit=limit, cursor=cursor))

    def update_fact(self, fact_id: str, *, content: str | None = None, tags: Sequence[str] | None = None,
                    source: str | None = None, importance: float | None = None,
                    metadata: dict[str, Any] | None = None, reason: str = "") -> Any:
        """Change a fact; the old version stays in its history (``UpdateFactResult``)."""
        return self._call(UPDATE_FACT, UpdateFactArgs(
            id=fact_id, content=content, tags=list(tags) if tags is not None else None, source=source,
            importance=importance, metadata=metadata, reason=reason))

    def forget(self, *fact_ids: str) -> Any:
        """Delete facts for real (``ForgetResult``); ``NotFound`` (and nothing deleted) if any id is unknown."""
        return self._call(FORGET, ForgetArgs(ids=list(fact_ids)))

    # -- episodes ---------------------------------------------------------------------------------------------

    def log_episode(self, content: str, *, session: str = "default", kind: str = "message", role: str = "",
                    project: str = "", timestamp: float | None = None, metadata: dict[str, Any] | None = None) -> Any:
        """Append an event to the timeline (``LogEpisodeResult``)."""
        return self._call(LOG_EPISODE, LogEpisodeArgs(content=content, session=session, kind=kind, role=role,
                                                      project=project, timestamp=timestamp, metadata=metadata or {}))

    def timeline(self, *, session: str | None = None, project: str | None = None, kinds: Sequence[str] = (),
                 when: str = "", order: str = "newest", limit: int = 50, cursor: str = "") -> Any:
        """A page of episodes (``TimelineResult``); pass ``next_cursor`` back for the next page."""
        return self._call(TIMELINE, TimelineArgs(session=session, project=project, kinds=list(kinds), when=when,
                                                 order=order, limit=limit, cursor=cursor))

    def recall_episodes(self, query: str, *, session: str | None = None, project: str = "",
                        kinds: Sequence[str] = (), when: str = "", k: int = 8, mode: str = "hybrid") -> Any:
        """Episodes matching a query (``RecallEpisodesResult``)."""
        return self._call(RECALL_EPISODES, RecallEpisodesArgs(query=query, session=session, project=project,
                                                              kinds=list(kinds), when=when, k=k, mode=mode))

    def list_sessions(self, *, project: str | None = None, when: str = "", limit: int = 50) -> Any:
        """Sessions, latest activity first (``ListSessionsResult``)."""
        return self._call(LIST_SESSIONS, ListSessionsArgs(project=project, when=when, limit=limit))

    def prune_episodes(self, *, project: str | None = None) -> Any:
        """Apply the retention rules now (``PruneEpisodesResult``)."""
        return self._call(PRUNE_EPISODES, PruneEpisodesArgs(project=project))

    # -- export / import / backup -----------------------------------------------------------------------------

    def export_memory(self, *, what: str = "facts", project: str | None = None, cursor: str = "",
                      limit: int = 500) -> Any:
        """One page of export records (``ExportMemoryResult``); loop on ``next_cursor``."""
        return self._call(EXPORT_MEMORY, ExportMemoryArgs(what=what, project=project, cursor=cursor, limit=limit))

    def import_memory(self, records: Sequence[ExportRecord]) -> Any:
        """Load export records (at most 4096 a call); ids already present are skipped (``ImportMemoryResult``)."""
        return self._call(IMPORT_MEMORY, ImportMemoryArgs(records=list(records)))

    def backup(self, path: str) -> Any:
        """Online backup of the daemon's database to ``path`` on the daemon's machine (``BackupResult``)."""
        return self._call(BACKUP, BackupArgs(path=path))
