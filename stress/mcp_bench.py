"""``pirag-stress mcp-bench``: what an MCP session costs, through ``pirag-mcp`` (a pump to the daemon's MCP server)
beside the design it replaced (the tools served over stdio by a process of their own with an ``AsyncClient``:
``python -m pirag.daemon.mcp.standalone``), measured in the same run against the live daemon.

1. the daemon's MCP server: the daemon's RSS before its first MCP session and after (the SDK is loaded then);
2. spawn to ``initialize`` answered (a raw JSON-RPC line on the child's stdin, the answer read from its stdout),
   ``--spawns`` times: the pump with the daemon up and with no daemon at all (answered from its snapshot), and the
   baseline; and each child's RSS after initialize and one ``status`` call;
3. per-session RSS: the pump's RSS plus what one more open session adds to the daemon (``--sessions`` sessions
   opened side by side), against the baseline process's RSS;
4. the ``search`` round trip (a query-cache hit) driven by the MCP SDK's stdio client through the pump and through
   the baseline, beside ``AsyncClient.search`` and ``Client.search`` on the same socket and a no-op FastMCP tool over
   the same stdio transport (what any Python MCP server costs); the paths take turns call by call, so that each
   meets the same load; best of ``--rounds``;
5. leak check: ``--cycles`` sessions opened and closed one after the other (spawn, initialize, ``status``, exit):
   the daemon's FDs, asyncio tasks, open sessions and RSS before and after.

The pump, the baseline and the daemon must run on this machine (the bench reads their /proc entries).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import psutil

from pirag.client import AsyncClient, Client
from pirag.client.errors import NotFound
from pirag.client.paths import default_socket_path

from .measure import percentile, print_table

MIB = 1 << 20
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
# The interpreter's floor for spawn to initialize: a Python process that answers every request line at once.
ECHO_SERVER = """
import json, sys
for line in sys.stdin:
    message = json.loads(line)
    if "id" in message:
        print(json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": {}}), flush=True)
"""
PROJECT = "mcp-bench"
QUERY = "how does the daemon keep the embedding model warm"
CORPUS = "\n\n".join(
    f"# Section {n}\n\nThe daemon keeps the embedding model warm in {n % 4 + 1} contexts; requests are coalesced "
    f"into micro-batches and answered from the query cache when the project generation is unchanged. "
    f"Chunk {n} also talks about sockets, SQLite WAL mode and Chroma collections." for n in range(60))
INITIALIZE = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "mcp-bench", "version": "1"}}})
INITIALIZED = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})
STATUS_CALL = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                          "params": {"name": "status", "arguments": {}}})


def _env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("PIRAG_")}


def server_commands(socket_path: str) -> dict[str, list[str]]:
    pump = str(Path(sys.executable).with_name("pirag-mcp"))
    return {"pump": [pump, "--socket", socket_path],
            "baseline": [sys.executable, "-m", "pirag.daemon.mcp.standalone", "--socket", socket_path]}


class RawSession:
    """An MCP server child driven with raw JSON-RPC lines (no client SDK: its start-up is not measured)."""

    def __init__(self, command: list[str]):
        self.started = time.perf_counter()
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, env=_env())

    def request(self, line: str) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()
        while True:
            answer = json.loads(self.process.stdout.readline())
            if "id" in answer:     # skip notifications
                return answer

    def notify(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def open(self) -> float:
        """initialize, answered: seconds since the spawn."""
        answer = self.request(INITIALIZE)
        if "result" not in answer:
            raise RuntimeError(f"initialize failed: {answer}")
        spent = time.perf_counter() - self.started
        self.notify(INITIALIZED)
        return spent

    def memory(self) -> tuple[int, int]:
        """RSS, and USS: the memory only this process holds (what it frees on exit; RSS counts shared pages)."""
        info = psutil.Process(self.process.pid).memory_full_info()
        return info.rss, info.uss

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Daemon:
    """The daemon's figures: RSS, FDs, tasks and MCP sessions, from its status and its /proc entry."""

    def __init__(self, socket_path: str):
        self.client = Client(socket_path)
        self.process = psutil.Process(self.client.status().pid)

    def figures(self) -> dict[str, Any]:
        status = self.client.status()
        mcp = status.components.get("mcp", {})
        return {"rss_bytes": status.rss_bytes, "fds": self.process.num_fds(),
                "tasks": status.components["server"].get("tasks"), "sessions_open": mcp.get("sessions_open"),
                "pid": status.pid,
                "sessions_total": mcp.get("sessions_total"), "sdk_loaded": mcp.get("sdk_loaded"),
                "sdk_load_s": mcp.get("sdk_load_s"), "connections": status.connections}

    def settle(self, sessions_open: int = 0, timeout: float = 10.0) -> dict[str, Any]:
        """Figures once the daemon has dropped what closed sessions left (their tasks unwind on the loop)."""
        deadline = time.monotonic() + timeout
        while True:
            figures = self.figures()
            if figures["sessions_open"] == sessions_open or time.monotonic() > deadline:
                return figures
            time.sleep(0.05)


def measure_first_session(daemon: Daemon, commands: dict[str, list[str]]) -> dict[str, Any]:
    before = daemon.settle()
    session = RawSession(commands["pump"])
    try:
        initialize_s = session.open()
        session.request(STATUS_CALL)
    finally:
        session.close()
    after = daemon.settle()
    return {"sdk_was_loaded": bool(before["sdk_loaded"]), "rss_before_mib": round(before["rss_bytes"] / MIB, 1),
            "rss_after_mib": round(after["rss_bytes"] / MIB, 1), "sdk_load_s": after["sdk_load_s"],
            "first_initialize_ms": round(initialize_s * 1e3, 1)}


def measure_spawns(commands: dict[str, list[str]], spawns: int, missing_socket: str) -> dict[str, Any]:
    """Spawn to initialize and RSS after a status call, for each kind of server, interleaved."""
    kinds = {"pump": commands["pump"], "pump_no_daemon": [commands["pump"][0], "--socket", missing_socket],
             "baseline": commands["baseline"], "python_floor": [sys.executable, "-c", ECHO_SERVER]}
    samples: dict[str, dict[str, list[float]]] = {kind: {"initialize_s": [], "rss": [], "uss": []} for kind in kinds}
    for _ in range(spawns):
        for kind, command in kinds.items():
            session = RawSession(command)
            try:
                samples[kind]["initialize_s"].append(session.open())
                session.request(STATUS_CALL)
                rss, uss = session.memory()
                samples[kind]["rss"].append(rss)
                samples[kind]["uss"].append(uss)
            finally:
                session.close()
    return {kind: {"spawns": spawns, "initialize_p50_ms": round(percentile(values["initialize_s"], 50) * 1e3, 1),
                   "initialize_max_ms": round(max(values["initialize_s"]) * 1e3, 1),
                   "rss_p50_mib": round(percentile(values["rss"], 50) / MIB, 1),
                   "uss_p50_mib": round(percentile(values["uss"], 50) / MIB, 1)}
            for kind, values in samples.items()}


def measure_daemon_per_session(daemon: Daemon, commands: dict[str, list[str]], count: int) -> dict[str, Any]:
    """What ``count`` more open sessions add to the daemon, per session (RSS, FDs, tasks)."""
    before = daemon.settle()
    sessions = [RawSession(commands["pump"]) for _ in range(count)]
    try:
        for session in sessions:
            session.open()
            session.request(STATUS_CALL)
        during = daemon.figures()
    finally:
        for session in sessions:
            session.close()
    after = daemon.settle()
    return {"sessions": count, "open_sessions_seen": during["sessions_open"],
            "rss_per_session_kib": round((during["rss_bytes"] - before["rss_bytes"]) / count / 1024, 1),
            "fds_per_session": round((during["fds"] - before["fds"]) / count, 2),
            "tasks_per_session": round((during["tasks"] - before["tasks"]) / count, 2),
            "after_close": {key: after[key] - before[key] for key in ("fds", "tasks", "sessions_open")}}


def measure_cycles(daemon: Daemon, commands: dict[str, list[str]], cycles: int) -> dict[str, Any]:
    """Sessions opened and closed one after another: the daemon's figures at a few points."""
    marks = sorted({0, cycles // 5, cycles // 2, cycles})
    points = []
    for cycle in range(cycles + 1):
        if cycle in marks:
            figures = daemon.settle()
            points.append({"cycle": cycle, "fds": figures["fds"], "tasks": figures["tasks"],
                           "sessions_open": figures["sessions_open"],
                           "rss_mib": round(figures["rss_bytes"] / MIB, 2)})
        if cycle == cycles:
            break
        session = RawSession(commands["pump"])
        try:
            session.open()
            session.request(STATUS_CALL)
        finally:
            session.close()
    first, last = points[0], points[-1]
    flat = (last["fds"] == first["fds"] and last["tasks"] == first["tasks"] and last["sessions_open"] == 0
            and last["rss_mib"] - first["rss_mib"] < 2.0)
    return {"cycles": cycles, "points": points, "flat": flat,
            "delta": {"fds": last["fds"] - first["fds"], "tasks": last["tasks"] - first["tasks"],
                      "rss_mib": round(last["rss_mib"] - first["rss_mib"], 2)}}


def _figures(latencies_s: list[float]) -> dict[str, float]:
    return {"calls": len(latencies_s), "p50_us": round(percentile(latencies_s, 50) * 1e6, 1),
            "p99_us": round(percentile(latencies_s, 99) * 1e6, 1)}


def _best(current: dict[str, float] | None, new: dict[str, float]) -> dict[str, float]:
    return new if current is None or new["p50_us"] < current["p50_us"] else current


async def measure_calls(socket_path: str, commands: dict[str, list[str]], calls: int, rounds: int,
                        max_chars: int) -> dict[str, Any]:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    arguments = {"query": QUERY, "project": PROJECT, "k": 8, "max_chars": max_chars}
    env = _env()
    best: dict[str, dict[str, float] | None] = {"pump": None, "baseline": None, "async": None, "sync": None,
                                                "floor": None}
    servers = {name: StdioServerParameters(command=command[0], args=command[1:], env=env)
               for name, command in commands.items()}
    servers["floor"] = StdioServerParameters(command=sys.executable, args=["-c", NOOP_SERVER], env=env)
    clock = time.perf_counter
    async with AsyncExitStack() as stack:
        sessions = {}
        for name, params in servers.items():
            streams = await stack.enter_async_context(stdio_client(params))
            sessions[name] = await stack.enter_async_context(ClientSession(*streams))
            await sessions[name].initialize()
        async_client = await stack.enter_async_context(AsyncClient(socket_path))
        sync_client = stack.enter_context(Client(socket_path))
        for name in ("pump", "baseline"):
            first = await sessions[name].call_tool("search", arguments)
            if first.isError:
                raise RuntimeError(f"search through {name} failed: {first.content}")
            hit = await sessions[name].call_tool("search", arguments)
            assert hit.structuredContent and hit.structuredContent["cached"], "expected a cache hit"
        await sessions["floor"].call_tool("noop", {"query": QUERY})
        direct = await async_client.search(QUERY, [PROJECT], k=8, max_chars=max_chars)
        assert direct.cached, "expected a cache hit"
        calls_of = {
            "pump": lambda: sessions["pump"].call_tool("search", arguments),
            "baseline": lambda: sessions["baseline"].call_tool("search", arguments),
            "floor": lambda: sessions["floor"].call_tool("noop", {"query": QUERY}),
            "async": lambda: async_client.search(QUERY, [PROJECT], k=8, max_chars=max_chars),
        }
        for _ in range(rounds):
            latencies: dict[str, list[float]] = {name: [] for name in best}
            # One call of each path in turn, so that every path meets the same load on a shared machine.
            for _ in range(calls):
                for name, call in calls_of.items():
                    started = clock()
                    await call()
                    latencies[name].append(clock() - started)
                started = clock()
                sync_client.search(QUERY, [PROJECT], k=8, max_chars=max_chars)
                latencies["sync"].append(clock() - started)
            for name, values in latencies.items():
                best[name] = _best(best[name], _figures(values))
    return best


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


def run(socket_path: str, calls: int, rounds: int, max_chars: int, spawns: int, sessions: int, cycles: int,
        keep: bool) -> dict[str, Any]:
    import anyio

    commands = server_commands(socket_path)
    daemon = Daemon(socket_path)
    missing = f"/tmp/pirag-mcp-bench-{os.getpid()}-missing.sock"
    report: dict[str, Any] = {"socket": socket_path, "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                              "load_before": os.getloadavg()}
    report["first_session"] = measure_first_session(daemon, commands)
    created = _ensure_corpus(socket_path)
    try:
        report["spawns"] = measure_spawns(commands, spawns, missing)
        report["daemon_per_session"] = measure_daemon_per_session(daemon, commands, sessions)
        report["calls"] = anyio.run(measure_calls, socket_path, commands, calls, rounds, max_chars)
        report["cycles"] = measure_cycles(daemon, commands, cycles)
    finally:
        if created and not keep:
            with Client(socket_path) as client:
                client.drop_project(PROJECT)
    spawned = report["spawns"]
    per_session = spawned["pump"]["rss_p50_mib"] + report["daemon_per_session"]["rss_per_session_kib"] / 1024
    report["per_session_rss_mib"] = {"pump_plus_daemon": round(per_session, 1),
                                     "baseline": spawned["baseline"]["rss_p50_mib"],
                                     "ratio_baseline_over_pump": round(spawned["baseline"]["rss_p50_mib"]
                                                                       / per_session, 1)}
    calls_figures = report["calls"]
    report["ratios"] = {
        "initialize_p50_baseline_over_pump": round(spawned["baseline"]["initialize_p50_ms"]
                                                   / spawned["pump"]["initialize_p50_ms"], 1),
        "initialize_p50_pump_over_python_floor": round(spawned["pump"]["initialize_p50_ms"]
                                                       / spawned["python_floor"]["initialize_p50_ms"], 1),
        "search_p50_pump_over_baseline": round(calls_figures["pump"]["p50_us"] / calls_figures["baseline"]["p50_us"], 2),
        "search_p50_pump_over_async": round(calls_figures["pump"]["p50_us"] / calls_figures["async"]["p50_us"], 2),
        "search_p50_pump_over_sdk_floor": round(calls_figures["pump"]["p50_us"] / calls_figures["floor"]["p50_us"], 2)}
    report["load_after"] = os.getloadavg()
    return report


def print_report(report: dict[str, Any], rounds: int, max_chars: int) -> None:
    first = report["first_session"]
    print(f"load average before {tuple(round(x, 1) for x in report['load_before'])}, "
          f"after {tuple(round(x, 1) for x in report['load_after'])}")
    if first["sdk_was_loaded"]:
        print("daemon's MCP server: already loaded before this run (an earlier session); RSS now "
              f"{first['rss_after_mib']} MiB")
    else:
        print(f"daemon's MCP server: loaded by the first session in {first['sdk_load_s']} s; daemon RSS "
              f"{first['rss_before_mib']} MiB before it, {first['rss_after_mib']} MiB after; that first initialize "
              f"answered in {first['first_initialize_ms']} ms")
    labels = {"pump": "pirag-mcp (pump), daemon up", "pump_no_daemon": "pirag-mcp (pump), no daemon",
              "baseline": "baseline: tools in their own process",
              "python_floor": "floor: python answering each line"}
    print_table("spawn to initialize answered, and the child's RSS after one status call",
                ["server", "spawns", "p50 ms", "max ms", "RSS p50 MiB", "USS p50 MiB"],
                [[labels[kind], f["spawns"], f["initialize_p50_ms"], f["initialize_max_ms"], f["rss_p50_mib"],
                  f["uss_p50_mib"]]
                 for kind, f in report["spawns"].items()])
    daemon = report["daemon_per_session"]
    per = report["per_session_rss_mib"]
    print(f"per-session RSS: pump + daemon share {per['pump_plus_daemon']} MiB (daemon +{daemon['rss_per_session_kib']}"
          f" KiB, {daemon['fds_per_session']} FDs, {daemon['tasks_per_session']} tasks per open session, "
          f"{daemon['sessions']} side by side) vs baseline {per['baseline']} MiB: {per['ratio_baseline_over_pump']}x "
          f"smaller; after they closed: {daemon['after_close']}")
    labels = {"pump": "pirag-mcp (pump -> daemon's MCP server)", "baseline": "baseline: tools in their own process",
              "floor": "no-op FastMCP tool, stdio (SDK floor)", "async": "AsyncClient.search", "sync": "Client.search"}
    print_table(f"search round trip, query-cache hit, k=8, max_chars={max_chars}, MCP SDK stdio client "
                f"(best of {rounds} rounds)", ["path", "calls", "p50 us", "p99 us"],
                [[labels[name], f["calls"], f["p50_us"], f["p99_us"]] for name, f in report["calls"].items()])
    cycles = report["cycles"]
    print_table(f"leak check: {cycles['cycles']} sessions opened and closed one after another (daemon)",
                ["after cycle", "FDs", "tasks", "sessions open", "RSS MiB"],
                [[p["cycle"], p["fds"], p["tasks"], p["sessions_open"], p["rss_mib"]] for p in cycles["points"]])
    print(f"leak check: {'flat' if cycles['flat'] else 'NOT FLAT'} (delta {cycles['delta']})")
    ratios = report["ratios"]
    print(f"ratios: initialize p50 baseline/pump {ratios['initialize_p50_baseline_over_pump']}x, pump/python floor "
          f"{ratios['initialize_p50_pump_over_python_floor']}x; search p50 "
          f"pump/baseline {ratios['search_p50_pump_over_baseline']}x, pump/AsyncClient "
          f"{ratios['search_p50_pump_over_async']}x, pump/SDK floor {ratios['search_p50_pump_over_sdk_floor']}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pirag-stress mcp-bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--socket", default=str(default_socket_path()))
    parser.add_argument("--calls", type=int, default=300, help="search calls per path per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-chars", type=int, default=4000, help="the search budget (bridge and client)")
    parser.add_argument("--spawns", type=int, default=10, help="spawn-to-initialize samples per kind of server")
    parser.add_argument("--sessions", type=int, default=10, help="sessions open side by side for the daemon's share")
    parser.add_argument("--cycles", type=int, default=50, help="sessions opened and closed for the leak check")
    parser.add_argument("--keep", action="store_true", help=f"keep the {PROJECT!r} project afterwards")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    report = run(args.socket, args.calls, args.rounds, args.max_chars, args.spawns, args.sessions, args.cycles,
                 args.keep)
    print_report(report, args.rounds, args.max_chars)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0 if report["cycles"]["flat"] else 1


if __name__ == "__main__":
    sys.exit(main())
