"""One client connection: bytes in, frames out, as an ``asyncio.Protocol``.

Frames are cut from the receive buffer synchronously in ``data_received``: no coroutine, no timer and no
await per request, which is what keeps pirag's ping near the bare IPC floor. Timeouts are checked by the
server's tick instead of per-request timers: ``partial_since`` (a frame begun and not finished) and
``last_activity`` (idle). Backpressure uses the transport's flow control: while the peer does not read its
replies (``pause_writing``), we stop reading its requests.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from pirag.client import errors
from pirag.client.framing import HEADER

from .app import Peer
from .endpoint import peer_allowed, peer_of

if TYPE_CHECKING:
    from .server import Server

_HEADER_SIZE = HEADER.size
_unpack_header = HEADER.unpack_from


class Connection(asyncio.Protocol):
    def __init__(self, server: "Server"):
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.peer = Peer(None, None, None)
        self.label = "pid=- uid=-"
        self.buffer = bytearray()
        self.tasks: set[asyncio.Task[None]] = set()
        self.last_activity = time.monotonic()
        self.partial_since: float | None = None
        self.closed = False
        self._write_paused = False
        # Streams opened on this connection (MCP sessions, daemon/mcp/sessions.py), by the opening request's id;
        # they end with the connection.
        self.sessions: dict[int, Any] = {}

    # ----- asyncio.Protocol ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports do not subclass asyncio's
        server = self.server
        limits = server.config.server
        sock = transport.get_extra_info("socket")
        self.peer = peer_of(sock)
        self.label = self.peer.describe()
        if len(server.connections) >= limits.max_connections:
            self.refuse(errors.BUSY, f"too many connections (max {limits.max_connections})")
            return
        if limits.check_peers and not peer_allowed(sock, self.peer, limits.allowed_uids, limits.allowed_gids):
            server.log.warning("refused peer %s: not in allowed_uids/allowed_gids", self.label)
            self.refuse(errors.FORBIDDEN, f"uid {self.peer.uid} is not allowed to use this pirag daemon")
            return
        server.connections.add(self)
        server.metrics.connections_total += 1

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        buffer = self.buffer
        buffer += data
        self.last_activity = time.monotonic()
        max_bytes = self.server.config.server.max_frame_bytes
        offset = 0
        size = len(buffer)
        while size - offset >= _HEADER_SIZE:
            (length,) = _unpack_header(buffer, offset)
            if length > max_bytes:
                self.refuse(errors.FRAME_TOO_LARGE,
                            f"frame of {length} bytes exceeds the limit of {max_bytes} bytes",
                            {"length": length, "limit": max_bytes})
                return
            end = offset + _HEADER_SIZE + length
            if end > size:
                break
            body = bytes(buffer[offset + _HEADER_SIZE:end])
            offset = end
            if not self.server.dispatch(self, body) or self.closed:
                return
        if offset:
            del buffer[:offset]
        self.partial_since = (self.partial_since or self.last_activity) if buffer else None

    def eof_received(self) -> bool:
        return False  # close our side too; in-flight replies are dropped (the peer is gone)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        self.buffer = bytearray()
        self._end_sessions()

    def pause_writing(self) -> None:
        self._write_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    # ----- used by the server ----------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        if not self.closed and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def refuse(self, code: str, message: str, details: dict[str, object] | None = None) -> None:
        """A connection-level error: one error frame with no id, then close."""
        self.server.connection_error(self, code, message, details)
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.server.connections.discard(self)
            if self.transport is not None:
                self.transport.close()  # flushes what is buffered, then closes
        self._end_sessions()

    def _end_sessions(self) -> None:
        for session in list(self.sessions.values()):
            session.close()

    def check_timeouts(self, now: float, idle_timeout_s: float, frame_timeout_s: float) -> str | None:
        """Called from the server's tick; returns why the connection was closed, if it was."""
        if self.partial_since is not None and now - self.partial_since > frame_timeout_s:
            self.close()
            return "frame_timeout"
        # An open MCP session is a long-lived stream by nature: an agent may stay quiet for hours.
        if not self.tasks and not self.sessions and now - self.last_activity > idle_timeout_s:
            self.close()
            return "idle_timeout"
        return None
