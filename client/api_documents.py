"""Client methods for the documents ops (see api_core.py for the pattern)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .protocol.documents import (
    DROP_PROJECT, DROP_SOURCE, INGEST, INGEST_STATUS, LIST_PROJECTS, LIST_SOURCES, REINDEX, SEARCH, DocumentIn,
    DropProjectArgs, DropProjectResult, DropSourceArgs, DropSourceResult, IngestArgs, IngestResult,
    IngestStatusArgs, IngestStatusResult, ListProjectsArgs, ListProjectsResult, ListSourcesArgs, ListSourcesResult,
    ReindexArgs, ReindexResult, SearchArgs, SearchResult,
)


class DocumentsMethods:
    _call: Any

    def ingest(self, project: str, paths: Sequence[str] = (), *, documents: Sequence[DocumentIn] = (),
               wait: bool = False, prune: bool = True) -> IngestResult:
        """Ingest daemon-readable ``paths`` (files or directories) and/or sent ``documents`` into ``project``.

        A large path ingestion runs as a background job: the result carries ``job_id`` and
        ``state="running"``; follow it with ``ingest_status(job_id)``, or pass ``wait=True``."""
        return self._call(INGEST, IngestArgs(project=project, paths=list(paths), documents=list(documents),
                                             wait=wait, prune=prune))

    def ingest_text(self, project: str, source: str, text: str) -> IngestResult:
        """Ingest one text under the name ``source`` (its extension picks the format: ``notes.md``)."""
        return self._call(INGEST, IngestArgs(project=project, documents=[DocumentIn(source=source, text=text)]))

    def ingest_status(self, job_id: int | None = None, *, limit: int = 20) -> IngestStatusResult:
        return self._call(INGEST_STATUS, IngestStatusArgs(job_id=job_id, limit=limit))

    def search(self, query: str, projects: Sequence[str] | str = (), *, k: int | None = None, path_glob: str = "",
               file_types: Sequence[str] = (), ingested_after: float | None = None,
               ingested_before: float | None = None, max_chars: int = 0, use_cache: bool = True,
               mode: str = "hybrid", per_file: int | None = None) -> SearchResult:
        """Hybrid search (``mode`` "vector" or "keyword": one side only); ``projects`` empty searches every project;
        ``per_file``: at most that many chunks of one file (0: no cap; None: the daemon's ``search.per_file``)."""
        if isinstance(projects, str):
            projects = [projects]
        return self._call(SEARCH, SearchArgs(query=query, projects=list(projects), k=k, path_glob=path_glob,
                                             file_types=list(file_types), ingested_after=ingested_after,
                                             ingested_before=ingested_before, max_chars=max_chars,
                                             use_cache=use_cache, mode=mode,  # type: ignore[arg-type]
                                             per_file=per_file))

    def list_projects(self) -> ListProjectsResult:
        return self._call(LIST_PROJECTS, ListProjectsArgs())

    def drop_project(self, project: str) -> DropProjectResult:
        return self._call(DROP_PROJECT, DropProjectArgs(project=project))

    def list_sources(self, project: str, *, prefix: str = "", limit: int = 10_000,
                     offset: int = 0) -> ListSourcesResult:
        return self._call(LIST_SOURCES, ListSourcesArgs(project=project, prefix=prefix, limit=limit, offset=offset))

    def drop_source(self, project: str, sources: Sequence[str] | str) -> DropSourceResult:
        if isinstance(sources, str):
            sources = [sources]
        return self._call(DROP_SOURCE, DropSourceArgs(project=project, sources=list(sources)))

    def reindex(self, project: str = "") -> ReindexResult:
        return self._call(REINDEX, ReindexArgs(project=project))
