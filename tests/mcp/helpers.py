"""Spawn ``pirag-mcp`` with a real MCP client from the SDK (``mcp.client.stdio``) and call its tools."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TextIO

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.types import CallToolResult

PIRAG_MCP = str(Path(sys.executable).with_name("pirag-mcp"))


def bridge_env(**extra: str) -> dict[str, str]:
    """The bridge's environment: ours without any PIRAG_* setting, plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIRAG_")}
    env.update(extra)
    return env


@asynccontextmanager
async def bridge_session(socket: Path | str, *args: str, env: dict[str, str] | None = None,
                         errlog: TextIO | None = None) -> AsyncIterator[ClientSession]:
    """An initialized SDK client session with a ``pirag-mcp --socket SOCKET ARGS...`` child over stdio."""
    params = StdioServerParameters(command=PIRAG_MCP, args=["--socket", str(socket), *args],
                                   env=env if env is not None else bridge_env())
    async with stdio_client(params, errlog=errlog or sys.stderr) as (read_stream, write_stream):
        async with ClientSession(read_stream, write_stream) as session:
            await session.initialize()
            yield session


def text_of(result: CallToolResult) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


async def call_ok(session: ClientSession, tool: str, /, **arguments: Any) -> tuple[str, dict[str, Any]]:
    """Call a tool that must succeed: its text and structured content."""
    result = await session.call_tool(tool, arguments)
    assert not result.isError, f"{tool}({arguments}) failed: {text_of(result)}"
    return text_of(result), result.structuredContent or {}


async def call_error(session: ClientSession, tool: str, /, **arguments: Any) -> str:
    """Call a tool that must fail: the tool error's text."""
    result = await session.call_tool(tool, arguments)
    assert result.isError, f"{tool}({arguments}) should have failed, got: {text_of(result)}"
    return text_of(result)
