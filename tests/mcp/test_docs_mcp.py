"""docs/MCP.md documents every tool the bridge registers, each tool's arguments, and every option of pirag-mcp."""

from __future__ import annotations

import re
from pathlib import Path

import anyio

from pirag.client.mcp_bridge import make_parser
from pirag.daemon.mcp.sdk_server import build_fastmcp
from pirag.daemon.mcp.tools import Bridge

DOC = (Path(__file__).resolve().parents[2] / "docs" / "MCP.md").read_text()


def _tools() -> list[tuple[str, list[str]]]:
    tools = anyio.run(build_fastmcp(Bridge()).list_tools)
    return [(tool.name, list(tool.inputSchema["properties"])) for tool in tools]


def test_every_tool_and_argument_is_documented() -> None:
    sections = dict(re.findall(r"^### (\w+)\n(.*?)(?=^#)", DOC, flags=re.M | re.S))
    for name, arguments in _tools():
        assert name in sections, f"tool {name} has no section in docs/MCP.md"
        for argument in arguments:
            assert f"`{argument}`" in sections[name], f"argument {argument} of {name} is not in its section"


def test_every_option_is_documented() -> None:
    options = {option for action in make_parser()._actions for option in action.option_strings
               if option.startswith("--")}
    assert "--socket" in options
    for option in options - {"--help"}:
        assert f"`{option}`" in DOC, f"pirag-mcp {option} is not documented"
