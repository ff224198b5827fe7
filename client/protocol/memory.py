"""Operations of the memory area: facts, episodes, time ranges, export/import, backup (see base.py).

- Facts: ``remember``, ``recall``, ``get_fact``, ``list_facts``, ``update_fact``, ``forget``.
- Episodes: ``log_episode``, ``timeline``, ``recall_episodes``, ``list_sessions``.
- Housekeeping: ``prune_episodes``, ``export_memory``, ``import_memory``, ``backup``.

A project is a free-text name; the empty string is the global project. Every ``when`` field takes a time range
in words ("today", "last week", "past 3 days", "since monday", "2026-11-01..2026-11-20", ISO dates); the
daemon reads it in its configured timezone and answers ``invalid_argument`` when it cannot.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from .base import MAX_ITEMS, MAX_NAME, Args, Metadata, Name, Query, Result, Text, define_op

ProjectName = Annotated[str, msgspec.Meta(max_length=MAX_NAME)]   # "" is the global project
Tag = Annotated[str, msgspec.Meta(max_length=MAX_NAME)]
Tags = Annotated[list[Tag], msgspec.Meta(max_length=64)]
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
When = Annotated[str, msgspec.Meta(max_length=256)]
Cursor = Annotated[str, msgspec.Meta(max_length=128)]
Importance = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
TagMode = Literal["any", "all"]
SearchMode = Literal["hybrid", "vector", "keyword"]


# -- facts ------------------------------------------------------------------------------------------------------

class Fact(msgspec.Struct, kw_only=True):
    id: str
    project: str
    content: str
    tags: list[str]
    source: str
    importance: float
    metadata: dict[str, str | int | float | bool | None]
    created_at: float
    updated_at: float
    version: int


class FactVersion(msgspec.Struct, kw_only=True):
    """A superseded version of a fact, kept by ``update_fact`` (and by merges of near-duplicates)."""

    version: int
    content: str
    tags: list[str]
    source: str
    importance: float
    valid_from: float
    valid_to: float
    reason: str


class FactHit(msgspec.Struct, kw_only=True):
    fact: Fact
    score: float                       # fused score (higher is better; docs/RETRIEVAL.md)
    similarity: float | None = None    # cosine similarity to the query, when the vector side found it
    vector_rank: int | None = None     # 1-based rank in the vector results
    keyword_rank: int | None = None    # 1-based rank in the BM25 results


class RememberArgs(Args):
    content: Text
    project: ProjectName = ""
    tags: Tags = []
    source: Annotated[str, msgspec.Meta(max_length=1024)] = ""
    importance: Importance = 0.5
    metadata: Metadata = {}


class RememberResult(Result):
    fact: Fact
    created: bool                          # False: an existing fact was returned (exact duplicate or merge)
    duplicate: Literal["", "exact", "near"] = ""
    merged: bool = False                   # a near-duplicate was merged into ``fact`` (memory.merge_near_duplicates)
    near_duplicates: list[FactHit] = []    # facts at or above memory.near_duplicate_threshold


class RecallArgs(Args):
    query: Query
    project: ProjectName = ""
    include_global: bool = False       # also search the global project ("") when ``project`` is another one
    tags: Tags = []
    tag_mode: TagMode = "any"
    when: When = ""                    # on the facts' creation time
    k: Annotated[int, msgspec.Meta(ge=1, le=100)] = 8
    mode: SearchMode = "hybrid"


class RecallResult(Result):
    facts: list[FactHit]
    took_ms: float = 0.0
    cached: bool = False


class GetFactArgs(Args):
    id: Id
    history: bool = False


class GetFactResult(Result):
    fact: Fact
    history: list[FactVersion] = []


class ListFactsArgs(Args):
    project: ProjectName | None = None     # None: every project
    tags: Tags = []
    tag_mode: TagMode = "any"
    when: When = ""
    order: Literal["newest", "oldest"] = "newest"
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 50
    cursor: Cursor = ""


class ListFactsResult(Result):
    facts: list[Fact]
    next_cursor: str = ""                  # "" when there is no more


class UpdateFactArgs(Args):
    id: Id
    content: Text | None = None
    tags: Tags | None = None
    source: Annotated[str, msgspec.Meta(max_length=1024)] | None = None
    importance: Importance | None = None
    metadata: Metadata | None = None
    reason: Annotated[str, msgspec.Meta(max_length=1024)] = ""


class UpdateFactResult(Result):
    fact: Fact
    previous_version: int


class ForgetArgs(Args):
    ids: Annotated[list[Id], msgspec.Meta(min_length=1, max_length=MAX_ITEMS)]


class ForgetResult(Result):
    forgotten: int


# -- episodes ---------------------------------------------------------------------------------------------------

class Episode(msgspec.Struct, kw_only=True):
    id: str
    session: str
    project: str
    kind: str
    role: str
    content: str
    timestamp: float
    metadata: dict[str, str | int | float | bool | None]


class EpisodeHit(msgspec.Struct, kw_only=True):
    episode: Episode
    score: float
    similarity: float | None = None
    vector_rank: int | None = None
    keyword_rank: int | None = None


class LogEpisodeArgs(Args):
    content: Text
    session: Name = "default"
    kind: Annotated[str, msgspec.Meta(min_length=1, max_length=32)] = "message"  # message, action, decision, ...
    role: Annotated[str, msgspec.Meta(max_length=32)] = ""                          # user, assistant, tool, ...
    project: ProjectName = ""
    timestamp: float | None = None         # Unix seconds; None: now
    metadata: Metadata = {}


class LogEpisodeResult(Result):
    episode: Episode


class TimelineArgs(Args):
    session: Annotated[str, msgspec.Meta(max_length=MAX_NAME)] | None = None
    project: ProjectName | None = None     # None: every project
    kinds: Annotated[list[Annotated[str, msgspec.Meta(max_length=32)]], msgspec.Meta(max_length=32)] = []
    when: When = ""
    order: Literal["newest", "oldest"] = "newest"
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 50
    cursor: Cursor = ""


class TimelineResult(Result):
    episodes: list[Episode]
    next_cursor: str = ""


class RecallEpisodesArgs(Args):
    query: Query
    session: Annotated[str, msgspec.Meta(max_length=MAX_NAME)] | None = None
    project: ProjectName = ""
    kinds: Annotated[list[Annotated[str, msgspec.Meta(max_length=32)]], msgspec.Meta(max_length=32)] = []
    when: When = ""
    k: Annotated[int, msgspec.Meta(ge=1, le=100)] = 8
    mode: SearchMode = "hybrid"


class RecallEpisodesResult(Result):
    episodes: list[EpisodeHit]
    took_ms: float = 0.0


class SessionInfo(msgspec.Struct, kw_only=True):
    session: str
    project: str
    episodes: int
    first_at: float
    last_at: float


class ListSessionsArgs(Args):
    project: ProjectName | None = None
    when: When = ""                        # sessions with an episode in this range
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 50


class ListSessionsResult(Result):
    sessions: list[SessionInfo]


class PruneEpisodesArgs(Args):
    project: ProjectName | None = None     # None: every project with a retention rule


class PruneEpisodesResult(Result):
    pruned: dict[str, int]                 # project -> episodes deleted


# -- export / import / backup -----------------------------------------------------------------------------------

class ExportedFact(msgspec.Struct, kw_only=True, tag="fact", tag_field="type"):
    id: Id
    project: ProjectName
    content: Text
    tags: Tags = []
    source: Annotated[str, msgspec.Meta(max_length=1024)] = ""
    importance: Importance = 0.5
    metadata: Metadata = {}
    created_at: float
    updated_at: float
    version: int = 1
    history: Annotated[list[FactVersion], msgspec.Meta(max_length=1000)] = []


class ExportedEpisode(msgspec.Struct, kw_only=True, tag="episode", tag_field="type"):
    id: Id
    session: Name
    project: ProjectName
    kind: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    role: Annotated[str, msgspec.Meta(max_length=32)] = ""
    content: Text
    timestamp: float
    metadata: Metadata = {}


ExportRecord = ExportedFact | ExportedEpisode


class ExportMemoryArgs(Args):
    what: Literal["facts", "episodes"] = "facts"
    project: ProjectName | None = None
    cursor: Cursor = ""
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_ITEMS)] = 500


class ExportMemoryResult(Result):
    records: list[ExportRecord]
    next_cursor: str = ""


class ImportMemoryArgs(Args):
    records: Annotated[list[ExportRecord], msgspec.Meta(max_length=MAX_ITEMS)]


class ImportMemoryResult(Result):
    facts: int = 0
    episodes: int = 0
    skipped: int = 0                       # ids already present, or exact duplicates of a present fact


class BackupArgs(Args):
    path: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]  # on the daemon's machine; relative: <state>/backups


class BackupResult(Result):
    path: str
    bytes: int
    pages: int
    seconds: float


REMEMBER = define_op("remember", RememberArgs, RememberResult, idempotent=False,
                     summary="Keep a fact; an exact duplicate returns the existing one, near-duplicates are reported.")
RECALL = define_op("recall", RecallArgs, RecallResult, idempotent=True,
                   summary="Hybrid (vector + BM25, rank-fused) search of facts with project/tag/time filters.")
GET_FACT = define_op("get_fact", GetFactArgs, GetFactResult, idempotent=True,
                     summary="One fact by id, optionally with its superseded versions.")
LIST_FACTS = define_op("list_facts", ListFactsArgs, ListFactsResult, idempotent=True,
                       summary="Facts by project, tags and time range, newest or oldest first, paginated.")
UPDATE_FACT = define_op("update_fact", UpdateFactArgs, UpdateFactResult, idempotent=False,
                        summary="Change a fact; the superseded version is kept in its history.")
FORGET = define_op("forget", ForgetArgs, ForgetResult, idempotent=True,
                   summary="Delete facts for real: rows, history, vectors, keyword index and cached results.")
LOG_EPISODE = define_op("log_episode", LogEpisodeArgs, LogEpisodeResult, idempotent=False,
                        summary="Append an event (message, action, decision, error, ...) to the timeline.")
TIMELINE = define_op("timeline", TimelineArgs, TimelineResult, idempotent=True,
                     summary="Episodes by session, project, kind and time range, newest or oldest first, paginated.")
RECALL_EPISODES = define_op("recall_episodes", RecallEpisodesArgs, RecallEpisodesResult, idempotent=True,
                            summary="Episodes matching a query (vector + BM25, rank-fused) with timeline filters.")
LIST_SESSIONS = define_op("list_sessions", ListSessionsArgs, ListSessionsResult, idempotent=True,
                          summary="Sessions with their episode counts and first/last times, latest first.")
PRUNE_EPISODES = define_op("prune_episodes", PruneEpisodesArgs, PruneEpisodesResult, idempotent=True,
                           summary="Apply the episode retention rules now (the daemon also does it periodically).")
EXPORT_MEMORY = define_op("export_memory", ExportMemoryArgs, ExportMemoryResult, idempotent=True,
                          summary="One page of facts or episodes as export records (JSON Lines in the CLI).")
IMPORT_MEMORY = define_op("import_memory", ImportMemoryArgs, ImportMemoryResult, idempotent=True,
                          summary="Load export records; ids already present are skipped.")
BACKUP = define_op("backup", BackupArgs, BackupResult, idempotent=True,
                   summary="Copy the SQLite database with the online backup API while serving.")
