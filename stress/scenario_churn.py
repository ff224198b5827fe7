"""``project-churn``: clients create, fill (documents, a fact, an episode), query and drop projects in a loop;
afterwards nothing may be left: no project, fact or episode of the run, no extra vector collection or segment
directory, no extra open file descriptor, and the daemon's RSS back near its baseline.

The baseline is taken after one warm-up cycle (first use loads lazily built things) and a short settle; the
final figures after the traffic and the same settle. Segment directories are counted only when the daemon's
state directory is readable by the harness (same machine and user, or root).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from pirag.client.errors import PiragError

from .monitor import sample_once
from .report import Check
from .scenario_base import Outcome, Run, scenario_main
from .workers import stdlib_paragraphs

NAME = "project-churn"
QUICK = {"clients": 3, "cycles": 2, "settle": 2.0}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=int, default=4, help="clients churning at once (default 4)")
    parser.add_argument("--cycles", type=int, default=15, help="projects per client (default 15)")
    parser.add_argument("--docs", type=int, default=4, help="documents per project (default 4)")
    parser.add_argument("--max-duration", type=float, default=600.0, help="bound on the churn, seconds")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds to wait before measuring")
    parser.add_argument("--rss-tolerance-mb", type=float, default=64.0, help="check: RSS end - baseline")
    parser.add_argument("--fd-tolerance", type=int, default=2, help="check: open FDs end - baseline")
    parser.add_argument("--max-error-rate", type=float, default=0.0)


def chroma_dirs(state_dir: str) -> int | None:
    root = Path(state_dir) / "chroma"
    try:
        return sum(1 for entry in root.iterdir() if entry.is_dir())
    except OSError:
        return None


def snapshot(run: Run, settle: float) -> dict[str, Any]:
    time.sleep(settle)
    status = run.client.status()
    process = sample_once(run.monitor.process)
    components = status.components or {}
    return {"rss_mb": round(process.rss_mb, 1), "uss_mb": None if process.uss_mb is None else round(process.uss_mb, 1),
            "fds": process.fds, "threads": process.threads,
            "projects": components.get("documents", {}).get("projects"),
            "collections_open": components.get("vectors", {}).get("collections_open"),
            "chroma_dirs": chroma_dirs(status.state_dir), "db_bytes": components.get("db", {}).get("bytes")}


def warm_up(run: Run, tag: str) -> None:
    project = f"{tag}-warmup"
    paragraphs = stdlib_paragraphs(seed=run.args.seed)
    run.client.ingest_text(project, "warm.md", "\n\n".join(paragraphs[:4]))
    run.client.remember("warm-up fact " + paragraphs[0][:200], project=project, tags=[tag])
    run.client.log_episode("warm-up episode", session=f"{tag}-warmup", project=project)
    run.client.search("warm up", project)
    run.client.recall("warm up", project=project)
    run.client.drop_project(project)


def leftovers(run: Run, tag: str, clients: list[str]) -> dict[str, Any]:
    projects = [p.name for p in run.client.list_projects().projects if p.name.startswith(tag)]
    facts = len(run.client.list_facts(tags=[tag], limit=100).facts)
    episodes = 0
    for client_id in clients:
        try:
            episodes += len(run.client.timeline(session=client_id, limit=100).episodes)
        except PiragError:
            pass
    return {"projects": projects, "facts": facts, "episodes": episodes}


def run(run: Run, args: argparse.Namespace) -> Outcome:
    warm_up(run, args.tag)
    before = snapshot(run, args.settle)
    specs = run.specs(args.clients, args.max_duration, {}, mode="churn", max_ops=args.cycles, churn_docs=args.docs)
    start, end, samples = run.traffic(specs, f"{args.clients} clients x {args.cycles} projects")
    after = snapshot(run, args.settle)
    client_ids = [f"{args.tag}-w{spec.worker}c{index}" for spec in specs for index in range(spec.clients)]
    left = leftovers(run, args.tag, client_ids + [f"{args.tag}-warmup"])
    dropped = sum(1 for s in samples if s[1] == "drop_project" and not s[3])
    figures = {"projects_churned": dropped, "before": before, "after": after, "leftovers": left,
               "rss_delta_mb": round(after["rss_mb"] - before["rss_mb"], 1),
               "fd_delta": None if after["fds"] is None or before["fds"] is None else after["fds"] - before["fds"]}
    errors = sum(1 for s in samples if s[3])
    checks = [
        Check("error rate", round(errors / max(1, len(samples)), 5), args.max_error_rate, "<="),
        Check("projects created and dropped", dropped, args.clients * args.cycles, ">="),
        Check("leftover projects", len(left["projects"]), 0, "=="),
        Check("leftover facts", left["facts"], 0, "=="),
        Check("leftover episodes", left["episodes"], 0, "=="),
        Check("projects (status) back to baseline", after["projects"], before["projects"], "<="),
        Check("RSS MB above baseline", figures["rss_delta_mb"], args.rss_tolerance_mb, "<="),
        Check("daemon alive", run.monitor.process.is_running(), True, "true"),
    ]
    if after["collections_open"] is not None and before["collections_open"] is not None:
        # daemons with Chroma in their own process report it; with the index in its worker process (daemon/store/
        # vector_worker.py) the collections' files are the worker's, restarted when it leaks, not the daemon's
        checks.append(Check("vector collections open back to baseline", after["collections_open"],
                            before["collections_open"], "<="))
    if figures["fd_delta"] is not None:
        checks.append(Check("open FDs above baseline", figures["fd_delta"], args.fd_tolerance, "<="))
    if before["chroma_dirs"] is not None and after["chroma_dirs"] is not None:
        checks.append(Check("vector segment directories above baseline", after["chroma_dirs"] - before["chroma_dirs"],
                            0, "<="))
    return Outcome(figures=figures, checks=checks)


def main(argv: list[str] | None = None) -> int:
    return scenario_main(sys.modules[__name__], argv)
