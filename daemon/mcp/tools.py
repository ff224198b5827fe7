"""The MCP tools for documents and the daemon (``search``, ``ingest``, ``ingest_status``, ``list_projects``,
``list_sources``, ``drop``, ``status``) and the ``Bridge`` they are given.

Each tool is a typed function whose docstring is its description and whose annotated parameters are its JSON
schema. It makes one or two client calls and turns the result into compact text (within ``max_chars``) plus
structured content. A daemon error becomes a tool error carrying the daemon's message. The tools are registered
once and serve every MCP session: the ``Bridge`` gives them the settings and the daemon client of the session
whose request they are answering. Memory tools and ``get_context`` are in ``memory_tools``.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec
from mcp.server.fastmcp import FastMCP
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from pirag.client.api_core import CoreMethods
from pirag.client.api_documents import DocumentsMethods
from pirag.client.api_embed import EmbedMethods
from pirag.client.api_memory import MemoryMethods
from pirag.client.api_watch import WatchMethods
from pirag.client.errors import ConnectionFailed, PiragError, RequestTimeout
from pirag.client.mcp_fallback import lost, unreachable
from pirag.client.protocol import Args, OpSpec
from pirag.client.protocol.documents import DocumentIn

from .format import Block, clip, duration, fit_blocks, lines_of, one_line, size, stamp

T = TypeVar("T")

DEFAULT_MAX_CHARS = 4000
ALL_PROJECTS = "*"

MaxChars = Annotated[int, Field(ge=200, le=200_000, description=(
    "Character budget of the answer; longer results are cut and the cut is reported."))]
ProjectArg = Annotated[str | None, Field(description=(
    "Project name. Omitted: the bridge's default project (pirag-mcp --project / PIRAG_PROJECT)."))]


class ToolFailure(Exception):
    """Raised inside a tool: its message becomes the tool error the model sees (``code``: the daemon's)."""

    def __init__(self, message: str, code: str = ""):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class BridgeSettings:
    socket: Path | str
    project: str = ""          # the default project; "" for none
    timeout: float = 120.0     # seconds to wait for one reply (ingest with wait=true can take a while)
    cwd: str = ""              # relative ingest paths start here ("": this process's working directory)


Caller = Callable[[OpSpec, Args], Awaitable[Any]]


@dataclass(frozen=True)
class SessionScope:
    """One MCP session as its tools see it: its settings and how its daemon calls are made."""

    settings: BridgeSettings
    call: Caller


# The session whose request is being answered. The daemon sets it in each session's task; the SDK handles every
# request of a session in a child task of that one, which inherits it.
CURRENT_SESSION: ContextVar[SessionScope] = ContextVar("pirag_mcp_session")


class ScopedClient(CoreMethods, EmbedMethods, DocumentsMethods, MemoryMethods, WatchMethods):
    """The client API the tools call: every call goes out through the current session's ``call``."""

    def __init__(self, bridge: "Bridge"):
        self._bridge = bridge

    def _call(self, spec: OpSpec, args: Args) -> Awaitable[Any]:
        return self._bridge.scope.call(spec, args)


class Bridge:
    """What the tools are given: the current session's settings and a client for its daemon calls. With
    ``fixed``, one session for the process's lifetime (a stdio server of its own); without, the session of
    ``CURRENT_SESSION`` (the daemon, serving every session with one set of tools)."""

    def __init__(self, fixed: SessionScope | None = None):
        self._fixed = fixed
        self.client = ScopedClient(self)

    @property
    def scope(self) -> SessionScope:
        return self._fixed or CURRENT_SESSION.get()

    @property
    def settings(self) -> BridgeSettings:
        return self.scope.settings

    async def call(self, awaitable: Awaitable[T]) -> T:
        """Await one client call; pirag errors become ``ToolFailure`` with a message for the model."""
        try:
            return await awaitable
        except ConnectionFailed as exc:
            raise ToolFailure(self.unreachable(exc)) from exc
        except RequestTimeout as exc:
            raise ToolFailure(f"the pirag daemon did not answer in time: {exc.message}") from exc
        except PiragError as exc:
            raise ToolFailure(f"pirag daemon error ({exc.code}): {exc.message}", exc.code) from exc

    def unreachable(self, exc: ConnectionFailed) -> str:
        if "socket" in exc.details:          # the connect itself failed
            cause = exc.__cause__
            return unreachable(self.settings.socket, getattr(cause, "strerror", None) or str(cause or exc.message))
        return lost(self.settings.socket, exc.message)

    def project(self, given: str | None) -> str:
        """The project a memory call uses: the given one ("" is the global project), else the default."""
        return self.settings.project if given is None else given

    def required_project(self, given: str | None) -> str:
        name = self.settings.project if given is None else given
        if not name or name == ALL_PROJECTS:
            raise ToolFailure("name a project (the `project` argument), or start pirag-mcp with --project / "
                              "PIRAG_PROJECT to set a default")
        return name

    def search_projects(self, given: str | None) -> list[str]:
        name = self.settings.project if given is None else given
        return [] if name in ("", ALL_PROJECTS) else [name]


def answer(text: str, structured: dict[str, Any]) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], structuredContent=structured)


