"""``memory-leaks``: a long mixed run on a bounded data set (facts, sources and queries drawn from fixed pools, so
the stores stop growing after warm-up); the daemon's RSS, USS, open FDs and threads are sampled every 0.5 s and
a robust (Theil-Sen) slope after warm-up, against the daemon's own request count, gives MB per 10k operations.

Before the measured run the caches are filled: the same traffic runs until the daemon's ``status`` shows the
query cache and the embedding cache at least ``--fill`` full (by entries or by bytes, whichever bound is
nearer) or ``--fill-max-s`` passed, so that a cache filling up is not mistaken for a leak. A slope above
``--max-mb-per-10k`` fails the check. Warm-up (the first ``--warmup`` fraction of the measured run) is left
out as well: lazily created objects appear there. The slope is taken against operations rather than
time so that a slow machine and a fast one give comparable figures.

What is measured: the daemon process AND its children (the vector-index worker, a separate interpreter that
holds Chroma), sampled from outside with psutil. The figures come three ways: ``rss_mb`` (the daemon alone),
``children_rss_mb`` (the worker) and ``total_rss_mb`` (both: what a Pi's cgroup charges; the shared libraries
both map are counted twice, so it is an upper bound, ``total_uss_mb`` the lower one). The daemon's RSS is also
split into ``anon_mb`` (heap, stacks) and ``file_mb`` (libraries, SQLite's mmap reads). The checks judge the
total: its slope, its slope's 95 % interval, and its peak against ``--max-total-rss-mb``. A long run is also cut
into ``--window-s`` windows (900 s) with a slope and interval each, so that a 1-hour run shows whether growth
levels off or keeps going.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

import numpy as np

from .anomaly import change_points, theil_sen, theil_sen_ci
from .report import Check
from .scenario_base import Outcome, Run, common_checks, scenario_main
from .scenario_concurrent import cleanup, seed_project

NAME = "memory-leaks"
QUICK = {"duration": 15.0, "clients": 4, "max_mb_per_10k": 200.0, "max_fds_per_10k": 500.0, "fill_max_s": 5.0,
         "max_total_rss_mb": 4000.0}  # a few hundred ops on a daemon the other scenarios used: machinery only
MIX = {"search": 35, "recall": 20, "remember": 15, "log_episode": 5, "timeline": 15, "ingest_small": 10}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds (default 300)")
    parser.add_argument("--max-ops", type=int, default=1_000_000, help="requests per client at most")
    parser.add_argument("--warmup", type=float, default=0.25, help="fraction of the run left out of the fit")
    parser.add_argument("--pool", type=int, default=200, help="distinct facts/queries/sources per client")
    parser.add_argument("--max-mb-per-10k", type=float, default=8.0, help="check: RSS slope, MB per 10k ops")
    parser.add_argument("--max-fds-per-10k", type=float, default=2.0, help="check: open-FD slope per 10k ops")
    parser.add_argument("--max-error-rate", type=float, default=0.001)
    parser.add_argument("--fill", type=float, default=0.95, help="cache fill (0..1) reached before measuring")
    parser.add_argument("--fill-max-s", type=float, default=600.0, help="longest cache-filling phase, seconds")
    parser.add_argument("--settle-s", type=float, default=0.0,
                        help="after the caches, also fill until the RSS grew < --settle-mb over this many seconds "
                             "(bounded caches that fill slowly: SQLite's page caches); 0: caches only")
    parser.add_argument("--settle-mb", type=float, default=4.0)
    parser.add_argument("--max-total-rss-mb", type=float, default=500.0,
                        help="check: peak RSS of the daemon + its index worker during the measured run")
    parser.add_argument("--window-s", type=float, default=900.0, help="slope per window of this many seconds")


CI_EVERY_S = 20.0  # one sample per 20 s for the confidence interval: 0.5 s samples are far from independent


def slope_ci(t: np.ndarray, ops: np.ndarray, values: list[float]) -> list[float] | None:
    """95 % interval of the per-10k-ops slope (Sen), on samples thinned to one per CI_EVERY_S seconds."""
    picked, last = [], -math.inf
    for index, moment in enumerate(t):
        if moment - last >= CI_EVERY_S:
            picked.append(index)
            last = moment
    if len(picked) < 6:
        return None
    low, high = theil_sen_ci(ops[picked], np.asarray(values, dtype=float)[picked])
    return [round(low * 10_000, 3), round(high * 10_000, 3)]


# anon_mb / file_mb split the daemon's RSS: its heap, which a leak grows, and its file-backed pages (libraries,
# and SQLite's memory-mapped reads, which follow the database file's growth and which the kernel can drop)
MEMORY_SERIES = ("rss_mb", "anon_mb", "file_mb", "children_rss_mb", "total_rss_mb", "uss_mb", "total_uss_mb",
                 "total_pss_mb")


def _ops_at(run: Run, start: float, end: float, t: np.ndarray) -> np.ndarray | None:
    """The daemon's own cumulative request count at each time of ``t`` (from its ``status`` samples)."""
    status = [s for s in run.monitor.status_samples if start <= s["t"] <= end]
    if len(status) < 4:
        return None
    return np.interp(t, np.asarray([s["t"] for s in status]), np.asarray([s["requests"] for s in status], float))


