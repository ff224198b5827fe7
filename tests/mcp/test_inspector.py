"""A client no one here wrote: the MCP Inspector's CLI mode (npm ``@modelcontextprotocol/inspector``) spawns
``pirag-mcp`` against the real daemon, lists the tools and calls ``status``, ``remember`` and ``recall``.

Needs Node's ``npx`` and the npm registry (or npx's cache: .ci/run warms it). Skipped, with the reason, without.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import pytest

from .helpers import PIRAG_MCP, bridge_env

INSPECTOR = "@modelcontextprotocol/inspector@2.12.0"
NPX = shutil.which("npx")

pytestmark = pytest.mark.skipif(NPX is None, reason="node's npx is not installed (apt-get install npm)")


def inspector(socket: str, *arguments: str) -> dict[str, Any]:
    """One Inspector CLI run against ``pirag-mcp --socket SOCKET --project inspector``: its JSON answer."""
    assert NPX is not None
    command = [NPX, "-y", INSPECTOR, "--cli", PIRAG_MCP, "--socket", socket, "--project", "inspector", *arguments]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=bridge_env())
    except subprocess.TimeoutExpired:
        pytest.fail(f"the Inspector did not finish in 240 s: {' '.join(command)}")
    if done.returncode != 0 and ("ENOTFOUND" in done.stderr or "EAI_AGAIN" in done.stderr):
        pytest.skip(f"npx cannot fetch {INSPECTOR} (no npm registry): {done.stderr.strip()[-300:]}")
    assert done.returncode == 0, f"Inspector failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout)


def test_the_inspector_lists_and_calls_tools(daemon: Any) -> None:
    socket = str(daemon.socket)
    listed = inspector(socket, "--method", "tools/list")
    assert {tool["name"] for tool in listed["tools"]} >= {"status", "remember", "recall", "search", "get_context"}

    status = inspector(socket, "--method", "tools/call", "--tool-name", "status")
    assert not status["isError"]
    assert status["structuredContent"]["bridge"] == {"socket": socket, "default_project": "inspector"}
    assert status["content"][0]["text"].startswith("pirag ")

    remembered = inspector(socket, "--method", "tools/call", "--tool-name", "remember",
                           "--tool-arg", "content=The Inspector stored this fact about the NAS at 10.0.0.5",
                           "--tool-arg", 'tags=["network"]')
    assert not remembered["isError"] and remembered["structuredContent"]["created"]
    fact = remembered["structuredContent"]["fact"]
    assert fact["project"] == "inspector" and fact["tags"] == ["network"]

    recalled = inspector(socket, "--method", "tools/call", "--tool-name", "recall", "--tool-arg", "query=NAS address")
    assert not recalled["isError"]
    assert fact["id"] in {hit["id"] for hit in recalled["structuredContent"]["facts"]}
    assert fact["id"] in recalled["content"][0]["text"]
