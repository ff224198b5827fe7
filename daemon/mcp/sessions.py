"""MCP sessions on the daemon's own connections: the ``mcp_open``, ``mcp_send`` and ``mcp_close`` ops.

A session is opened on a connection (the id of its ``mcp_open`` names it), lives in ``connection.sessions`` and
ends when the client closes it, when its connection goes away (the pump exits, the host is gone), or when the
daemon stops; its state (settings, SDK session, tasks, loopback calls) goes with it. The server routes these three
ops here before its normal dispatch, because a session streams: the daemon's MCP messages go out as more replies
on the opening id (``client/protocol/mcp.py``). The connection is an ordinary one, so the socket's modes, the
peer-credential check and systemd socket activation apply to MCP as to every client.

The SDK server (``sdk_server``) is imported in a thread on the first ``mcp_open``: a daemon nobody reaches
through MCP never loads the SDK or pydantic, and the event loop keeps serving while the first session waits.
Messages that arrive meanwhile wait in the session's backlog.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pirag.client import errors
from pirag.client.protocol import Reply
from pirag.client.protocol.mcp import McpCloseResult, McpMessage, McpOpenArgs, McpOpenResult
from pirag.client.version import __version__

from .loopback import LoopbackConnection

if TYPE_CHECKING:
    from ..connection import Connection
    from ..server import Server
    from .sdk_server import SdkServer, SdkSession

log = logging.getLogger("pirag.mcp")

MAX_SESSIONS_PER_CONNECTION = 8
BACKLOG = 256            # messages a session holds while the SDK is still loading
StreamOp = Callable[["Connection", Any], str]


class McpSession:
    """One session: its settings, its loopback for the tools' daemon calls, and the task that runs it."""

    def __init__(self, manager: "McpSessions", connection: "Connection", stream_id: int, args: McpOpenArgs):
        self.manager = manager
        self.connection = connection
        self.stream_id = stream_id
        self.args = args
        self.loopback = LoopbackConnection(manager.server, connection.peer, f"{connection.label} mcp#{stream_id}",
                                           args.timeout)
        self.backlog: list[str] = []
        self.sdk_session: SdkSession | None = None
        self.closed = False
        self.task = asyncio.get_running_loop().create_task(self._run())
        manager.tasks.add(self.task)
        self.task.add_done_callback(manager.tasks.discard)

    def feed(self, text: str) -> None:
        """One client message; ``Busy`` when too many are queued."""
        if self.sdk_session is None:
            if len(self.backlog) >= BACKLOG:
                raise errors.Busy(f"MCP session {self.stream_id}: {BACKLOG} messages queued while the MCP server "
                                  "loads")
            self.backlog.append(text)
        elif not self.sdk_session.deliver(text):
            raise errors.Busy(f"MCP session {self.stream_id}: too many messages queued")

    def send(self, text: str, answers: int | str | None) -> None:
        self.connection.send(self.manager.encode_frame(
            Reply(id=self.stream_id, result=McpMessage(message=text, answers=answers))))

    async def _run(self) -> None:
        reason = "the MCP server stopped"
        try:
            sdk = await self.manager.sdk_server()
            self.sdk_session = sdk.session(self.args, self.loopback.call, self.send)
            backlog, self.backlog = self.backlog, []
            for text in backlog:
                self.feed(text)
            await self.sdk_session.run()
        except asyncio.CancelledError:
            raise
        except errors.PiragError as exc:   # the SDK server could not be loaded (logged once, by _load)
            reason = exc.message
        except Exception as exc:   # a session's failure must end that session only
            log.exception("MCP session %s of %s failed", self.stream_id, self.connection.label)
            reason = f"the MCP session failed: {type(exc).__name__}: {exc}"
        finally:
            if not self.closed:     # it ended by itself: tell the client, whose stream is still open
                self.close()
                self.connection.send(self.manager.error_frame(self.stream_id, errors.UNAVAILABLE, reason))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.connection.sessions.pop(self.stream_id, None)
        self.manager.active.discard(self)
        self.loopback.close()
        if asyncio.current_task() is not self.task:   # else it is ending already
            self.task.cancel()


