"""``pirag-stress mcp-bench``: the ``search`` round trip (cache hit) through ``pirag-mcp`` beside the same call
through the client library, in one run, against the live daemon.

- bridge: a real MCP SDK client session spawns ``pirag-mcp`` over stdio and calls the ``search`` tool;
- in-process: the bridge's own FastMCP server called in this process (``call_tool``, no stdio, no client SDK),
  which splits the bridge's cost between the tool layer and the stdio + SDK client hops;
- async / sync: ``AsyncClient.search`` and ``Client.search`` with the same arguments on the same socket;
- SDK floor: a no-op FastMCP tool over stdio with the same SDK client: what any MCP server costs here.

The query is searched once first, so every measured call is a query-cache hit in the daemon: what remains is
the cost of the bridge (JSON-RPC over pipes, argument validation, formatting) against the bare client. Rounds
alternate between the three; each one's best round is reported, with the bridge's start-up time (spawn to
``initialize`` answered) and the p50 ratio bridge / async client.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from pirag.client import AsyncClient, Client
from pirag.client.errors import NotFound
from pirag.client.paths import default_socket_path

from .measure import percentile, print_table

# The floor: the SDK's cost for a tool that does nothing, over the same stdio transport.
NOOP_SERVER = """
from mcp.server.fastmcp import FastMCP
from mcp.types import CallToolResult, TextContent
server = FastMCP("noop", log_level="WARNING")

@server.tool()
async def noop(query: str) -> CallToolResult:
    \"\"\"Return the query (no output schema, like pirag-mcp's tools: nothing for the client to validate).\"\"\"
    return CallToolResult(content=[TextContent(type="text", text=query)])