def failure(message: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=message)], isError=True)


def builtins(value: Any) -> Any:
    return msgspec.to_builtins(value)


def tool(server: FastMCP, *, read_only: bool, destructive: bool = False,
         idempotent: bool = True) -> Callable[[Callable[..., Awaitable[CallToolResult]]], Any]:
    """Register a tool function: its name, docstring and signature are the tool's name, description and schema.
    A ``ToolFailure`` it raises is answered as a tool error with that message alone."""

    def register(fn: Callable[..., Awaitable[CallToolResult]]) -> Any:
        @functools.wraps(fn)
        async def run(**kwargs: Any) -> CallToolResult:
            try:
                return await fn(**kwargs)
            except ToolFailure as exc:
                return failure(str(exc))

        annotations = ToolAnnotations(readOnlyHint=read_only, destructiveHint=destructive,
                                      idempotentHint=idempotent, openWorldHint=False)
        server.add_tool(run, name=fn.__name__, description=inspect.getdoc(fn), annotations=annotations)
        return fn

    return register


def search_blocks(hits: list[Any]) -> list[Block]:
    blocks = []
    for rank, hit in enumerate(hits, 1):
        heading = f" § {one_line(hit.heading, 80)}" if hit.heading else ""
        head = f"[{rank}] {hit.project}/{lines_of(hit.source, hit.line_start, hit.line_end)}{heading}"
        data = {"project": hit.project, "source": hit.source, "line_start": hit.line_start,
                "line_end": hit.line_end, "heading": hit.heading, "file_type": hit.file_type,
                "score": round(hit.score, 5), "chunk_id": hit.chunk_id, "text": hit.text}
        blocks.append(Block(head=head, body=hit.text.strip(), data=data, body_key="text"))
    return blocks


