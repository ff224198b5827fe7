"""``pirag-stress mcp-bench`` runs end to end on a small scale against the real daemon, and what it measures holds:
sessions leave nothing behind in the daemon, and the pump is lighter than the per-process baseline."""

from __future__ import annotations

from typing import Any

from pirag.stress import mcp_bench


def test_mcp_bench_small(daemon: Any) -> None:
    report = mcp_bench.run(str(daemon.socket), calls=5, rounds=1, max_chars=2000, spawns=1, sessions=2, cycles=4,
                           keep=False)
    assert report["cycles"]["flat"], report["cycles"]
    assert report["daemon_per_session"]["open_sessions_seen"] >= 2
    assert report["daemon_per_session"]["after_close"] == {"fds": 0, "tasks": 0, "sessions_open": 0}
    spawned = report["spawns"]
    assert spawned["pump"]["rss_p50_mib"] < spawned["baseline"]["rss_p50_mib"]
    assert set(report["calls"]) == {"pump", "baseline", "async", "sync", "floor"}
    mcp_bench.print_report(report, rounds=1, max_chars=2000)
