"""PNG plots of a report (matplotlib, Agg backend: no display needed): latency over time, latency histogram,
daemon RSS over time; plus the rate/p99 curve of ``load`` and the marked faults of ``anomaly-detection``."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _spans(axis: Any, report: dict[str, Any]) -> None:
    """Shade injected faults (red) and detected anomalies (orange) when the report has them."""
    t0 = report["series"]["t0"]
    for fault in report["figures"].get("faults", []):
        axis.axvspan(fault["start"] - t0, fault["end"] - t0, color="red", alpha=0.12)
    for event in report["figures"].get("events", []):
        axis.axvspan(event["start"] - t0, event["end"] - t0, color="orange", alpha=0.15)


def latency_over_time(report: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(10, 4.5))
    by_op: dict[str, list[tuple[float, float]]] = defaultdict(list)
    failed: list[tuple[float, float]] = []
    for t, op, latency_ms, code in report["series"]["latency"]:
        (failed if code else by_op[op]).append((t, max(latency_ms, 1e-3)))
    for op, points in sorted(by_op.items()):
        array = np.asarray(points)
        axis.scatter(array[:, 0], array[:, 1], s=3, alpha=0.35, label=op)
    if failed:
        array = np.asarray(failed)
        axis.scatter(array[:, 0], array[:, 1], s=12, marker="x", color="red", label="error")
    windows = report["series"].get("windows")
    if windows:
        axis.plot(windows["t"], windows["p90_ms"], color="black", linewidth=1, label="p90 per window")
    _spans(axis, report)
    axis.set_yscale("log")
    axis.set_xlabel("time since start (s)")
    axis.set_ylabel("latency (ms)")
    axis.set_title(f"{report['scenario']}: latency over time")
    axis.legend(loc="upper right", fontsize=7, markerscale=3, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def latency_histogram(report: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(8, 4.5))
    by_op: dict[str, list[float]] = defaultdict(list)
    for _, op, latency_ms, code in report["series"]["latency"]:
        if not code:
            by_op[op].append(max(latency_ms, 1e-3))
    everything = [x for values in by_op.values() for x in values]
    if everything:
        bins = np.logspace(np.log10(min(everything)), np.log10(max(everything)) + 1e-9, 60)
        for op, values in sorted(by_op.items()):
            axis.hist(values, bins=bins, histtype="step", label=op)
        axis.set_xscale("log")
    axis.set_xlabel("latency (ms)")
    axis.set_ylabel("requests")
    axis.set_title(f"{report['scenario']}: latency histogram")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def rss_over_time(report: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    monitor = report["series"]["monitor"]
    figure, axis = plt.subplots(figsize=(10, 4.5))
    axis.plot(monitor["t"], monitor["rss_mb"], label="RSS, daemon (MB)")
    if any(monitor.get("children_rss_mb") or []):
        axis.plot(monitor["t"], monitor["total_rss_mb"], label="RSS, daemon + index worker (MB)")
    if any(v is not None for v in monitor["uss_mb"]):
        axis.plot(monitor["t"], [v if v is not None else np.nan for v in monitor["uss_mb"]], label="USS (MB)")
    fit = report["figures"].get("total_rss_fit") or report["figures"].get("rss_fit")
    if fit:
        xs = np.asarray(fit["t"])
        axis.plot(xs, fit["intercept"] + fit["slope_mb_per_s"] * xs, "--", color="black", label="Theil-Sen fit")
    _spans(axis, report)
    axis.set_xlabel("time since start (s)")
    axis.set_ylabel("MB")
    other = axis.twinx()
    if any(v is not None for v in monitor["fds"]):
        other.plot(monitor["t"], [v if v is not None else np.nan for v in monitor["fds"]], color="grey",
                   linewidth=0.8, label="open FDs")
    other.plot(monitor["t"], monitor["threads"], color="green", linewidth=0.8, label="threads")
    other.set_ylabel("FDs / threads")
    lines = axis.get_legend_handles_labels()
    more = other.get_legend_handles_labels()
    axis.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", fontsize=7)
    axis.set_title(f"{report['scenario']}: daemon memory over time")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def load_curve(report: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    steps = report["figures"]["steps"]
    figure, axis = plt.subplots(figsize=(8, 4.5))
    offered = [s["offered_rps"] for s in steps]
    axis.plot(offered, [s["p99_ms"] or np.nan for s in steps], "o-", label="p99")
    axis.plot(offered, [s["p50_ms"] or np.nan for s in steps], "o-", label="p50")
    axis.axhline(report["params"]["target_p99_ms"], color="red", linestyle="--", label="p99 target")
    axis.set_xlabel("offered rate (req/s)")
    axis.set_ylabel("latency (ms)")
    axis.set_yscale("log")
    other = axis.twinx()
    other.plot(offered, [s["achieved_rps"] for s in steps], "s:", color="grey", label="achieved req/s")
    other.set_ylabel("achieved req/s")
    axis.legend(loc="upper left", fontsize=7)
    axis.set_title("load: latency vs offered rate")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_plots(report: dict[str, Any], out_dir: Path, prefix: str) -> list[str]:
    paths = [latency_over_time(report, out_dir / f"{prefix}-latency.png"),
             latency_histogram(report, out_dir / f"{prefix}-histogram.png"),
             rss_over_time(report, out_dir / f"{prefix}-rss.png")]
    if report["scenario"] == "load" and report["figures"].get("steps"):
        paths.append(load_curve(report, out_dir / f"{prefix}-load.png"))
    return [str(path) for path in paths]