def register_document_tools(server: FastMCP, bridge: Bridge) -> None:
    client = bridge.client

    @tool(server, read_only=True)
    async def search(
        query: Annotated[str, Field(min_length=1, max_length=8192, description="What to look for, in words.")],
        project: Annotated[str | None, Field(description=(
            "Project to search; '*' searches every project. Omitted: the default project, or every project "
            "when the bridge has none."))] = None,
        k: Annotated[int, Field(ge=1, le=50, description="Number of chunks to return.")] = 8,
        path_glob: Annotated[str, Field(max_length=1024, description="Only sources matching this glob, "
                                                                     "e.g. 'src/**/*.py'.")] = "",
        file_types: Annotated[list[str] | None, Field(description="Only these file types, e.g. ['md', 'py'].")]
        = None,
        max_chars: MaxChars = DEFAULT_MAX_CHARS,
    ) -> CallToolResult:
        """Search the ingested documents (hybrid: meaning + keywords) and return the best chunks, each with its
        source file, line range and heading. Use it to find where something is described or implemented."""
        projects = bridge.search_projects(project)
        result = await bridge.call(client.search(query, projects, k=k, path_glob=path_glob,
                                                 file_types=file_types or (), max_chars=max_chars))
        where = ", ".join(projects) if projects else "every project"
        if not result.hits:
            text = f"No hits for {one_line(query, 200)!r} in {where} (list_projects shows what is ingested)."
            return answer(text, {"query": query, "projects": projects, "hits": [], "truncated": False})
        title = f"{len(result.hits)} hits for {one_line(query, 200)!r} in {where}:"
        fitted = fit_blocks(title, search_blocks(result.hits), max_chars,
                            more_hint="raise max_chars, lower k or narrow the query")
        return answer(fitted.text, {"query": query, "projects": projects, "hits": fitted.items,
                                    "truncated": fitted.truncated or result.truncated, "cached": result.cached,
                                    "took_ms": round(result.took_ms, 2)})

    @tool(server, read_only=False)
    async def ingest(
        paths: Annotated[list[str] | None, Field(description=(
            "Files or directories to ingest, read by the daemon (they must be under its allowed roots); "
            "relative paths are taken from the bridge's working directory."))] = None,
        text: Annotated[str | None, Field(description="Text to ingest instead of (or besides) files.")] = None,
        source: Annotated[str | None, Field(max_length=4096, description=(
            "Name of the text's document, e.g. 'notes/design.md' (its extension picks the format); "
            "required with `text`. Ingesting the same name again replaces it."))] = None,
        project: ProjectArg = None,
        wait: Annotated[bool, Field(description=(
            "Wait for a large ingestion to finish instead of returning its job id."))] = False,
        watch: Annotated[bool, Field(description=(
            "Also keep watching the given directories: later edits, new files, deletions and renames are "
            "ingested by the daemon within seconds (until `pirag watch remove`)."))] = False,
        max_chars: MaxChars = 2000,
    ) -> CallToolResult:
        """Add files, directories or a text to a project's documents (unchanged files are skipped, changed ones
        re-indexed). Large ingestions run in the background: follow them with ingest_status."""
        name = bridge.required_project(project)
        if not paths and text is None:
            raise ToolFailure("give `paths` (files or directories) or `text` with a `source` name")
        documents = []
        if text is not None:
            if not source:
                raise ToolFailure("`text` needs a `source` name, e.g. 'notes/meeting.md'")
            documents.append(DocumentIn(source=source, text=text))
        absolute = [os.path.abspath(os.path.join(bridge.settings.cwd, path)) for path in paths or ()]
        folders = [path for path in absolute if os.path.isdir(path)]
        if watch and not folders:  # refused before anything is ingested
            raise ToolFailure("`watch` needs directories among `paths`")
        result = await bridge.call(client.ingest(name, absolute, documents=documents, wait=wait))
        structured = builtins(result) | {"project": name}
        watching = ""
        if watch:
            added = await bridge.call(client.watch_add(name, folders))
            structured["watches"] = builtins(added.watches)
            watching = f" Watching {', '.join(folders)} for changes."
        if result.state in ("queued", "running"):
            text_out = (f"Ingest job #{result.job_id} {result.state} in project {name!r} "
                        f"({result.files_done}/{result.files_total} files). "
                        f"Follow it with ingest_status(job_id={result.job_id}).{watching}")
            return answer(clip(text_out, max_chars), structured)
        title = (f"Ingested into {name!r} ({result.state}): {result.sources_added} added, {result.sources_updated} "
                 f"updated, {result.sources_unchanged} unchanged, {result.sources_removed} removed; "
                 f"{result.chunks_total} chunks ({result.chunks_embedded} embedded, {result.chunks_reused} reused), "
                 f"{result.tokens} tokens, {result.seconds:.1f} s.{watching}")
        blocks = [Block(head=f"error: {item.source}: {item.reason}") for item in result.errors]
        blocks += [Block(head=f"skipped: {item.source}: {item.reason}") for item in result.skipped]
        fitted = fit_blocks(title, blocks, max_chars)
        return answer(fitted.text, structured)

    @tool(server, read_only=True)
    async def ingest_status(
        job_id: Annotated[int | None, Field(description="One job; omitted: the most recent jobs.")] = None,
        limit: Annotated[int, Field(ge=1, le=100, description="How many recent jobs.")] = 5,
        max_chars: MaxChars = 2000,
    ) -> CallToolResult:
        """Progress of ingestion jobs: state, files and chunks done of total, rate, time left, errors."""
        result = await bridge.call(client.ingest_status(job_id, limit=limit))
        blocks = []
        for job in result.jobs:
            head = (f"#{job.job_id} {job.project}: {job.state}, files {job.files_done}/{job.files_total}, "
                    f"chunks {job.chunks_done}/{job.chunks_total}")
            if job.state == "running":
                head += f", {job.chunks_per_s:.0f} chunks/s"
                head += f", ETA {duration(job.eta_s)}" if job.eta_s is not None else ""
            head += f", {len(job.errors)} errors" if job.errors else ""
            head += f" ({one_line(job.error, 200)})" if job.error else ""
            head += f", started {stamp(job.started_at)}"
            data = builtins(job)
            data.pop("result", None)
            blocks.append(Block(head=head, data=data))
        fitted = fit_blocks(f"{len(result.jobs)} ingestion jobs:" if result.jobs else "No ingestion jobs.",
                            blocks, max_chars)
        return answer(fitted.text, {"jobs": fitted.items, "truncated": fitted.truncated})

    @tool(server, read_only=True)
    async def list_projects(max_chars: MaxChars = DEFAULT_MAX_CHARS) -> CallToolResult:
        """The document projects with their sources, chunks, size and last ingestion time."""
        result = await bridge.call(client.list_projects())
        blocks = [Block(head=f"{p.name}: {p.sources} sources, {p.chunks} chunks, {size(p.bytes)}, "
                             f"last ingest {stamp(p.last_ingest_at)}",
                        data={"name": p.name, "sources": p.sources, "chunks": p.chunks, "bytes": p.bytes,
                              "last_ingest_at": p.last_ingest_at})
                  for p in result.projects]
        default = f" (default: {bridge.settings.project})" if bridge.settings.project else ""
        title = f"{len(blocks)} projects{default}:" if blocks else f"No projects yet{default}."
        fitted = fit_blocks(title, blocks, max_chars)
        return answer(fitted.text, {"projects": fitted.items, "default_project": bridge.settings.project,
                                    "truncated": fitted.truncated})

    @tool(server, read_only=True)
    async def list_sources(
        project: ProjectArg = None,
        prefix: Annotated[str, Field(max_length=4096, description="Only sources starting with this.")] = "",
        limit: Annotated[int, Field(ge=1, le=10_000)] = 200,
        offset: Annotated[int, Field(ge=0)] = 0,
        max_chars: MaxChars = DEFAULT_MAX_CHARS,
    ) -> CallToolResult:
        """The sources (files and named texts) of a project with their type, chunks, size and ingestion time."""
        name = bridge.required_project(project)
        result = await bridge.call(client.list_sources(name, prefix=prefix, limit=limit, offset=offset))
        blocks = []
        for s in result.sources:
            note = "" if s.complete else f", incomplete{': ' + one_line(s.note, 120) if s.note else ''}"
            blocks.append(Block(head=f"{s.source} ({s.file_type}, {s.chunks} chunks, {size(s.bytes)}, "
                                     f"{stamp(s.ingested_at)}{note})", data=builtins(s)))
        more = f"more: list_sources(offset={offset + limit})" if len(blocks) == limit else ""
        fitted = fit_blocks(f"{name}: {len(blocks)} sources from offset {offset}:", blocks, max_chars,
                            more_hint="use prefix, offset or a larger max_chars", footer=more)
        return answer(fitted.text, {"project": name, "sources": fitted.items, "truncated": fitted.truncated,
                                    "next_offset": offset + limit if more else None})

    @tool(server, read_only=False, destructive=True)
    async def drop(
        project: Annotated[str | None, Field(description=(
            "The project. Dropping a whole project needs it named explicitly (not the default)."))] = None,
        sources: Annotated[list[str] | None, Field(description=(
            "Sources to remove from the project (names as list_sources shows them). Omitted: drop the "
            "whole project (needs confirm=true)."))] = None,
        confirm: Annotated[bool, Field(description=(
            "Must be true to drop a whole project: its documents, vectors, facts and episodes."))] = False,
    ) -> CallToolResult:
        """Remove sources from a project, or delete a whole project (documents, vectors and its memory) when
        no sources are given and confirm is true. Deletion cannot be undone."""
        if sources:
            name = bridge.required_project(project)
            result = await bridge.call(client.drop_source(name, sources))
            return answer(f"Removed {result.removed} of {len(sources)} sources ({result.chunks} chunks) from {name!r}.",
                          {"project": name, "removed": result.removed, "chunks": result.chunks})
        if not project or project == ALL_PROJECTS:
            raise ToolFailure("to drop a whole project, name it explicitly: drop(project='NAME', confirm=true); "
                              "to remove files, pass `sources`")
        if not confirm:
            raise ToolFailure(f"dropping project {project!r} deletes all its documents, vectors, facts and episodes "
                              f"for good: call drop(project={project!r}, confirm=true) to do it")
        result = await bridge.call(client.drop_project(project))
        memory = ", ".join(f"{count} {kind}" for kind, count in result.memory.items() if count)
        text = (f"Dropped project {project!r}: {result.chunks} chunks{', ' + memory if memory else ''}."
                if result.dropped else f"No project {project!r}: nothing dropped.")
        return answer(text, {"project": project, "dropped": result.dropped, "chunks": result.chunks,
                             "memory": dict(result.memory)})

    @tool(server, read_only=True)
    async def status(max_chars: MaxChars = 2000) -> CallToolResult:
        """The daemon's health and figures: version, uptime, memory, connections, requests, errors, components."""
        result = await bridge.call(client.status())
        requests = sum(result.requests_by_op.values())
        errors = ", ".join(f"{code} {n}" for code, n in sorted(result.errors_by_code.items())) or "none"
        title = (f"pirag {result.version} (protocol {result.protocol}, pid {result.pid}) up "
                 f"{duration(result.uptime_s)}, RSS {size(result.rss_bytes)}, socket {result.socket}\n"
                 f"connections {result.connections} open / {result.connections_total} total, {result.inflight} in "
                 f"flight, {requests} requests, errors: {errors}, loop lag p99 {result.loop_lag.p99_ms:.1f} ms\n"
                 f"bridge: default project {bridge.settings.project or '(none)'}")
        blocks = [Block(head=f"{name}: " + ", ".join(f"{key}={_short(value)}" for key, value in figures.items()))
                  for name, figures in result.components.items()]
        fitted = fit_blocks(title, blocks, max_chars)
        structured = builtins(result)
        structured.pop("config", None)
        structured["components"] = {name: structured["components"][name] for name in list(result.components)
                                    [:fitted.shown]}
        structured["bridge"] = {"socket": str(bridge.settings.socket), "default_project": bridge.settings.project}
        return answer(fitted.text, structured)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (dict, list)):
        return clip(msgspec.json.encode(value).decode(), 120)
    return clip(str(value), 120)
