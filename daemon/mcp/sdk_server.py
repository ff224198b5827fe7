"""The daemon's one MCP server: the official SDK's FastMCP with pirag's tools, run once per session.

Imported on the first MCP session only (``sessions`` loads it in a thread): it imports the SDK and pydantic,
which a daemon nobody reaches through MCP never pays for. Every session runs the same low-level server
(``Server.run``) over its own pair of in-memory anyio streams, with its own initialization options (the
instructions name its default project) and ``CURRENT_SESSION`` set for its task, so the tools answer with that
session's settings and make their daemon calls through that session's ``LoopbackConnection``. The SDK parses and
writes every message (``SdkSession``: what its stdio transport does with a line): no JSON-RPC here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
from mcp import types
from mcp.server.fastmcp import FastMCP
from mcp.server.models import InitializationOptions
from mcp.shared.message import SessionMessage

from pirag.client.mcp_fallback import instructions
from pirag.client.protocol.mcp import McpOpenArgs
from pirag.client.version import __version__

from .memory_tools import register_memory_tools
from .tools import CURRENT_SESSION, Bridge, BridgeSettings, Caller, SessionScope, register_document_tools

INSTRUCTIONS = """\
pirag is this machine's local memory: ingested documents (search), remembered facts (remember, recall, forget) \
and a timeline of past episodes (log_episode, timeline). At the start of a task call get_context with the task; \
remember durable facts (decisions, conventions, preferences) and log notable events with log_episode. \
Every answer respects max_chars."""
# Messages a session may have queued towards the server before it reads them (then the client gets busy).
QUEUE = 256


def build_fastmcp(bridge: Bridge, log_level: str = "WARNING") -> FastMCP:
    """The FastMCP server with every tool registered on ``bridge``."""
    server = FastMCP("pirag", instructions=INSTRUCTIONS, log_level=log_level)  # type: ignore[arg-type]
    server._mcp_server.version = __version__   # serverInfo.version: pirag's, not the SDK's
    register_memory_tools(server, bridge)
    register_document_tools(server, bridge)
    return server


class SdkServer:
    """The tools registered once, on a ``Bridge`` that follows ``CURRENT_SESSION``."""

    def __init__(self) -> None:
        self.fastmcp = build_fastmcp(Bridge())
        self.lowlevel = self.fastmcp._mcp_server
        self._options = self.lowlevel.create_initialization_options()
        # The SDK logs every request at INFO; the daemon's request log already has one line per tool call.
        logging.getLogger("mcp").setLevel(max(logging.WARNING, logging.getLogger().level))

    def options(self, project: str) -> InitializationOptions:
        return self._options.model_copy(update={"instructions": instructions(INSTRUCTIONS, project)})

    def session(self, args: McpOpenArgs, call: Caller, send: Callable[[str, int | str | None], None]) -> "SdkSession":
        settings = BridgeSettings(socket=args.socket, project=args.project, timeout=args.timeout, cwd=args.cwd)
        return SdkSession(self, SessionScope(settings=settings, call=call), send)


class SdkSession:
    """One MCP session on the SDK server: client messages in through ``deliver``, server messages out through
    ``send`` (text and the id it answers), until ``run`` ends (the task is cancelled, or the server stops)."""

    def __init__(self, sdk: SdkServer, scope: SessionScope, send: Callable[[str, int | str | None], None]):
        self.sdk = sdk
        self.scope = scope
        self.send = send
        self._to_server, self._incoming = anyio.create_memory_object_stream[SessionMessage | Exception](QUEUE)
        self._outgoing, self._from_server = anyio.create_memory_object_stream[SessionMessage](QUEUE)

    def deliver(self, text: str) -> bool:
        """Queue one client message (parsed as the SDK's stdio transport parses a line; a bad one goes on as
        the error, which the SDK answers); False when the queue is full."""
        try:
            message: SessionMessage | Exception = SessionMessage(types.JSONRPCMessage.model_validate_json(text))
        except Exception as exc:
            message = exc
        try:
            self._to_server.send_nowait(message)
        except anyio.WouldBlock:
            return False
        return True

    async def run(self) -> None:
        CURRENT_SESSION.set(self.scope)   # this task's context: the SDK's handler tasks are its children
        async with self._to_server, self._from_server, anyio.create_task_group() as group:
            group.start_soon(self._write)
            await self.sdk.lowlevel.run(self._incoming, self._outgoing, self.sdk.options(self.scope.settings.project))
            group.cancel_scope.cancel()

    async def _write(self) -> None:
        async for session_message in self._from_server:
            message = session_message.message
            root = message.root
            answers = root.id if isinstance(root, (types.JSONRPCResponse, types.JSONRPCError)) else None
            # As the SDK's stdio transport writes a message.
            self.send(message.model_dump_json(by_alias=True, exclude_none=True), answers)