class McpSessions:
    """Every session of the daemon, the three ops, and the SDK server loaded on first use."""

    def __init__(self, server: "Server"):
        # Imported here, not at the top: server.py imports this module while it is itself being imported.
        from ..server import encode_frame, error_frame

        self.server = server
        self.encode_frame = encode_frame
        self.error_frame = error_frame
        self.active: set[McpSession] = set()
        self.tasks: set[asyncio.Task[None]] = set()   # sessions' tasks, until they have unwound
        self.opened_total = 0
        self.sdk_load_s: float | None = None
        self._sdk: asyncio.Future[SdkServer] | None = None

    def ops(self) -> dict[str, StreamOp]:
        return {"mcp_open": self._open, "mcp_send": self._send, "mcp_close": self._close}

    async def sdk_server(self) -> "SdkServer":
        if self._sdk is None:
            self._sdk = asyncio.ensure_future(self._load())
            # Read a load failure here too, so it is never an "exception never retrieved" when no session waits.
            self._sdk.add_done_callback(lambda future: future.cancelled() or future.exception())
        return await asyncio.shield(self._sdk)

    async def _load(self) -> "SdkServer":
        started = time.perf_counter()
        try:
            module = await asyncio.to_thread(importlib.import_module, "pirag.daemon.mcp.sdk_server")
            sdk: SdkServer = await asyncio.to_thread(module.SdkServer)
        except Exception as exc:
            log.exception("cannot load the MCP server")
            raise errors.Unavailable(f"this daemon cannot serve MCP: {type(exc).__name__}: {exc}") from exc
        self.sdk_load_s = round(time.perf_counter() - started, 3)
        log.info("MCP server loaded in %.2f s (first session)", self.sdk_load_s)
        return sdk

    def _open(self, connection: "Connection", request: Any) -> str:
        if request.id in connection.sessions:
            connection.send(self.error_frame(request.id, errors.INVALID_ARGUMENT,
                                             f"an MCP session with id {request.id} is already open here"))
            return errors.INVALID_ARGUMENT
        if len(connection.sessions) >= MAX_SESSIONS_PER_CONNECTION:
            connection.send(self.error_frame(request.id, errors.BUSY, "too many MCP sessions on this connection "
                                             f"(max {MAX_SESSIONS_PER_CONNECTION})"))
            return errors.BUSY
        session = McpSession(self, connection, request.id, request.args)
        connection.sessions[request.id] = session
        self.active.add(session)
        self.opened_total += 1
        connection.send(self.encode_frame(Reply(id=request.id, result=McpOpenResult(session=request.id,
                                                                                     server_version=__version__))))
        log.info("MCP session %s opened by %s (%s, project %r)", request.id, connection.label,
                 request.args.client or "-", request.args.project)
        return "ok"

    def _send(self, connection: "Connection", request: Any) -> str:
        session = connection.sessions.get(request.args.session)
        try:
            if session is None:
                raise errors.NotFound(f"no MCP session {request.args.session} on this connection (it ended or was "
                                      "never opened)")
            session.feed(request.args.message)
        except errors.PiragError as exc:
            connection.send(self.error_frame(request.id, exc.code, exc.message))
            return exc.code
        return "ok"

    def _close(self, connection: "Connection", request: Any) -> str:
        session = connection.sessions.get(request.args.session)
        if session is not None:
            session.close()
        connection.send(self.encode_frame(Reply(id=request.id, result=McpCloseResult(closed=session is not None))))
        return "ok"

    async def close(self, timeout: float = 2.0) -> None:
        """At shutdown: end every session and give their tasks a moment to unwind."""
        for session in list(self.active):
            session.close()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=timeout)

    def stats(self) -> dict[str, Any]:
        return {"sessions_open": len(self.active), "sessions_total": self.opened_total,
                "sdk_loaded": self.sdk_load_s is not None, "sdk_load_s": self.sdk_load_s}
