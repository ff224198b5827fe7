"""``pirag-mcp`` (the pump to the daemon's MCP server) through a real MCP client from the SDK, over stdio, against
the real daemon (fake embedder: the bridge is plumbing). Every tool is called, with its error paths: daemon down, bad arguments, daemon errors,
oversized results cut to max_chars; and the bridge outlives a daemon restart."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .helpers import PIRAG_MCP, bridge_env, bridge_session, call_error, call_ok, text_of

pytestmark = pytest.mark.anyio

TOOLS = {"search", "get_context", "ingest", "ingest_status", "list_projects", "list_sources", "drop", "remember",
         "recall", "forget", "log_episode", "timeline", "status"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def docs_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pmcp-", dir="/tmp"))
    (path / "guide").mkdir()
    (path / "guide" / "install.md").write_text(
        "# Installing\n\nRun quickstart.sh to install pirag on a Raspberry Pi.\n\n"
        "## Sockets\n\nThe daemon listens on a unix socket under /run/pirag.\n")
    (path / "guide" / "tuning.md").write_text("# Tuning\n\nRaise embed.contexts on a Pi 5 with 8 GB.\n")
    (path / "outside.md").write_text("not under the guide")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def mcp_daemon(daemon_factory: Any, docs_dir: Path) -> Any:
    return daemon_factory("mcp", {"embed": {"model": "fake"},
                                  "ingest": {"allowed_roots": [str(docs_dir / "guide")]}})


async def test_initialize_and_list_tools_without_a_daemon(tmp_path: Path) -> None:
    missing = Path("/tmp") / f"pmcp-missing-{os.getpid()}.sock"
    async with bridge_session(missing) as session:
        tools = (await session.list_tools()).tools
        assert {tool.name for tool in tools} == TOOLS
        for tool in tools:
            assert tool.description and len(tool.description) > 40, tool.name
            assert tool.inputSchema["type"] == "object"
            for name, schema in tool.inputSchema["properties"].items():
                assert "type" in schema or "anyOf" in schema, (tool.name, name, schema)
        search = next(tool for tool in tools if tool.name == "search")
        assert search.inputSchema["required"] == ["query"]
        assert search.annotations is not None and search.annotations.readOnlyHint
        drop = next(tool for tool in tools if tool.name == "drop")
        assert drop.annotations is not None and drop.annotations.destructiveHint

        for tool, arguments in [("search", {"query": "x"}), ("status", {}), ("get_context", {"task": "x"}),
                                ("remember", {"content": "x"})]:
            message = await call_error(session, tool, **arguments)
            assert str(missing) in message
            assert "systemctl start pirag" in message and "pirag serve" in message


async def test_documents_tools(mcp_daemon: Any, docs_dir: Path) -> None:
    async with bridge_session(mcp_daemon.socket, "--project", "guide") as session:
        text, data = await call_ok(session, "ingest", paths=[str(docs_dir / "guide")], wait=True)
        assert data["sources_added"] == 2 and "'guide'" in text
        text, data = await call_ok(session, "ingest", text="Socket activation is optional.",
                                   source="notes/systemd.md", project="notes")
        assert data["project"] == "notes" and data["sources_added"] == 1

        text, data = await call_ok(session, "search", query="unix socket", k=3)
        assert data["projects"] == ["guide"] and data["hits"][0]["source"].endswith("install.md")
        assert "install.md:" in text and "unix socket" in text
        _, data = await call_ok(session, "search", query="socket", project="*")
        assert {hit["project"] for hit in data["hits"]} == {"guide", "notes"}
        text, data = await call_ok(session, "search", query="socket", project="notes", path_glob="*.rst")
        assert data["hits"] == [] and "No hits" in text

        text, data = await call_ok(session, "list_projects")
        assert {p["name"] for p in data["projects"]} >= {"guide", "notes"} and "default: guide" in text
        text, data = await call_ok(session, "list_sources")
        assert sorted(Path(s["source"]).name for s in data["sources"]) == ["install.md", "tuning.md"]
        _, data = await call_ok(session, "ingest_status", limit=3)
        assert data["jobs"] is not None

        # daemon errors come back as tool errors with the daemon's message
        message = await call_error(session, "ingest", paths=[str(docs_dir / "outside.md")])
        assert "forbidden" in message
        message = await call_error(session, "ingest", text="no name")
        assert "source" in message
        message = await call_error(session, "list_sources", project="no-such-project")
        assert "not_found" in message or "no-such-project" in message

        source = next(s["source"] for s in (await call_ok(session, "list_sources"))[1]["sources"]
                      if s["source"].endswith("tuning.md"))
        _, data = await call_ok(session, "drop", sources=[source])
        assert data["removed"] == 1
        message = await call_error(session, "drop")
        assert "explicitly" in message
        message = await call_error(session, "drop", project="notes")
        assert "confirm=true" in message
        _, data = await call_ok(session, "list_projects")
        assert "notes" in {p["name"] for p in data["projects"]}
        text, data = await call_ok(session, "drop", project="notes", confirm=True)
        assert data["dropped"] is True
        _, data = await call_ok(session, "list_projects")
        assert "notes" not in {p["name"] for p in data["projects"]}

        text, data = await call_ok(session, "status")
        assert text.startswith("pirag ") and data["pid"] > 0 and "config" not in data
        assert data["bridge"]["default_project"] == "guide"


async def test_memory_tools_and_get_context(mcp_daemon: Any, docs_dir: Path) -> None:
    async with bridge_session(mcp_daemon.socket, env=bridge_env(PIRAG_PROJECT="mem")) as session:
        await call_ok(session, "ingest", text="# Deploy\n\nDeploys go through the staging Pi first.",
                      source="deploy.md")
        text, data = await call_ok(session, "remember", content="Deploys need a green CI run.", tags=["deploy"])
        fact_id = data["fact"]["id"]
        assert data["created"] and data["fact"]["project"] == "mem" and fact_id in text
        _, data = await call_ok(session, "remember", content="Deploys need a green CI run.", tags=["deploy"])
        assert not data["created"] and data["fact"]["id"] == fact_id
        _, data = await call_ok(session, "remember", content="The office wifi is slow.", project="")
        global_id = data["fact"]["id"]
        assert data["fact"]["project"] == ""

        text, data = await call_ok(session, "recall", query="deploys CI")
        assert data["facts"][0]["id"] == fact_id and "green CI" in text
        _, data = await call_ok(session, "recall", query="wifi", include_global=True)
        assert global_id in {fact["id"] for fact in data["facts"]}

        _, data = await call_ok(session, "log_episode", content="Decided to deploy on Fridays never.",
                                session="s1", kind="decision", role="user")
        assert data["episode"]["project"] == "mem"
        for n in range(3):
            await call_ok(session, "log_episode", content=f"deploy step {n}", session="s1", kind="action")
        text, data = await call_ok(session, "timeline", session="s1", limit=2)
        assert len(data["episodes"]) == 2 and data["next_cursor"] and "more: timeline(cursor=" in text
        _, page2 = await call_ok(session, "timeline", session="s1", limit=2, cursor=data["next_cursor"])
        assert {e["id"] for e in page2["episodes"]}.isdisjoint(e["id"] for e in data["episodes"])
        _, data = await call_ok(session, "timeline", kinds=["decision"])
        assert [e["kind"] for e in data["episodes"]] == ["decision"]

        text, data = await call_ok(session, "get_context", task="how do deploys work")
        assert "## Facts" in text and "## Documents" in text and "## Related episodes" in text
        assert fact_id in {f["id"] for f in data["facts"]}
        assert data["documents"] and data["documents"][0]["source"] == "deploy.md"
        assert data["episodes"] and not data["errors"]
        _, data = await call_ok(session, "get_context", task="deploys", k_docs=0, k_episodes=0)
        assert data["documents"] == [] and data["episodes"] == [] and data["facts"]

        # a project with memory but no documents: the documents section is empty, not an error
        _, data = await call_ok(session, "remember", content="Only memory here.", project="memory-only")
        text, data = await call_ok(session, "get_context", task="memory", project="memory-only")
        assert data["facts"] and not data["errors"] and "## Documents\n(none found)" in text

        message = await call_error(session, "forget", ids=[fact_id, "no-such-fact"])
        assert "not_found" in message
        _, data = await call_ok(session, "forget", ids=[fact_id])
        assert data["forgotten"] == 1
        _, data = await call_ok(session, "recall", query="deploys CI")
        assert fact_id not in {fact["id"] for fact in data["facts"]}
        message = await call_error(session, "timeline", when="the day after never")
        assert "invalid_argument" in message


async def test_bad_arguments(mcp_daemon: Any) -> None:
    async with bridge_session(mcp_daemon.socket) as session:
        for tool, arguments in [
            ("search", {}),                                   # missing required
            ("search", {"query": "x", "k": "many"}),          # wrong type
            ("search", {"query": "x", "k": 1000}),            # out of range
            ("search", {"query": "x", "max_chars": 10}),      # budget too small
            ("recall", {"query": "x", "tag_mode": "some"}),   # not an allowed value
            ("forget", {"ids": []}),                          # empty list
            ("remember", {"content": "x", "importance": 2}),
            ("no_such_tool", {}),
        ]:
            result = await session.call_tool(tool, arguments)
            assert result.isError, (tool, arguments, text_of(result))
        # tools that need a project say so when the bridge has no default
        message = await call_error(session, "list_sources")
        assert "--project" in message
        # and the session is still usable
        await call_ok(session, "status")


async def test_oversized_results_are_cut_to_max_chars(mcp_daemon: Any) -> None:
    paragraph = "The quick brown fox jumps over the lazy dog near the socket. " * 40
    big = "\n\n".join(f"# Part {n}\n\n{paragraph}" for n in range(40))
    async with bridge_session(mcp_daemon.socket, "--project", "big") as session:
        await call_ok(session, "ingest", text=big, source="big.md", wait=True)
        for max_chars in (200, 700, 3000):
            text, data = await call_ok(session, "search", query="fox socket", k=20, max_chars=max_chars)
            assert len(text) <= max_chars and data["truncated"]
            assert sum(len(hit["text"]) for hit in data["hits"]) <= max_chars
        text, data = await call_ok(session, "search", query="fox socket", k=3, max_chars=200_000)
        assert not data["truncated"] and len(data["hits"]) == 3 and "truncated" not in text

        for n in range(12):
            await call_ok(session, "remember", content=f"Fact {n}: " + paragraph[: 300 + n])
            await call_ok(session, "log_episode", content=f"Episode {n}: " + paragraph, session="big")
        for tool, arguments in [("recall", {"query": "quick fox", "k": 12}), ("timeline", {"session": "big"}),
                                ("get_context", {"task": "quick brown fox"}), ("status", {}),
                                ("list_projects", {}), ("list_sources", {})]:
            for max_chars in (200, 1000):
                result = await session.call_tool(tool, arguments | {"max_chars": max_chars})
                assert not result.isError, text_of(result)
                assert len(text_of(result)) <= max_chars, (tool, max_chars, len(text_of(result)))
        text, data = await call_ok(session, "get_context", task="quick brown fox", max_chars=1500)
        assert data["truncated"] and "truncated to max_chars" in text


async def test_bridge_survives_a_daemon_restart(daemon_factory: Any) -> None:
    handle = daemon_factory("mcprestart", {"embed": {"model": "fake"}})
    async with bridge_session(handle.socket, "--project", "r") as session:
        _, data = await call_ok(session, "status")
        first_pid = data["pid"]
        await call_ok(session, "remember", content="Survives restarts.")
        handle.stop()
        for tool, arguments in [("status", {}), ("remember", {"content": "while down"}), ("search", {"query": "x"})]:
            message = await call_error(session, tool, **arguments)
            assert str(handle.socket) in message and "pirag serve" in message
        handle.restart()
        _, data = await call_ok(session, "status")
        assert data["pid"] != first_pid
        _, data = await call_ok(session, "recall", query="survives restarts")
        assert "Survives restarts." in {fact["content"] for fact in data["facts"]}
        await call_ok(session, "remember", content="Written after the restart.")


def test_stdout_carries_only_the_protocol(mcp_daemon: Any) -> None:
    """Raw JSON-RPC over a pipe, with debug logging on: every stdout line is a JSON-RPC message."""
    requests = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize",
         "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "status", "arguments": {}}},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "search", "arguments": {"query": ""}}},
    ]
    process = subprocess.Popen([PIRAG_MCP, "--socket", str(mcp_daemon.socket), "--log-level", "DEBUG"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=bridge_env(), text=True)
    assert process.stdin is not None and process.stdout is not None
    replies: dict[int, Any] = {}
    try:
        for request in requests:
            process.stdin.write(json.dumps(request) + "\n")
            process.stdin.flush()
            if "id" in request:
                line = process.stdout.readline()
                message = json.loads(line)
                assert message["jsonrpc"] == "2.0"
                replies[message["id"]] = message
    finally:
        process.stdin.close()
        stderr = process.stderr.read() if process.stderr else ""
        process.wait(timeout=30)
    assert process.stdout.read() == ""
    assert replies[2]["result"]["isError"] is False
    assert replies[3]["result"]["isError"] is True
    assert "pirag-mcp | " in stderr


def test_the_pump_imports_neither_the_sdk_nor_pydantic() -> None:
    """pirag-mcp is a pump: importing it, parsing its options and loading its fallback record pull in no MCP SDK,
    no pydantic, no anyio and nothing of the daemon."""
    code = ("import sys; from pirag.client import mcp_bridge, mcp_fallback; mcp_bridge.parse_args([]); "
            "mcp_fallback.snapshot(); print(sorted(m for m in sys.modules if m.split('.')[0] in ('mcp', 'pydantic', "
            "'pydantic_core', 'anyio', 'starlette', 'httpx', 'numpy', 'chromadb', 'llama_cpp', 'uvloop', 'torch', "
            "'tokenizers') or m.startswith(('pirag.daemon', 'pirag.stress'))))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"
