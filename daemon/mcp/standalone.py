"""The MCP tools served by a process of their own over stdio, with one ``AsyncClient`` to the daemon: how
``pirag-mcp`` worked before the daemon served MCP itself (issue 16). Kept only as the baseline that
``pirag-stress mcp-bench`` measures in the same run as the pump; it is not an installed command.

    python -m pirag.daemon.mcp.standalone [--socket PATH] [--project NAME] [--timeout S] [--log-level LEVEL]
"""

from __future__ import annotations

import io
import logging
import sys
from typing import Any, BinaryIO

import anyio
from mcp.server.stdio import stdio_server

from pirag.client import AsyncClient
from pirag.client.mcp_bridge import _take_stdout, make_parser
from pirag.client.mcp_fallback import instructions
from pirag.client.paths import default_socket_path
from pirag.client.protocol import Args, OpSpec

from .sdk_server import INSTRUCTIONS, build_fastmcp
from .tools import Bridge, BridgeSettings, SessionScope


async def serve(settings: BridgeSettings, log_level: str, protocol_out: BinaryIO) -> None:
    client = AsyncClient(settings.socket, timeout=settings.timeout, connect_timeout=3.0)

    def call(spec: OpSpec, args: Args) -> Any:
        return client.call(spec.name, args)

    server = build_fastmcp(Bridge(fixed=SessionScope(settings=settings, call=call)), log_level)
    lowlevel = server._mcp_server
    options = lowlevel.create_initialization_options()
    options = options.model_copy(update={"instructions": instructions(INSTRUCTIONS, settings.project)})
    out = anyio.wrap_file(io.TextIOWrapper(protocol_out, encoding="utf-8", newline="\n"))
    try:
        async with stdio_server(stdout=out) as (read_stream, write_stream):
            await lowlevel.run(read_stream, write_stream, options)
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level)
    settings = BridgeSettings(socket=args.socket or default_socket_path(), project=args.project, timeout=args.timeout)
    protocol_out = _take_stdout()
    try:
        anyio.run(serve, settings, args.log_level, protocol_out)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
