"""Core operations: hello, ping, status."""

from __future__ import annotations

from typing import Any

import msgspec

from .base import Args, Result, define_op


class HelloArgs(Args):
    protocol: int = 1
    client: str = ""


class HelloResult(Result):
    protocol: int
    server_version: str
    capabilities: list[str]
    limits: dict[str, int]
    pid: int


class PingArgs(Args):
    pass


class PingResult(Result):
    pong: bool = True


class StatusArgs(Args):
    pass


class LatencySummary(msgspec.Struct, kw_only=True):
    p50_ms: float
    p99_ms: float
    samples: int
    recent_p99_ms: float = 0.0      # over the last RECENT_TICKS ticks (~10 s): what a benchmark phase saw
    max_ms: float = 0.0


class StatusResult(Result):
    version: str
    protocol: int
    pid: int
    uptime_s: float
    connections: int
    connections_total: int
    inflight: int
    requests_by_op: dict[str, int]
    errors_by_code: dict[str, int]
    loop_lag: LatencySummary
    rss_bytes: int
    socket: str
    state_dir: str
    config: dict[str, Any]
    # One entry per component (embed, caches, stores, jobs...), each reporting its own figures.
    components: dict[str, dict[str, Any]] = {}
    # starting | ready | stopping; while starting, state_detail says what start-up is doing. `pirag status --wait`
    # waits for ready. Empty from a daemon older than this field.
    state: str = ""
    state_detail: str | None = None


HELLO = define_op("hello", HelloArgs, HelloResult, idempotent=True,
                  summary="Handshake: protocol version, server version, capabilities and limits.")
PING = define_op("ping", PingArgs, PingResult, idempotent=True, summary="Liveness check; does no work.")
STATUS = define_op("status", StatusArgs, StatusResult, idempotent=True,
                   summary="Daemon figures: uptime, connections, requests, errors, loop lag, RSS, components.")
