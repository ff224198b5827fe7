"""The daemon's MCP server: sessions carried on the daemon's socket (``sessions``, ``loopback``), the official
SDK's server with pirag's tools (``sdk_server``, ``tools``, ``memory_tools``, ``format``; loaded on the first
session), the record of its answers that ``pirag-mcp`` falls back on (``snapshot``) and the per-process stdio
server of the earlier design, kept as mcp_bench's baseline (``standalone``). See docs/MCP.md."""
