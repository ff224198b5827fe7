"""``concurrent``: N clients at once running a realistic mix of search, remember, recall, log_episode, timeline
and small ingests; latency p50/p95/p99/max per op, throughput, errors by code, daemon resources.

Before the clients start, one project is seeded with a few documents so that searches have something to find.
Every client is its own connection, spread over several worker processes; each stops after ``--duration`` s or
``--max-ops`` requests, whichever comes first.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from pirag.client.protocol.documents import DocumentIn

from .report import Check
from .scenario_base import Outcome, Run, common_checks, scenario_main
from .workers import DEFAULT_MIX, stdlib_paragraphs

NAME = "concurrent"
QUICK = {"clients": 8, "duration": 6.0, "max_p99_ms": 30000.0, "max_p99_interactive_ms": 30000.0}  # CI: no timing verdicts
BULK_OPS = {"ingest_small"}  # background work: its latency is not what an interactive client waits for


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=int, default=20, help="concurrent connections (default 20)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds (default 30)")
    parser.add_argument("--max-ops", type=int, default=100_000, help="requests per client at most")
    parser.add_argument("--think", type=float, default=0.0, help="mean pause between a client's requests, s")
    parser.add_argument("--mix", default="", help="op weights, e.g. search=35,recall=20 (default: the realistic mix)")
    parser.add_argument("--max-p99-ms", type=float, default=2000.0, help="check: p99 over all ops")
    parser.add_argument("--max-error-rate", type=float, default=0.001, help="check: failed / all requests")
    parser.add_argument("--max-p99-interactive-ms", type=float, default=1000.0,
                        help="check: p99 of every op but ingest_small (what an agent waits for)")


def parse_mix(text: str) -> dict[str, float]:
    if not text:
        return dict(DEFAULT_MIX)
    return {name: float(weight) for name, weight in (part.split("=") for part in text.split(",") if part)}


def seed_project(run: Run, project: str, documents: int = 12) -> None:
    paragraphs = stdlib_paragraphs(seed=run.args.seed)
    docs = [DocumentIn(source=f"seed/doc-{n}.md", text="\n\n".join(paragraphs[(n * 5 + i) % len(paragraphs)]
                                                                     for i in range(5)))
            for n in range(documents)]
    run.client.ingest(project, documents=docs, wait=True)


def cleanup(run: Run, projects: list[str]) -> dict[str, Any]:
    dropped = {}
    for project in projects:
        try:
            result = run.client.drop_project(project)
            dropped[project] = result.chunks
        except Exception as exc:  # cleanup must not hide the figures
            dropped[project] = f"{type(exc).__name__}: {exc}"
    return dropped


def where_time_went(run: Run, before: dict[str, Any]) -> dict[str, Any]:
    """The daemon's own figures over the traffic: the embedding engine's latency lane against its bulk contexts,
    and per vector-index op the time spent waiting for the one index worker and the time inside it."""
    after = run.client.status().components or {}
    embed0, embed1 = before.get("embed", {}), after.get("embed", {})
    lane0, lane1 = embed0.get("lane", {}), embed1.get("lane", {})
    figures: dict[str, Any] = {
        "embed": {"batches": embed1.get("batches", 0) - embed0.get("batches", 0),
                  "texts": embed1.get("texts", 0) - embed0.get("texts", 0),
                  "lane_batches": lane1.get("batches", 0) - lane0.get("batches", 0),
                  "lane_texts": lane1.get("texts", 0) - lane0.get("texts", 0),
                  "gate_waits": lane1.get("gate_waits", 0) - lane0.get("gate_waits", 0)}}
    ops0 = before.get("vectors", {}).get("ops", {})
    vector_ops = {}
    for op, row in after.get("vectors", {}).get("ops", {}).items():
        first = ops0.get(op, {"calls": 0, "wait_s": 0.0, "busy_s": 0.0})
        calls = row["calls"] - first["calls"]
        if calls:
            vector_ops[op] = {"calls": calls,
                              "mean_wait_ms": round((row["wait_s"] - first["wait_s"]) * 1000 / calls, 2),
                              "mean_busy_ms": round((row["busy_s"] - first["busy_s"]) * 1000 / calls, 2)}
    figures["vector_ops"] = vector_ops
    return figures


def run(run: Run, args: argparse.Namespace) -> Outcome:
    projects = [f"{args.tag}-docs"]
    seed_project(run, projects[0])
    before = run.client.status().components or {}
    specs = run.specs(args.clients, args.duration, parse_mix(args.mix), projects=projects,
                      max_ops=args.max_ops, think_s=args.think)
    start, end, samples = run.traffic(specs, f"{args.clients} clients")
    figures: dict[str, Any] = {"clients": args.clients, "workers": len(specs), "traffic_s": round(end - start, 2)}
    figures["where_time_went"] = where_time_went(run, before)
    figures["cleanup"] = cleanup(run, projects)
    checks = common_checks(run, samples, args.max_error_rate, args.max_p99_ms)
    checks.append(Check("requests completed", len(samples), args.clients, ">="))
    interactive = [s[2] * 1000 for s in samples if not s[3] and s[1] not in BULK_OPS]
    figures["p99_interactive_ms"] = round(float(np.percentile(interactive, 99)), 2) if interactive else None
    figures["p50_interactive_ms"] = round(float(np.percentile(interactive, 50)), 2) if interactive else None
    checks.append(Check("p99 ms (all ops but ingest_small)", figures["p99_interactive_ms"],
                        args.max_p99_interactive_ms, "<="))
    return Outcome(figures=figures, checks=checks)


def main(argv: list[str] | None = None) -> int:
    import sys

    return scenario_main(sys.modules[__name__], argv)
