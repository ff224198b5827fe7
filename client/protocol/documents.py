"""Operations of the documents area (declared with define_op; see base.py).

Projects hold ingested sources (files or named texts) cut into chunks; ``search`` fuses vector and keyword
ranks. Project names are free text. Times are Unix seconds.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from .base import MAX_ITEMS, MAX_NAME, MAX_TEXT, Args, Name, Query, Result, define_op

PathText = Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
Glob = Annotated[str, msgspec.Meta(max_length=1024)]
FileType = Annotated[str, msgspec.Meta(max_length=32)]


class DocumentIn(msgspec.Struct, kw_only=True, frozen=True):
    """A source sent by the client: ``text``, or raw ``data`` (decoded by the daemon like a file)."""

    source: PathText
    text: Annotated[str, msgspec.Meta(max_length=MAX_TEXT)] = ""
    data: Annotated[bytes, msgspec.Meta(max_length=MAX_TEXT)] | None = None
    file_type: FileType = ""          # empty: from the source's extension
    mtime: float | None = None


class Skipped(msgspec.Struct, kw_only=True):
    source: str
    reason: str


class IngestArgs(Args):
    project: Name
    paths: Annotated[list[PathText], msgspec.Meta(max_length=MAX_ITEMS)] = []
    documents: Annotated[list[DocumentIn], msgspec.Meta(max_length=MAX_ITEMS)] = []
    # Wait for the result even when the ingestion is large enough to run as a background job.
    wait: bool = False
    # On a directory ingest, remove the project's sources under that directory that no longer exist.
    prune: bool = True


class IngestResult(Result):
    job_id: int | None = None         # set when the work runs (or ran) as a journaled job
    state: str = "done"               # queued | running | done | failed
    files_total: int = 0
    files_done: int = 0
    sources_added: int = 0
    sources_updated: int = 0
    sources_unchanged: int = 0
    sources_removed: int = 0
    chunks_total: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0
    tokens: int = 0                   # tokens of the chunks written (the model's tokenizer)
    skipped: list[Skipped] = []
    errors: list[Skipped] = []
    seconds: float = 0.0


class IngestStatusArgs(Args):
    job_id: int | None = None         # None: the most recent jobs
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 20


class JobStatus(msgspec.Struct, kw_only=True):
    job_id: int
    project: str
    state: str
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    files_total: int = 0
    files_done: int = 0
    chunks_total: int = 0
    chunks_done: int = 0
    chunks_per_s: float = 0.0
    eta_s: float | None = None
    errors: list[Skipped] = []
    skipped: int = 0
    error: str = ""
    result: IngestResult | None = None


class IngestStatusResult(Result):
    jobs: list[JobStatus]


class SearchArgs(Args):
    query: Query
    projects: Annotated[list[Name], msgspec.Meta(max_length=256)] = []   # empty: every project
    k: Annotated[int, msgspec.Meta(ge=1, le=200)] | None = None           # None: search.default_k
    path_glob: Glob = ""
    file_types: Annotated[list[FileType], msgspec.Meta(max_length=64)] = []
    ingested_after: float | None = None
    ingested_before: float | None = None
    max_chars: Annotated[int, msgspec.Meta(ge=0)] = 0                     # 0: no budget
    use_cache: bool = True
    mode: Literal["hybrid", "vector", "keyword"] = "hybrid"               # one side only: for measuring
    per_file: Annotated[int, msgspec.Meta(ge=0, le=200)] | None = None   # chunks of one file at most; 0: no cap;
                                                                         # None: search.per_file


class SearchHit(msgspec.Struct, kw_only=True):
    project: str
    source: str
    text: str
    line_start: int
    line_end: int
    heading: str
    file_type: str
    score: float
    vector_rank: int | None = None
    keyword_rank: int | None = None
    distance: float | None = None
    chunk_id: int = 0


class SearchResult(Result):
    hits: list[SearchHit]
    cached: bool = False
    took_ms: float = 0.0
    truncated: bool = False           # max_chars cut hits (or the text of the last one)


class ListProjectsArgs(Args):
    pass


class ProjectInfo(msgspec.Struct, kw_only=True):
    name: str
    sources: int
    chunks: int
    bytes: int
    created_at: float
    last_ingest_at: float | None = None
    collection: str = ""


class ListProjectsResult(Result):
    projects: list[ProjectInfo]


class DropProjectArgs(Args):
    project: Name


class DropProjectResult(Result):
    dropped: bool
    chunks: int = 0
    memory: dict[str, int] = {}


class ListSourcesArgs(Args):
    project: Name
    prefix: Annotated[str, msgspec.Meta(max_length=4096)] = ""
    limit: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 10_000
    offset: Annotated[int, msgspec.Meta(ge=0)] = 0


class SourceInfo(msgspec.Struct, kw_only=True):
    source: str
    file_type: str
    bytes: int
    chunks: int
    ingested_at: float
    complete: bool = True
    note: str = ""


class ListSourcesResult(Result):
    sources: list[SourceInfo]


class DropSourceArgs(Args):
    project: Name
    sources: Annotated[list[PathText], msgspec.Meta(min_length=1, max_length=MAX_ITEMS)]


class DropSourceResult(Result):
    removed: int
    chunks: int


class ReindexArgs(Args):
    project: Annotated[str, msgspec.Meta(max_length=MAX_NAME)] = ""   # empty: every project


class ReindexResult(Result):
    projects: dict[str, int]          # project -> vectors written to its rebuilt collection
    seconds: float = 0.0


INGEST = define_op("ingest", IngestArgs, IngestResult, idempotent=True,
                   summary="Ingest files/directories (daemon-side paths) or sent documents into a project.")
INGEST_STATUS = define_op("ingest_status", IngestStatusArgs, IngestStatusResult, idempotent=True,
                          summary="Progress of ingestion jobs: files and chunks done/total, rate, ETA, errors.")
SEARCH = define_op("search", SearchArgs, SearchResult, idempotent=True,
                   summary="Hybrid search (vector + BM25, score-aware fusion) over one, several or all projects.")
LIST_PROJECTS = define_op("list_projects", ListProjectsArgs, ListProjectsResult, idempotent=True,
                          summary="Projects with their sources, chunks, bytes and last ingest time.")
DROP_PROJECT = define_op("drop_project", DropProjectArgs, DropProjectResult, idempotent=True,
                         summary="Delete a project entirely: rows, vectors, Chroma collection, cache, memory.")
LIST_SOURCES = define_op("list_sources", ListSourcesArgs, ListSourcesResult, idempotent=True,
                         summary="Sources of a project (optionally under a prefix).")
DROP_SOURCE = define_op("drop_source", DropSourceArgs, DropSourceResult, idempotent=True,
                        summary="Remove sources and their chunks from a project.")
REINDEX = define_op("reindex", ReindexArgs, ReindexResult, idempotent=True,
                    summary="Rebuild the vector index of one or every project from SQLite.")