server.run()
"""
PROJECT = "mcp-bench"
QUERY = "how does the daemon keep the embedding model warm"
CORPUS = "\n\n".join(
    f"# Section {n}\n\nThe daemon keeps the embedding model warm in {n % 4 + 1} contexts; requests are coalesced "
    f"into micro-batches and answered from the query cache when the project generation is unchanged. "
    f"Chunk {n} also talks about sockets, SQLite WAL mode and Chroma collections." for n in range(60))


def _figures(latencies_s: list[float]) -> dict[str, float]:
    return {"calls": len(latencies_s), "p50_us": round(percentile(latencies_s, 50) * 1e6, 1),
            "p99_us": round(percentile(latencies_s, 99) * 1e6, 1)}


def _best(current: dict[str, float] | None, new: dict[str, float]) -> dict[str, float]:
    return new if current is None or new["p50_us"] < current["p50_us"] else current


async def _measure(socket_path: str, calls: int, rounds: int, max_chars: int) -> dict[str, Any]:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    from pirag.client.mcp_bridge import build_server

    arguments = {"query": QUERY, "project": PROJECT, "k": 8, "max_chars": max_chars}
    bridge = str(Path(sys.executable).with_name("pirag-mcp"))
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIRAG_")}
    params = StdioServerParameters(command=bridge, args=["--socket", socket_path], env=env)
    best: dict[str, dict[str, float] | None] = {"bridge": None, "in_process": None, "async": None, "sync": None,
                                                "floor": None}
    noop_params = StdioServerParameters(command=sys.executable, args=["-c", NOOP_SERVER], env=env)
    in_process, in_process_bridge = build_server(Path(socket_path))
    clock = time.perf_counter
    stack = AsyncExitStack()
    spawned = clock()
    async with stdio_client(params) as (read_stream, write_stream), ClientSession(read_stream, write_stream) as session:
        await session.initialize()
        startup_ms = (clock() - spawned) * 1e3
        noop_streams = await stack.enter_async_context(stdio_client(noop_params))
        noop = await stack.enter_async_context(ClientSession(*noop_streams))
        await noop.initialize()
        await noop.call_tool("noop", {"query": QUERY})
        async with AsyncClient(socket_path) as async_client:
            with Client(socket_path) as sync_client:
                first = await session.call_tool("search", arguments)
                if first.isError:
                    raise RuntimeError(f"search through the bridge failed: {first.content}")
                hit = await session.call_tool("search", arguments)
                assert hit.structuredContent and hit.structuredContent["cached"], "expected a cache hit"
                direct = await async_client.search(QUERY, [PROJECT], k=8, max_chars=max_chars)
                assert direct.cached, "expected a cache hit"
                for _ in range(rounds):
                    latencies: dict[str, list[float]] = {name: [] for name in best}
                    for _ in range(calls):
                        started = clock()
                        await session.call_tool("search", arguments)
                        latencies["bridge"].append(clock() - started)
                    for _ in range(calls):
                        started = clock()
                        await in_process.call_tool("search", arguments)
                        latencies["in_process"].append(clock() - started)
                    for _ in range(calls):
                        started = clock()
                        await noop.call_tool("noop", {"query": QUERY})
                        latencies["floor"].append(clock() - started)
                    for _ in range(calls):
                        started = clock()
                        await async_client.search(QUERY, [PROJECT], k=8, max_chars=max_chars)
                        latencies["async"].append(clock() - started)
                    for _ in range(calls):
                        started = clock()
                        sync_client.search(QUERY, [PROJECT], k=8, max_chars=max_chars)
                        latencies["sync"].append(clock() - started)
                    for name, values in latencies.items():
                        best[name] = _best(best[name], _figures(values))
        await stack.aclose()
    await in_process_bridge.close()
    return {"startup_ms": round(startup_ms, 1), "results": best}


def _ensure_corpus(socket_path: str) -> bool:
    """Ingest the bench corpus into its own project unless it is there; True when this run created it."""
    with Client(socket_path) as client:
        try:
            if client.list_sources(PROJECT, limit=1).sources:
                return False
        except NotFound:
            pass
        client.ingest_text(PROJECT, "bench/daemon.md", CORPUS)
        return True


def run(socket_path: str, calls: int, rounds: int, max_chars: int, keep: bool) -> dict[str, Any]:
    import anyio

    created = _ensure_corpus(socket_path)
    try:
        measured = anyio.run(_measure, socket_path, calls, rounds, max_chars)
    finally:
        if created and not keep:
            with Client(socket_path) as client:
                client.drop_project(PROJECT)
    results = measured["results"]
    return {"socket": socket_path, "calls_per_round": calls, "rounds": rounds, "max_chars": max_chars,
            "bridge_startup_ms": measured["startup_ms"], "results": results,
            "p50_ratio_bridge_over_async": round(results["bridge"]["p50_us"] / results["async"]["p50_us"], 2),
            "p99_ratio_bridge_over_async": round(results["bridge"]["p99_us"] / results["async"]["p99_us"], 2),
            "p50_ratio_bridge_over_sdk_floor": round(results["bridge"]["p50_us"] / results["floor"]["p50_us"], 2),
            "time": time.strftime("%Y-%m-%d %H:%M:%S")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pirag-stress mcp-bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--socket", default=str(default_socket_path()))
    parser.add_argument("--calls", type=int, default=300, help="search calls per path per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-chars", type=int, default=4000, help="the search budget (bridge and client)")
    parser.add_argument("--keep", action="store_true", help=f"keep the {PROJECT!r} project afterwards")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    report = run(args.socket, args.calls, args.rounds, args.max_chars, args.keep)
    labels = {"bridge": "pirag-mcp (MCP SDK client, stdio)", "in_process": "bridge tools in-process (no stdio)",
              "floor": "no-op FastMCP tool, stdio (SDK floor)", "async": "AsyncClient.search",
              "sync": "Client.search"}
    rows = [[labels[name], figures["calls"], figures["p50_us"], figures["p99_us"]]
            for name, figures in report["results"].items()]
    print_table(f"search round trip, query-cache hit, k=8, max_chars={args.max_chars} (best of {args.rounds} rounds)",
                ["path", "calls", "p50 us", "p99 us"], rows)
    print(f"bridge / AsyncClient: p50 {report['p50_ratio_bridge_over_async']}x, "
          f"p99 {report['p99_ratio_bridge_over_async']}x; bridge / SDK floor: p50 "
          f"{report['p50_ratio_bridge_over_sdk_floor']}x; bridge start-up (spawn to initialize) "
          f"{report['bridge_startup_ms']} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