def slopes(t: np.ndarray, ops: np.ndarray, kept: list[Any], names: tuple[str, ...]) -> dict[str, Any]:
    """Per-10k-ops Theil-Sen slope (and, for memory, its 95 % interval) of each named sample field."""
    figures: dict[str, Any] = {}
    span = float(ops[-1] - ops[0]) if ops.size else 0.0
    for name in names:
        values = [getattr(s, name) for s in kept]
        if any(v is None for v in values) or span <= 0:
            figures[f"{name}_per_10k_ops"] = None
            continue
        slope, _ = theil_sen(ops, values)
        figures[f"{name}_per_10k_ops"] = round(slope * 10_000, 3)
        if name in MEMORY_SERIES:
            figures[f"{name}_per_10k_ops_ci95"] = slope_ci(t, ops, values)
    return figures


def windows(run: Run, start: float, end: float, warmup: float, window_s: float) -> list[dict[str, Any]]:
    """The measured run cut into consecutive ``window_s`` pieces, each fitted as a run of that length would be
    (its own warm-up fraction left out): the first piece of a 1-hour run is a 900-s run on the same fresh daemon.
    A last piece shorter than half a window is left out."""
    rows: list[dict[str, Any]] = []
    if window_s <= 0 or end - start < 1.5 * window_s:   # one window only: the whole-run fit says it all
        return rows
    begin = start
    while begin + window_s / 2 <= end:
        part = fit(run, begin, min(end, begin + window_s), warmup)
        keep = ("ops_fitted", "fit_from_s", "rss_mb_per_10k_ops", "rss_mb_per_10k_ops_ci95",
                "anon_mb_per_10k_ops", "anon_mb_per_10k_ops_ci95", "file_mb_per_10k_ops",
                "children_rss_mb_per_10k_ops", "children_rss_mb_per_10k_ops_ci95", "total_rss_mb_per_10k_ops",
                "total_rss_mb_per_10k_ops_ci95", "total_rss_mb_start_end_peak", "children_rss_mb_start_end_peak",
                "total_pss_mb_per_10k_ops", "total_pss_mb_start_end_peak",
                "cache_mb_fitted_start_end", "error")
        rows.append({"from_s": round(begin - run.start, 1), "to_s": round(min(end, begin + window_s) - run.start, 1),
                     **{key: part[key] for key in keep if key in part}})
        begin += window_s
    return rows


def fit(run: Run, start: float, end: float, warmup: float, window_s: float = 0.0) -> dict[str, Any]:
    process = [s for s in run.monitor.process_samples if start <= s.t <= end]
    if len(process) < 8:
        return {"error": "too few samples"}
    fit_from = start + warmup * (end - start)
    kept = [s for s in process if s.t >= fit_from]
    t = np.asarray([s.t for s in kept])
    ops = _ops_at(run, start, end, t)
    if ops is None:
        return {"error": "too few samples"}
    ops_span = float(ops[-1] - ops[0]) if ops.size else 0.0
    figures: dict[str, Any] = {"ops_fitted": int(ops_span), "samples_fitted": int(t.size),
                               "fit_from_s": round(fit_from - run.start, 1)}
    figures.update(slopes(t, ops, kept, MEMORY_SERIES + ("fds", "threads")))
    for name in ("rss_mb", "anon_mb", "file_mb", "children_rss_mb", "total_rss_mb", "total_pss_mb"):
        values = [getattr(s, name) for s in process]
        if any(v is None for v in values):
            continue
        figures[f"{name}_start_end_peak"] = [round(values[0], 1), round(values[-1], 1), round(max(values), 1)]
    figures["worker_processes"] = max(s.children for s in process)
    status = [s for s in run.monitor.status_samples if fit_from <= s["t"] <= end]
    if status:  # bounded caches must be flat here: they were filled before
        figures["cache_mb_fitted_start_end"] = [round(status[0]["cache_bytes"] / 1e6, 2),
                                                round(status[-1]["cache_bytes"] / 1e6, 2)]
        # what the data set still adds: episodes are an append-only log (no retention by default), so their
        # rows, vectors and page-cache pages grow with the run whatever the pools bound
        figures["episodes_logged_fitted"] = status[-1]["episodes_logged"] - status[0]["episodes_logged"]
        figures["db_mb_fitted_start_end"] = [round(status[0]["db_bytes"] / 1e6, 2),
                                             round(status[-1]["db_bytes"] / 1e6, 2)]
        figures["vector_compactions_fitted"] = status[-1]["vector_compactions"] - status[0]["vector_compactions"]
    rss = np.asarray([s.total_rss_mb for s in kept])
    slope_t, intercept_t = theil_sen(t - run.start, rss)
    figures["total_rss_fit"] = {"t": [round(float(t[0] - run.start), 2), round(float(t[-1] - run.start), 2)],
                                "slope_mb_per_s": round(slope_t, 5), "intercept": round(intercept_t, 2)}
    figures["total_rss_mb_per_hour"] = round(slope_t * 3600, 1)
    figures["rss_change_points_s"] = [round(float(t[i] - run.start), 1)
                                      for i in change_points(rss, min_size=8, threshold=8, min_effect=5.0)]
    figures["ops_per_s"] = round(ops_span / max(1e-9, float(t[-1] - t[0])), 1)
    if window_s:
        figures["windows"] = windows(run, start, end, warmup, window_s)
    return figures


