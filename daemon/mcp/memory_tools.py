"""The MCP memory tools (``remember``, ``recall``, ``forget``, ``log_episode``, ``timeline``) and
``get_context``, which runs a document search, a fact recall and an episode recall concurrently on the bridge's
one connection and packs the three into one character budget. Shared plumbing is in ``tools``.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from mcp.server.fastmcp import FastMCP
from mcp.types import CallToolResult
from pydantic import Field

from pirag.client.protocol.documents import SearchResult

from .format import Block, Fitted, clip, fit_blocks, one_line, stamp
from .tools import (
    ALL_PROJECTS, DEFAULT_MAX_CHARS, Bridge, MaxChars, ToolFailure, answer, builtins, search_blocks, tool,
)

MemoryProject = Annotated[str | None, Field(description=(
    "Project the memory belongs to; '' is the global project. Omitted: the bridge's default project "
    "(pirag-mcp --project / PIRAG_PROJECT), else the global project."))]
Tags = Annotated[list[str] | None, Field(description="Tags, e.g. ['decision', 'api'].")]
When = Annotated[str, Field(max_length=256, description=(
    "Time range in words: 'today', 'last week', 'past 3 days', 'since monday', '2026-11-01..2026-11-20'. "
    "Empty: any time."))]

# get_context shares its budget: facts up to this part, episodes up to that part, documents the rest.
FACTS_SHARE = 0.3
EPISODES_SHARE = 0.2


def fact_block(hit_or_fact: Any) -> Block:
    fact = getattr(hit_or_fact, "fact", hit_or_fact)
    tags = f"; tags {', '.join(fact.tags)}" if fact.tags else ""
    head = f"[{fact.id}] ({fact.project or 'global'}{tags}; {stamp(fact.updated_at)})"
    data = builtins(fact)
    if hasattr(hit_or_fact, "score"):
        data["score"] = round(hit_or_fact.score, 5)
    return Block(head=head, body=fact.content.strip(), data=data, body_key="content")


def episode_block(hit_or_episode: Any) -> Block:
    episode = getattr(hit_or_episode, "episode", hit_or_episode)
    role = f"/{episode.role}" if episode.role else ""
    project = f" {episode.project}" if episode.project else ""
    head = f"{stamp(episode.timestamp)} [{episode.session}{project}] {episode.kind}{role} ({episode.id})"
    return Block(head=head, body=episode.content.strip(), data=builtins(episode), body_key="content")


def register_memory_tools(server: FastMCP, bridge: Bridge) -> None:
    client = bridge.client

    @tool(server, read_only=True)
    async def get_context(
        task: Annotated[str, Field(min_length=1, max_length=8192, description=(
            "The task or question at hand, in words."))],
        project: Annotated[str | None, Field(description=(
            "Project to draw from ('*': documents of every project, global memory). Omitted: the default "
            "project."))] = None,
        session: Annotated[str | None, Field(description="Only episodes of this session.")] = None,
        when: When = "",
        k_docs: Annotated[int, Field(ge=0, le=50, description="Document chunks to consider.")] = 6,
        k_facts: Annotated[int, Field(ge=0, le=50, description="Facts to consider.")] = 6,
        k_episodes: Annotated[int, Field(ge=0, le=50, description="Episodes to consider.")] = 5,
        max_chars: MaxChars = 6000,
    ) -> CallToolResult:
        """Everything pirag knows that bears on a task, in one call: the relevant remembered facts, the best
        document chunks and related past episodes (newest first), packed into max_chars. Call it at the start
        of a task."""
        doc_projects = bridge.search_projects(project)
        memory_project = "" if project == ALL_PROJECTS else bridge.project(project)

        async def none() -> None:
            return None

        lookups: list[Any] = await asyncio.gather(
            bridge.call(client.search(task, doc_projects, k=k_docs, max_chars=max_chars)) if k_docs else none(),
            bridge.call(client.recall(task, project=memory_project, include_global=bool(memory_project),
                                      k=k_facts)) if k_facts else none(),
            bridge.call(client.recall_episodes(task, session=session, project=memory_project, when=when,
                                               k=k_episodes)) if k_episodes else none(),
            return_exceptions=True)
        if isinstance(lookups[0], ToolFailure) and lookups[0].code == "not_found":
            lookups[0] = SearchResult(hits=[])   # a project with memory but no documents yet
        failures = [item for item in lookups if isinstance(item, BaseException)]
        for item in failures:
            if not isinstance(item, ToolFailure):
                raise item
        if failures and len(failures) == sum(k > 0 for k in (k_docs, k_facts, k_episodes)):
            raise failures[0]   # nothing answered (the daemon is down): one clear tool error
        docs, facts, episodes = (None if isinstance(item, BaseException) else item for item in lookups)
        docs_error, facts_error, episodes_error = (item if isinstance(item, BaseException) else None
                                                   for item in lookups)

        header = f"Context for: {one_line(task, 200)}"
        facts_part = _section("Facts", facts, facts_error, [fact_block(hit) for hit in facts.facts] if facts else [],
                              int(max_chars * FACTS_SHARE))
        episode_hits = sorted(episodes.episodes, key=lambda hit: -hit.episode.timestamp) if episodes else []
        episodes_part = _section("Related episodes", episodes, episodes_error,
                                 [episode_block(hit) for hit in episode_hits], int(max_chars * EPISODES_SHARE))
        # Documents get whatever the facts and episodes leave.
        docs_budget = max_chars - len(header) - len(_text(facts_part)) - len(_text(episodes_part)) - 6
        docs_part = _section("Documents", docs, docs_error, search_blocks(docs.hits) if docs else [], docs_budget)
        parts = [header, _text(facts_part), _text(docs_part), _text(episodes_part)]
        text = clip("\n\n".join(part for part in parts if part), max_chars)
        return answer(text, {
            "task": task, "projects": doc_projects, "memory_project": memory_project,
            "facts": _items(facts_part), "documents": _items(docs_part), "episodes": _items(episodes_part),
            "truncated": any(isinstance(part, Fitted) and part.truncated
                             for part in (facts_part, docs_part, episodes_part)),
            "errors": [str(error) for error in failures]})

    @tool(server, read_only=False, idempotent=False)
    async def remember(
        content: Annotated[str, Field(min_length=1, description="The fact, as one self-contained statement.")],
        project: MemoryProject = None,
        tags: Tags = None,
        source: Annotated[str, Field(max_length=1024, description="Where it comes from (a file, a URL, "
                                                                  "a conversation).")] = "",
        importance: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5,
        max_chars: MaxChars = 2000,
    ) -> CallToolResult:
        """Keep a fact for later (a decision, a preference, a convention, how something works). An exact
        duplicate is not stored twice; similar facts already known are listed so you can forget or keep them."""
        name = bridge.project(project)
        result = await bridge.call(client.remember(content, project=name, tags=tags or (), source=source,
                                                   importance=importance))
        fact = result.fact
        where = repr(fact.project) if fact.project else "the global project"
        if result.created:
            title = f"Remembered fact {fact.id} in {where}."
        elif result.merged:
            title = f"Merged into the similar fact {fact.id} in {where}."
        else:
            title = f"Already known as fact {fact.id} in {where} ({result.duplicate or 'duplicate'}); nothing added."
        blocks = [Block(head=f"similar: [{hit.fact.id}] {one_line(hit.fact.content, 200)}"
                             + (f" (similarity {hit.similarity:.2f})" if hit.similarity is not None else ""),
                        data={"id": hit.fact.id, "content": hit.fact.content, "similarity": hit.similarity})
                  for hit in result.near_duplicates if hit.fact.id != fact.id]
        fitted = fit_blocks(title, blocks, max_chars)
        return answer(fitted.text, {"fact": builtins(fact), "created": result.created,
                                    "duplicate": result.duplicate, "merged": result.merged,
                                    "near_duplicates": fitted.items})

    @tool(server, read_only=True)
    async def recall(
        query: Annotated[str, Field(min_length=1, max_length=8192, description="What you want to know.")],
        project: MemoryProject = None,
        include_global: Annotated[bool, Field(description=(
            "Also search the global project when `project` is another one."))] = True,
        tags: Tags = None,
        tag_mode: Literal["any", "all"] = "any",
        when: When = "",
        k: Annotated[int, Field(ge=1, le=100, description="Number of facts.")] = 8,
        max_chars: MaxChars = DEFAULT_MAX_CHARS,
    ) -> CallToolResult:
        """Search remembered facts (hybrid: meaning + keywords), best first, with optional tag and time filters."""
        name = bridge.project(project)
        result = await bridge.call(client.recall(query, project=name, include_global=include_global and bool(name),
                                                 tags=tags or (), tag_mode=tag_mode, when=when, k=k))
        where = repr(name) if name else "the global project"
        if not result.facts:
            return answer(f"No facts for {one_line(query, 200)!r} in {where}.", {"facts": [], "truncated": False})
        fitted = fit_blocks(f"{len(result.facts)} facts for {one_line(query, 200)!r} in {where}:",
                            [fact_block(hit) for hit in result.facts], max_chars,
                            more_hint="raise max_chars or lower k")
        return answer(fitted.text, {"facts": fitted.items, "truncated": fitted.truncated})

    @tool(server, read_only=False, destructive=True)
    async def forget(
        ids: Annotated[list[str], Field(min_length=1, max_length=4096, description=(
            "Ids of the facts to delete, as recall shows them."))],
    ) -> CallToolResult:
        """Delete facts for good (when they are wrong or outdated). Nothing is deleted if any id is unknown."""
        result = await bridge.call(client.forget(*ids))
        return answer(f"Forgot {result.forgotten} facts.", {"forgotten": result.forgotten, "ids": ids})

    @tool(server, read_only=False, idempotent=False)
    async def log_episode(
        content: Annotated[str, Field(min_length=1, description="What happened, in a sentence or a paragraph.")],
        session: Annotated[str, Field(min_length=1, max_length=256, description=(
            "Session (conversation or task) the event belongs to."))] = "default",
        kind: Annotated[str, Field(min_length=1, max_length=32, description=(
            "message, action, decision, error, result, ..."))] = "message",
        role: Annotated[str, Field(max_length=32, description="user, assistant, tool, ...")] = "",
        project: MemoryProject = None,
    ) -> CallToolResult:
        """Append an event (a decision, an action, an error, a result) to the timeline, so later sessions can
        find out what happened and when."""
        result = await bridge.call(client.log_episode(content, session=session, kind=kind, role=role,
                                                      project=bridge.project(project)))
        episode = result.episode
        text = f"Logged {episode.kind} {episode.id} in session {episode.session!r} at {stamp(episode.timestamp)}."
        return answer(text, {"episode": builtins(episode)})

    @tool(server, read_only=True)
    async def timeline(
        session: Annotated[str | None, Field(description="Only this session.")] = None,
        project: Annotated[str | None, Field(description=(
            "Only this project ('' global, '*' every project). Omitted: the default project, else every project."
        ))] = None,
        kinds: Annotated[list[str] | None, Field(description="Only these kinds, e.g. ['decision'].")] = None,
        when: When = "",
        order: Literal["newest", "oldest"] = "newest",
        limit: Annotated[int, Field(ge=1, le=1000)] = 20,
        cursor: Annotated[str, Field(max_length=128, description="next_cursor of the previous page.")] = "",
        max_chars: MaxChars = DEFAULT_MAX_CHARS,
    ) -> CallToolResult:
        """Past episodes in time order (newest first by default), filtered by session, project, kind and time
        range; page on with the returned cursor."""
        name = (bridge.settings.project or None) if project is None else project
        name = None if name == ALL_PROJECTS else name
        result = await bridge.call(client.timeline(session=session, project=name, kinds=kinds or (), when=when,
                                                   order=order, limit=limit, cursor=cursor))
        footer = f"more: timeline(cursor={result.next_cursor!r})" if result.next_cursor else ""
        title = f"{len(result.episodes)} episodes ({order} first):" if result.episodes else "No episodes."
        fitted = fit_blocks(title, [episode_block(e) for e in result.episodes], max_chars,
                            more_hint="raise max_chars or lower limit", footer=footer)
        return answer(fitted.text, {"episodes": fitted.items, "next_cursor": result.next_cursor,
                                    "truncated": fitted.truncated})


def _text(part: Fitted | str) -> str:
    return part.text if isinstance(part, Fitted) else part


def _items(part: Fitted | str) -> list[dict[str, Any]]:
    return part.items if isinstance(part, Fitted) else []


def _section(title: str, result: Any, error: BaseException | None, blocks: list[Block], budget: int) -> Fitted | str:
    """One part of get_context: its blocks within ``budget``, or why there are none ("" when not asked for)."""
    if error is not None:
        return f"## {title}\n(unavailable: {clip(str(error), 300)})"
    if result is None:
        return ""
    if not blocks:
        return f"## {title}\n(none found)"
    return fit_blocks(f"## {title}", blocks, max(budget, 0), more_hint="raise max_chars")
