"""client/mcp_snapshot.json (what pirag-mcp answers without a daemon) is what the daemon's SDK server answers."""

from __future__ import annotations

from pirag.client import mcp_fallback
from pirag.daemon.mcp import snapshot


def test_the_snapshot_is_current() -> None:
    assert snapshot.render() == mcp_fallback.SNAPSHOT.read_text(encoding="utf-8"), (
        "client/mcp_snapshot.json is stale: run `python -m pirag.daemon.mcp.snapshot`")


def test_fallback_answers_follow_the_record() -> None:
    recorded = mcp_fallback.snapshot()
    reply = mcp_fallback.answer({"jsonrpc": "2.0", "id": 7, "method": "initialize",
                                 "params": {"protocolVersion": "2025-06-18"}}, "notes", "")
    assert reply is not None and reply["id"] == 7
    assert reply["result"]["protocolVersion"] == "2025-06-18"
    assert reply["result"]["instructions"].endswith("The default project is 'notes'.")
    assert reply["result"]["serverInfo"] == recorded["initialize"]["serverInfo"]
    unknown = mcp_fallback.answer({"id": 1, "method": "initialize", "params": {"protocolVersion": "1999-01-01"}},
                                  "", "")
    assert unknown is not None and unknown["result"]["protocolVersion"] == recorded["latest_protocol_version"]
    tools = mcp_fallback.answer({"id": "a", "method": "tools/list"}, "", "")
    assert tools is not None and tools["result"] == recorded["results"]["tools/list"]
    call = mcp_fallback.answer({"id": 2, "method": "tools/call", "params": {"name": "status"}}, "", "down: why")
    assert call == {"jsonrpc": "2.0", "id": 2, "result": {"content": [{"type": "text", "text": "down: why"}],
                                                          "isError": True}}
    other = mcp_fallback.answer({"id": 3, "method": "resources/read"}, "", "down: why")
    assert other is not None and other["error"]["code"] == mcp_fallback.METHOD_NOT_FOUND
    assert mcp_fallback.answer({"method": "notifications/initialized"}, "", "") is None
