"""The MCP ``ingest`` tool's ``watch: true``: a real ``pirag-mcp`` child (SDK client over stdio) against the watch
daemon; the directory is ingested and then kept in step."""

from __future__ import annotations

from pathlib import Path

import anyio

from tests.mcp.helpers import bridge_session, call_error, call_ok

from .helpers import the_watch, wait_sources, write


def test_ingest_with_watch_keeps_the_directory_in_step(watch_daemon, wclient, tree_root: Path) -> None:
    base = tree_root / "via-mcp"
    write(base / "a.md", "alpha\n")

    async def run() -> None:
        async with bridge_session(watch_daemon.socket) as session:
            text, structured = await call_ok(session, "ingest", paths=[str(base)], project="mcp", watch=True,
                                             wait=True)
            assert "Watching" in text and structured["watches"][0]["path"] == str(base)
            message = await call_error(session, "ingest", paths=[str(base / "a.md")], project="mcp", watch=True)
            assert "directories" in message

    anyio.run(run)
    assert the_watch(wclient, base).project == "mcp"
    write(base / "b.md", "beta, after the tool call\n")
    wait_sources(wclient, "mcp", {str(base / "a.md"), str(base / "b.md")})
    wclient.watch_remove(project="mcp")
