"""``pirag-mcp``: pirag's documents and memory as MCP tools for AI agents, over stdio.

A thin bridge: it holds one ``AsyncClient`` for its lifetime and turns tool calls into daemon calls; all state
and the warm model stay in the daemon. It answers ``initialize`` at once, daemon or not (nothing connects until
a tool is called), loads no model and imports only ``pirag.client`` and the MCP SDK. Nothing but the protocol
goes to stdout: the protocol gets a private copy of file descriptor 1, and fd 1 itself (``print``, stray C
output) is pointed at stderr, where the logs go too.

    pirag-mcp [--socket PATH] [--project NAME] [--timeout S] [--log-level LEVEL]

Tools: ``mcp_tools`` (search, ingest, ingest_status, list_projects, list_sources, drop, status) and
``mcp_memory_tools`` (get_context, remember, recall, forget, log_episode, timeline). See docs/MCP.md.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .paths import default_socket_path
from .version import __version__

if TYPE_CHECKING:
    from mcp.server.fastmcp import FastMCP

    from .mcp_tools import Bridge

log = logging.getLogger("pirag.mcp")

INSTRUCTIONS = """\
pirag is this machine's local memory: ingested documents (search), remembered facts (remember, recall, forget) \
and a timeline of past episodes (log_episode, timeline). At the start of a task call get_context with the task; \
remember durable facts (decisions, conventions, preferences) and log notable events with log_episode. \
Every answer respects max_chars."""


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pirag-mcp", description="MCP server (stdio) that gives AI agents pirag's documents and memory as tools.")
    parser.add_argument("--socket", type=Path, default=None,
                        help="the daemon's socket (default: $PIRAG_SOCKET, else the standard path)")
    parser.add_argument("--project", default=os.environ.get("PIRAG_PROJECT", ""),
                        help="default project for tools called without one (default: $PIRAG_PROJECT)")
    parser.add_argument("--timeout", type=float, default=float(os.environ.get("PIRAG_MCP_TIMEOUT", "120")),
                        help="seconds to wait for one daemon reply (default: 120)")
    parser.add_argument("--log-level", default=os.environ.get("PIRAG_MCP_LOG_LEVEL", "WARNING"),
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level on stderr (default: WARNING)")
    parser.add_argument("--version", action="version", version=f"pirag-mcp {__version__}")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return make_parser().parse_args(argv)


def build_server(socket: Path, project: str = "", timeout: float = 120.0,
                 log_level: str = "WARNING") -> tuple[FastMCP, Bridge]:
    """The FastMCP server with every tool registered, and the ``Bridge`` holding its client."""
    from mcp.server.fastmcp import FastMCP

    from .mcp_memory_tools import register_memory_tools
    from .mcp_tools import Bridge, BridgeSettings, register_document_tools

    bridge = Bridge(BridgeSettings(socket=socket, project=project, timeout=timeout))
    instructions = INSTRUCTIONS + (f" The default project is {project!r}." if project else "")
    server = FastMCP("pirag", instructions=instructions, log_level=log_level)  # type: ignore[arg-type]
    server._mcp_server.version = __version__   # serverInfo.version: pirag's, not the SDK's
    register_memory_tools(server, bridge)
    register_document_tools(server, bridge)
    return server, bridge


async def serve(server: FastMCP, bridge: Bridge, protocol_out: io.TextIOBase) -> None:
    import anyio
    from mcp.server.stdio import stdio_server

    # FastMCP.run_stdio_async would write to sys.stdout, which is stderr here: run its low-level server on
    # the protocol's own stream instead.
    lowlevel = server._mcp_server
    try:
        async with stdio_server(stdout=anyio.wrap_file(protocol_out)) as (read_stream, write_stream):
            await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())
    finally:
        await bridge.close()


def _take_stdout() -> io.TextIOWrapper:
    """A private stream on the original stdout for the protocol; fd 1 and ``sys.stdout`` now go to stderr."""
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return io.TextIOWrapper(open(protocol_fd, "wb"), encoding="utf-8", newline="\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level,
                        format="pirag-mcp | %(levelname)s | %(name)s | %(message)s")
    socket = args.socket or default_socket_path()
    protocol_out = _take_stdout()
    server, bridge = build_server(socket, args.project, args.timeout, args.log_level)
    log.info("serving MCP on stdio; daemon socket %s, default project %r", socket, args.project)
    import anyio
    try:
        anyio.run(serve, server, bridge, protocol_out)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
