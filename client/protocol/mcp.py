"""The MCP session ops: MCP messages carried both ways inside pirag frames, on the daemon's own socket.

``mcp_open`` starts an MCP session on the connection; the id of that request names the session (its stream).
The daemon answers it once with ``McpOpenResult``; after that every message its MCP server sends is one more
reply on the same id, ``{id: <open id>, result: McpMessage}``, and an error reply on that id (``unavailable``)
means the daemon ended the session. The client sends its messages with ``mcp_send``, answered only when it
fails (``not_found``: no such session here; ``busy``: too many messages queued). ``mcp_close`` ends a session;
closing the connection ends all of its sessions. A message is one JSON-RPC message as MCP's stdio transport
writes it (one line of JSON, without the newline): the daemon's MCP SDK parses and writes them, the carrier
never looks inside. See docs/MCP.md.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from .base import MAX_NAME, MAX_TEXT, Args, Result, define_op

MAX_PATH = 4096


class McpOpenArgs(Args):
    # The session's settings, from pirag-mcp's command line and environment.
    project: Annotated[str, msgspec.Meta(max_length=MAX_NAME)] = ""     # default project; "" for none
    cwd: Annotated[str, msgspec.Meta(max_length=MAX_PATH)] = ""         # relative ingest paths start here
    socket: Annotated[str, msgspec.Meta(max_length=MAX_PATH)] = ""      # the socket as the client named it
    timeout: Annotated[float, msgspec.Meta(gt=0, le=86_400)] = 120.0    # seconds for one daemon call of a tool
    client: Annotated[str, msgspec.Meta(max_length=MAX_NAME)] = ""      # who opens it, for the log


class McpOpenResult(Result):
    session: int
    server_version: str


class McpMessage(Result):
    """One message of the daemon's MCP server, sent as a reply on the session's id."""

    message: str
    # The JSON-RPC id this message answers, when it is a response or an error (lets a client that relays
    # messages know which of its requests are still open without parsing every answer).
    answers: int | str | None = None


class McpSendArgs(Args):
    session: Annotated[int, msgspec.Meta(ge=0)]
    message: Annotated[str, msgspec.Meta(max_length=MAX_TEXT)]


class McpSendResult(Result):
    """Never sent: a message that was queued gets no reply (its answer comes as an ``McpMessage``)."""


class McpCloseArgs(Args):
    session: Annotated[int, msgspec.Meta(ge=0)]


class McpCloseResult(Result):
    closed: bool


MCP_OPEN = define_op("mcp_open", McpOpenArgs, McpOpenResult, idempotent=False,
                     summary="Open an MCP session on this connection; its messages then stream as replies on this id.")
MCP_SEND = define_op("mcp_send", McpSendArgs, McpSendResult, idempotent=False,
                     summary="One MCP message (JSON-RPC text) for a session; answered only if it fails.")
MCP_CLOSE = define_op("mcp_close", McpCloseArgs, McpCloseResult, idempotent=True,
                      summary="End an MCP session (closing the connection ends its sessions too).")