def cache_fill(run: Run) -> dict[str, float]:
    latest = run.monitor.status_samples[-1] if run.monitor.status_samples else {}
    return {"query_cache": latest.get("query_cache_fill", 0.0), "embed_cache": latest.get("embed_cache_fill", 0.0),
            "cache_mb": round(latest.get("cache_bytes", 0) / 1e6, 2), "rss_mb": round(latest.get("rss_mb", 0), 1)}


def fill_caches(run: Run, args: argparse.Namespace, project: str) -> dict[str, Any]:
    """The same bounded traffic until both caches are full (or ``--fill-max-s``); not part of the fit."""
    def full() -> bool:
        fill = cache_fill(run)
        return min(fill["query_cache"], fill["embed_cache"]) >= args.fill and settled()

    def settled() -> bool:
        """The RSS grew less than --settle-mb over the last --settle-s (a leak never gets there: the cap ends it)."""
        if not args.settle_s:
            return True
        samples = run.monitor.process_samples
        if not samples or samples[-1].t - phase_start < args.settle_s:
            return False
        window = [s.total_rss_mb for s in samples if s.t >= samples[-1].t - args.settle_s]
        return max(window) - window[0] < args.settle_mb

    phase_start = time.monotonic()

    specs = run.specs(args.clients, args.fill_max_s, MIX, projects=[project], max_ops=args.max_ops, bounded=True,
                      pool_size=args.pool)
    start, end, _ = run.traffic(specs, "filling the caches", until=full)
    return {**cache_fill(run), "seconds": round(end - start, 1), "reached": full(), "settle_s": args.settle_s}


def run(run: Run, args: argparse.Namespace) -> Outcome:
    project = f"{args.tag}-docs"
    seed_project(run, project)
    fill = fill_caches(run, args, project)
    specs = run.specs(args.clients, args.duration, MIX, projects=[project], max_ops=args.max_ops, bounded=True,
                      pool_size=args.pool)
    start, end, samples = run.traffic(specs, f"{args.clients} clients, bounded data")
    figures = fit(run, start, end, args.warmup, args.window_s)
    figures["cache_fill"] = fill
    figures["cleanup"] = cleanup(run, [project])
    checks = common_checks(run, samples, args.max_error_rate, None)
    checks.append(Check("RSS slope (daemon + index worker), MB per 10k ops", figures.get("total_rss_mb_per_10k_ops"),
                        args.max_mb_per_10k, "<="))
    ci = figures.get("total_rss_mb_per_10k_ops_ci95")
    if ci or not getattr(args, "quick", False):   # a quick run may have too few samples for an interval
        checks.append(Check("RSS slope 95% interval includes 0 (daemon + index worker)",
                            bool(ci) and ci[0] <= 0.0 <= ci[1], True, "true",
                            note=f"interval {ci} MB per 10k ops" if ci else "too few samples"))
    peak = (figures.get("total_rss_mb_start_end_peak") or [None] * 3)[2]
    checks.append(Check("peak RSS MB (daemon + index worker)", peak, args.max_total_rss_mb, "<="))
    pss_peak = (figures.get("total_pss_mb_start_end_peak") or [None] * 3)[2]
    if pss_peak is not None:   # shared pages counted once: what a cgroup charges, nearest (not the RSS check's bound)
        checks.append(Check("peak PSS MB (daemon + index worker)", pss_peak, args.max_total_rss_mb, "<="))
    if figures.get("fds_per_10k_ops") is not None:
        checks.append(Check("open-FD slope per 10k ops", figures["fds_per_10k_ops"], args.max_fds_per_10k, "<="))
    return Outcome(figures=figures, checks=checks)


def main(argv: list[str] | None = None) -> int:
    return scenario_main(sys.modules[__name__], argv)
