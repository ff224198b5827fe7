"""``pirag ingest``, ``search``, ``projects``, ``sources``, ``drop``, ``drop-source``, ``reindex``, ``ingest-status``.

Client calls only. ``ingest`` asks the daemon to read the paths itself (they must be under its
``ingest.allowed_roots``) or, with ``--upload``, walks them here with the daemon's own rules and sends the
contents in batches. Either way it shows a progress bar (rich) on a terminal, or a line per update otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from .common import client_from, emit

UPLOAD_BATCH_BYTES = 8 << 20
UPLOAD_BATCH_FILES = 256


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("ingest", parents=[common], help="add files or directories to a project")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--project", "-p", required=True, help="project name (created on first ingest)")
    p.add_argument("--upload", action="store_true",
                   help="read the files here and send their contents (when the daemon may not read the paths)")
    p.add_argument("--no-prune", action="store_true",
                   help="keep sources that vanished from a re-ingested directory")
    p.add_argument("--no-wait", action="store_true", help="start the job and return its id at once")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=_ingest)

    p = subparsers.add_parser("search", parents=[common], help="search projects (vector + keywords)")
    p.add_argument("query")
    p.add_argument("--project", "-p", action="append", default=[], help="project to search (repeatable; "
                   "default: every project)")
    p.add_argument("-k", type=int, default=None, help="number of hits (default: search.default_k)")
    p.add_argument("--path", default="", help="path glob filter, e.g. '**/*.md' or 'docs/*'")
    p.add_argument("--type", action="append", default=[], help="file type filter (md, py, ...; repeatable)")
    p.add_argument("--since", type=float, default=None, help="only sources ingested after this Unix time")
    p.add_argument("--max-chars", type=int, default=0, help="budget for the returned text (0: none)")
    p.add_argument("--no-cache", action="store_true", help="bypass the query cache")
    p.add_argument("--per-file", type=int, default=None, help="chunks of one file before other files' "
                   "(0: chunks as ranked; default: search.per_file)")
    p.set_defaults(func=_search)

    p = subparsers.add_parser("projects", parents=[common], help="list projects")
    p.set_defaults(func=_projects)

    p = subparsers.add_parser("sources", parents=[common], help="list a project's sources")
    p.add_argument("--project", "-p", required=True)
    p.add_argument("--prefix", default="")
    p.set_defaults(func=_sources)

    p = subparsers.add_parser("drop", parents=[common], help="delete a project and everything in it")
    p.add_argument("project")
    p.add_argument("--yes", action="store_true", help="do not ask")
    p.set_defaults(func=_drop)

    p = subparsers.add_parser("drop-source", parents=[common], help="remove sources from a project")
    p.add_argument("sources", nargs="+", metavar="SOURCE")
    p.add_argument("--project", "-p", required=True)
    p.set_defaults(func=_drop_source)

    p = subparsers.add_parser("reindex", parents=[common], help="rebuild the vector index from SQLite")
    p.add_argument("--project", "-p", default="", help="one project (default: all)")
    p.set_defaults(func=_reindex)

    p = subparsers.add_parser("ingest-status", parents=[common], help="progress of ingestion jobs")
    p.add_argument("job_id", nargs="?", type=int)
    p.add_argument("--follow", "-f", action="store_true", help="follow the job until it ends")
    p.set_defaults(func=_ingest_status)


# -- ingest ---------------------------------------------------------------------------------------------------


def _ingest(args: argparse.Namespace) -> int:
    with client_from(args) as client:
        if args.upload:
            result = _upload(client, args)
        else:
            paths = [os.path.abspath(os.path.expanduser(path)) for path in args.paths]
            result = client.ingest(args.project, paths, prune=not args.no_prune)
            if result.job_id is not None and result.state in ("queued", "running") and not args.no_wait:
                final = _follow(client, result.job_id, args)
                result = final.result or result
                result.state = final.state
    emit(args, result, _human_ingest)
    return 0 if result.state in ("done", "queued", "running") and not result.errors else 1


def _upload(client: Any, args: argparse.Namespace) -> Any:
    from pirag.client.protocol.documents import DocumentIn, IngestResult

    from ..services.walk import walk

    found = walk(args.paths, None, 64 << 20)
    total = IngestResult(state="done", files_total=len(found.files))
    progress = _Progress(args, len(found.files))
    batch: list[DocumentIn] = []
    size = 0

    def send() -> None:
        nonlocal batch, size
        if not batch:
            return
        part = client.ingest(args.project, documents=batch)
        for name in ("files_done", "sources_added", "sources_updated", "sources_unchanged", "chunks_total",
                     "chunks_embedded", "chunks_reused"):
            setattr(total, name, getattr(total, name) + getattr(part, name))
        total.skipped.extend(part.skipped)
        total.errors.extend(part.errors)
        progress.update(total.files_done, total.chunks_total)
        batch, size = [], 0

    for found_file in found.files:
        try:
            with open(found_file.real_path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            total.errors.append(_skipped(found_file.path, f"unreadable: {exc.strerror}"))
            continue
        if size + len(data) > UPLOAD_BATCH_BYTES or len(batch) >= UPLOAD_BATCH_FILES:
            send()
        batch.append(DocumentIn(source=found_file.path, data=data, mtime=found_file.mtime))
        size += len(data)
    send()
    if not args.no_prune:
        sent = {found_file.path for found_file in found.files}
        for directory in found.directories:
            listed = client.list_sources(args.project, prefix=directory.rstrip("/") + "/").sources
            vanished = [source.source for source in listed if source.source not in sent]
            for start in range(0, len(vanished), 1000):
                total.sources_removed += client.drop_source(args.project, vanished[start:start + 1000]).removed
    total.skipped.extend(_skipped(path, reason) for path, reason in found.skipped)
    progress.close()
    return total


def _skipped(source: str, reason: str) -> Any:
    from pirag.client.protocol.documents import Skipped

    return Skipped(source=source, reason=reason)


def _follow(client: Any, job_id: int, args: argparse.Namespace) -> Any:
    progress = None
    while True:
        job = client.ingest_status(job_id).jobs[0]
        if progress is None and job.files_total:
            progress = _Progress(args, job.files_total)
        if progress is not None:
            progress.update(job.files_done, job.chunks_done, job.chunks_total, job.eta_s)
        if job.state not in ("queued", "running"):
            if progress is not None:
                progress.close()
            return job
        time.sleep(0.25)


class _Progress:
    """A rich progress bar on a terminal; nothing with --json or --quiet; plain lines otherwise."""

    def __init__(self, args: argparse.Namespace, files_total: int):
        self.enabled = not (args.json or getattr(args, "quiet", False))
        self.bar = None
        self.last_line = 0.0
        if self.enabled and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("ingest"), BarColumn(), MofNCompleteColumn(), TextColumn("files"),
                                TextColumn("{task.fields[chunks]} chunks"), TimeRemainingColumn(),
                                transient=True, console=None)
            self.bar.start()
            self.task = self.bar.add_task("ingest", total=files_total, chunks=0)

    def update(self, files_done: int, chunks_done: int, chunks_total: int = 0, eta: float | None = None) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(self.task, completed=files_done, chunks=chunks_done)
        elif time.monotonic() - self.last_line > 2:
            self.last_line = time.monotonic()
            eta_text = f", ETA {eta:.0f} s" if eta is not None else ""
            print(f"ingest: {files_done} files, {chunks_done} chunks{eta_text}", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _human_ingest(result: Any) -> str:
    lines = [f"{result.state}: {result.files_total} files: {result.sources_added} added, {result.sources_updated} "
             f"updated, {result.sources_unchanged} unchanged, {result.sources_removed} removed; "
             f"{result.chunks_embedded} chunks embedded, {result.chunks_reused} reused"
             + (f" (job {result.job_id})" if result.job_id is not None else "")]
    for item in result.skipped[:20]:
        lines.append(f"  skipped {item.source}: {item.reason}")
    if len(result.skipped) > 20:
        lines.append(f"  ... and {len(result.skipped) - 20} more skipped")
    for item in result.errors[:20]:
        lines.append(f"  error   {item.source}: {item.reason}")
    return "\n".join(lines)


# -- the rest -------------------------------------------------------------------------------------------------


def _search(args: argparse.Namespace) -> None:
    with client_from(args) as client:
        result = client.search(args.query, args.project, k=args.k, path_glob=args.path, file_types=args.type,
                               ingested_after=args.since, max_chars=args.max_chars, use_cache=not args.no_cache,
                               per_file=args.per_file)
    emit(args, result, _human_search)


def _human_search(result: Any) -> str:
    if not result.hits:
        return "no hits"
    lines = []
    for number, hit in enumerate(result.hits, start=1):
        where = f"{hit.source}:{hit.line_start}-{hit.line_end}"
        heading = f"  [{hit.heading}]" if hit.heading else ""
        lines.append(f"{number}. {where}{heading}  ({hit.project}, score {hit.score:.4f}, vector "
                     f"{hit.vector_rank or '-'}, keyword {hit.keyword_rank or '-'})")
        snippet = " ".join(hit.text.split())
        lines.append(f"   {snippet[:300]}{'...' if len(snippet) > 300 else ''}")
    lines.append(f"({result.took_ms:.1f} ms{', cached' if result.cached else ''})")
    return "\n".join(lines)


def _projects(args: argparse.Namespace) -> None:
    with client_from(args) as client:
        result = client.list_projects()

    def human(value: Any) -> str:
        if not value.projects:
            return "no projects"
        rows = [f"{'project':24} {'sources':>8} {'chunks':>8} {'MiB':>8}  last ingest"]
        for project in value.projects:
            last = time.strftime("%Y-%m-%d %H:%M", time.localtime(project.last_ingest_at)) \
                if project.last_ingest_at else "-"
            rows.append(f"{project.name:24} {project.sources:8} {project.chunks:8} "
                        f"{project.bytes / (1 << 20):8.2f}  {last}")
        return "\n".join(rows)

    emit(args, result, human)


def _sources(args: argparse.Namespace) -> None:
    with client_from(args) as client:
        result = client.list_sources(args.project, prefix=args.prefix)
    emit(args, result, lambda value: "\n".join(
        f"{s.chunks:6} chunks {s.bytes:10} B  {s.source}{'' if s.complete else '  (incomplete)'}"
        for s in value.sources) or "no sources")


def _drop(args: argparse.Namespace) -> int:
    if not args.yes and sys.stdin.isatty():
        answer = input(f"delete project {args.project!r} and everything in it? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("kept")
            return 1
    with client_from(args) as client:
        result = client.drop_project(args.project)
    emit(args, result, lambda value: f"dropped {args.project}: {value.chunks} chunks" if value.dropped
         else f"no project {args.project} (nothing to drop)")
    return 0


def _drop_source(args: argparse.Namespace) -> None:
    sources = [os.path.abspath(s) if os.path.exists(s) else s for s in args.sources]
    with client_from(args) as client:
        result = client.drop_source(args.project, sources)
    emit(args, result, lambda value: f"removed {value.removed} sources, {value.chunks} chunks")


def _reindex(args: argparse.Namespace) -> None:
    with client_from(args) as client:
        result = client.reindex(args.project)
    emit(args, result, lambda value: "\n".join(
        [f"{name}: {count} vectors" for name, count in value.projects.items()] + [f"({value.seconds:.1f} s)"]))


def _ingest_status(args: argparse.Namespace) -> None:
    with client_from(args) as client:
        if args.follow and args.job_id is not None:
            job = _follow(client, args.job_id, args)
            result = client.ingest_status(job.job_id)
        else:
            result = client.ingest_status(args.job_id)

    def human(value: Any) -> str:
        if not value.jobs:
            return "no ingestion jobs"
        lines = []
        for job in value.jobs:
            eta = f", ETA {job.eta_s:.0f} s" if job.eta_s is not None else ""
            lines.append(f"job {job.job_id} [{job.project}] {job.state}: files {job.files_done}/{job.files_total}, "
                         f"chunks {job.chunks_done}/{job.chunks_total}, {job.chunks_per_s:.1f} chunks/s{eta}"
                         + (f", {len(job.errors)} errors" if job.errors else "") + (f" ({job.error})" if job.error
                                                                                     else ""))
        return "\n".join(lines)

    emit(args, result, human)
