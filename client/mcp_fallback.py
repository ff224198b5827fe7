"""What ``pirag-mcp`` answers by itself while it has no daemon session, and the texts that say why.

The MCP server is the daemon's (the official SDK, ``pirag.daemon.mcp``); the pump only relays. But a host must get
``initialize`` and the tool list at once even when the daemon is down or still starting, so the pump keeps a
record of what that server answers: ``mcp_snapshot.json``, written by ``python -m pirag.daemon.mcp.snapshot`` from
the daemon's own SDK server (a test fails when it is stale). Without a daemon, ``initialize`` is answered from the
record (with the protocol version negotiated as the SDK does), list requests and ``ping`` with the recorded
results, a tool call with a tool error that says where the daemon was looked for and how to start it, and
anything else with "method not available". That is the whole of the pump's JSON-RPC: it answers, it never runs a
tool.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

SNAPSHOT = Path(__file__).with_name("mcp_snapshot.json")
START_HINT = ("Start it with `systemctl start pirag` (system service) or `pirag serve` (in a terminal), or point "
              "pirag-mcp --socket / PIRAG_SOCKET at the running daemon's socket. The bridge keeps running and "
              "reconnects on the next call.")
PARSE_ERROR = -32700          # JSON-RPC's codes
METHOD_NOT_FOUND = -32601


@cache
def snapshot() -> dict[str, Any]:
    """The recorded answers: ``initialize`` (without the negotiated version), ``protocol_versions``,
    ``latest_protocol_version`` and ``results`` by method (tools/list, prompts/list, ..., ping)."""
    return json.loads(SNAPSHOT.read_text(encoding="utf-8"))


def instructions(base: str, project: str) -> str:
    """The server's instructions for a session: the same text, plus its default project when it has one."""
    return base + (f" The default project is {project!r}." if project else "")


def unreachable(socket: object, reason: str) -> str:
    return f"pirag daemon not reachable at {socket} ({reason}). {START_HINT}"


def lost(socket: object, reason: str) -> str:
    return (f"lost the connection to the pirag daemon at {socket} ({reason}); a write may or may not have been "
            f"applied. {START_HINT}")


def initialize_result(requested_version: Any, project: str) -> dict[str, Any]:
    recorded = snapshot()
    result = dict(recorded["initialize"])
    versions = recorded["protocol_versions"]
    result["protocolVersion"] = (requested_version if requested_version in versions
                                 else recorded["latest_protocol_version"])
    result["instructions"] = instructions(result.get("instructions", ""), project)
    return result


def error(request_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def answer(message: dict[str, Any], project: str, tool_error: str) -> dict[str, Any] | None:
    """The reply to one host message while there is no daemon session; None for notifications and responses."""
    method = message.get("method")
    if "id" not in message or not isinstance(method, str):
        return None
    request_id = message["id"]
    recorded = snapshot()["results"]
    if method == "initialize":
        params = message.get("params")
        result = initialize_result(params.get("protocolVersion") if isinstance(params, dict) else None, project)
    elif method == "tools/call":
        result = {"content": [{"type": "text", "text": tool_error}], "isError": True}
    elif method in recorded:
        result = recorded[method]
    else:
        return error(request_id, METHOD_NOT_FOUND, f"{method} is not available without the daemon: {tool_error}")
    return {"jsonrpc": "2.0", "id": request_id, "result": result}
