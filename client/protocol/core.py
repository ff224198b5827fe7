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


# Upper bounds (ms, inclusive) of the loop-lag histogram in ``status``; one more count follows for the lags above.
LAG_BUCKETS_MS = (0.5, 1, 1.5, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 20, 30, 50, 100, 250, 500, 1000, 5000)


class LatencySummary(msgspec.Struct, kw_only=True):
    p50_ms: float
    p99_ms: float
    samples: int
    recent_p99_ms: float = 0.0      # over the last ~10 s of samples
    max_ms: float = 0.0
    histogram: list[int] = []       # counts per LAG_BUCKETS_MS bucket since start: subtract two readings


def lag_quantile_ms(before: list[int], after: list[int], q: float) -> float | None:
    """The ``q`` quantile of the loop lags sampled between two ``status`` readings, as the upper bound of its
    bucket (conservative: a lag of 7.2 ms reads as 8); ``None`` without samples, ``inf`` above the last bound."""
    counts = [a - b for a, b in zip(after, before)] if before else list(after)
    total = sum(counts)
    if total <= 0:
        return None
    rank, seen = q * total, 0
    for bound, count in zip((*LAG_BUCKETS_MS, float("inf")), counts):
        seen += count
        if seen >= rank:
            return float(bound)
    return float("inf")


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
