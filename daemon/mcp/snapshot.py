"""Records what the daemon's MCP server answers to ``initialize`` and to the list requests into
``client/mcp_snapshot.json``: the answers ``pirag-mcp`` gives by itself while it has no daemon session
(client/mcp_fallback.py). The record is made by the SDK server itself, through the same session class the daemon
runs; tests/mcp/test_snapshot.py fails when it is stale (after a tool, a schema or a description changed).

    python -m pirag.daemon.mcp.snapshot            # rewrite client/mcp_snapshot.json
    python -m pirag.daemon.mcp.snapshot --check    # exit 1 when it is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import anyio
from mcp.shared.version import SUPPORTED_PROTOCOL_VERSIONS
from mcp.types import LATEST_PROTOCOL_VERSION

from pirag.client.mcp_fallback import SNAPSHOT
from pirag.client.protocol import Args, OpSpec
from pirag.client.protocol.mcp import McpOpenArgs
from pirag.client.version import __version__

from .sdk_server import SdkServer

# What the pump answers from the record; everything else needs the daemon.
RECORDED = ("tools/list", "prompts/list", "resources/list", "resources/templates/list", "ping")


async def _no_daemon_call(spec: OpSpec, args: Args) -> Any:
    raise RuntimeError(f"recording the snapshot calls no tool ({spec.name})")


async def record() -> dict[str, Any]:
    replies: dict[Any, Any] = {}
    complete = anyio.Event()

    def collect(text: str, answers: int | str | None) -> None:
        replies[answers] = json.loads(text)
        if len(replies) == 1 + len(RECORDED):
            complete.set()

    session = SdkServer().session(McpOpenArgs(), _no_daemon_call, collect)
    session.deliver(json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": LATEST_PROTOCOL_VERSION, "capabilities": {},
        "clientInfo": {"name": "pirag-snapshot", "version": __version__}}}))
    session.deliver(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
    for request_id, method in enumerate(RECORDED, 1):
        session.deliver(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method}))
    async with anyio.create_task_group() as group:
        group.start_soon(session.run)
        with anyio.fail_after(60):
            await complete.wait()
        group.cancel_scope.cancel()
    initialize = replies[0]["result"]
    del initialize["protocolVersion"]       # negotiated per session, from protocol_versions
    return {"initialize": initialize, "protocol_versions": list(SUPPORTED_PROTOCOL_VERSIONS),
            "latest_protocol_version": LATEST_PROTOCOL_VERSION,
            "results": {method: replies[request_id]["result"] for request_id, method in enumerate(RECORDED, 1)}}


def render() -> str:
    return json.dumps(anyio.run(record), indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pirag.daemon.mcp.snapshot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 when the snapshot is stale; write nothing")
    args = parser.parse_args(argv)
    text = render()
    current = SNAPSHOT.read_text(encoding="utf-8") if SNAPSHOT.exists() else ""
    if args.check:
        if text != current:
            print(f"{SNAPSHOT} is stale: run python -m pirag.daemon.mcp.snapshot", file=sys.stderr)
            return 1
        return 0
    if text != current:
        Path(SNAPSHOT).write_text(text, encoding="utf-8")
        print(f"wrote {SNAPSHOT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
