"""``large-files``: ingest documents of 1 MB and 10 MB (built from the Python standard library's sources on this
machine, sent by content) while other clients keep searching; ingestion time and rate, search latency before
and during ingestion, peak RSS.

Phases: a short search-only baseline, then each size in turn is ingested (one ``ingest`` request carrying the
whole text, ``wait=True``) while ``--searchers`` clients search the seeded project. The searchers stop when the
last ingestion returns (or at ``--max-duration``).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import Any

import numpy as np

from pirag.client import Client
from pirag.client.errors import PiragError
from pirag.client.protocol.documents import DocumentIn

from .ingest_bench import stdlib_files
from .report import Check, Sample
from .scenario_base import Outcome, Run, common_checks, scenario_main
from .scenario_concurrent import cleanup, seed_project

NAME = "large-files"
QUICK = {"sizes": "0.05", "searchers": 2, "baseline": 2.0, "max_duration": 60.0,
         "max_search_p99_ms": 30000.0}
SEARCH_MIX = {"search": 70, "search_nocache": 30}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="1,10", help="document sizes in MB (default 1,10)")
    parser.add_argument("--searchers", type=int, default=4, help="clients searching meanwhile (default 4)")
    parser.add_argument("--baseline", type=float, default=5.0, help="seconds of search-only baseline")
    parser.add_argument("--max-duration", type=float, default=900.0, help="bound on the ingestion phase, s")
    parser.add_argument("--max-search-p99-ms", type=float, default=5000.0, help="check: search p99 during ingest")
    parser.add_argument("--max-rss-mb", type=float, default=2048.0, help="check: peak daemon RSS")
    parser.add_argument("--max-error-rate", type=float, default=0.001)


def build_text(megabytes: float) -> str:
    """Real text of ~``megabytes`` MB: standard-library sources concatenated (each under a heading)."""
    limit = int(megabytes * 1_000_000)
    parts: list[str] = []
    total = 0
    for path in stdlib_files():
        if path.suffix != ".py":
            continue
        text = path.read_text("utf-8", errors="replace")
        piece = f"\n\n# ==== {path.name} ====\n\n{text}"
        parts.append(piece)
        total += len(piece.encode())
        if total >= limit:
            break
    data = "".join(parts).encode()[:limit]
    return data.decode("utf-8", errors="ignore")


def percentiles(samples: list[Sample]) -> dict[str, Any]:
    values = [s[2] * 1000 for s in samples if not s[3]]
    if not values:
        return {"count": 0}
    return {"count": len(values), "p50_ms": round(float(np.percentile(values, 50)), 2),
            "p99_ms": round(float(np.percentile(values, 99)), 2), "max_ms": round(max(values), 2)}


def run(run: Run, args: argparse.Namespace) -> Outcome:
    search_project, big_project = f"{args.tag}-docs", f"{args.tag}-big"
    seed_project(run, search_project)
    sizes = [float(size) for size in args.sizes.split(",") if size]
    texts = {size: build_text(size) for size in sizes}
    # phases 1 and 2: the searches during the ingestion are new texts, not the baseline's replayed from the caches
    base_specs = run.specs(args.searchers, args.baseline, SEARCH_MIX, projects=[search_project], max_ops=100_000,
                           phase=1)
    base_start, base_end, baseline = run.traffic(base_specs, "search baseline")

    ingests: list[dict[str, Any]] = []
    ingest_samples: list[Sample] = []
    done = threading.Event()

    def ingest_all() -> None:
        try:
            with Client(run.socket, timeout=args.max_duration) as client:
                for size in sizes:
                    text = texts[size]
                    started = time.monotonic()
                    rss_before = client.status().rss_bytes
                    try:
                        result = client.ingest(big_project, documents=[
                            DocumentIn(source=f"big-{size:g}mb.txt", text=text)], wait=True)
                        code = ""
                    except PiragError as exc:
                        result, code = None, exc.code
                    finished = time.monotonic()
                    ingest_samples.append((started, f"ingest_{size:g}MB", finished - started, code))
                    seconds = finished - started
                    figures: dict[str, Any] = {"size_mb": size, "bytes": len(text.encode()), "seconds": round(seconds, 2),
                                               "error": code, "start": started, "end": finished,
                                               "rss_before_mb": round(rss_before / (1 << 20), 1)}
                    if result is not None:
                        chunks = result.chunks_embedded + result.chunks_reused
                        figures.update(chunks=chunks, tokens=result.tokens, chunks_per_s=round(chunks / seconds, 1),
                                       mb_per_s=round(len(text.encode()) / 1e6 / seconds, 3),
                                       state=result.state, errors=[e.reason for e in result.errors][:5])
                    ingests.append(figures)
        finally:
            done.set()

    thread = threading.Thread(target=ingest_all, daemon=True)
    specs = run.specs(args.searchers, args.max_duration, SEARCH_MIX, projects=[search_project], max_ops=1_000_000,
                      phase=2)
    thread.start()
    start, end, during = run.traffic(specs, "ingesting " + ", ".join(f"{s:g} MB" for s in sizes), until=done.is_set)
    thread.join(timeout=args.max_duration + 60)
    run.samples.extend(ingest_samples)

    peaks = []
    for item in ingests:
        window = [s.rss_mb for s in run.monitor.process_samples if item["start"] <= s.t <= item["end"] + 1.0]
        item["peak_rss_mb"] = round(max(window), 1) if window else None
        in_window = [s for s in during if item["start"] <= s[0] <= item["end"]]
        item["search_during"] = percentiles(in_window)
        peaks.append(item["peak_rss_mb"] or 0.0)
        item["start"], item["end"] = round(item["start"] - run.start, 2), round(item["end"] - run.start, 2)
    figures = {"ingests": ingests, "search_baseline": percentiles(baseline), "search_during": percentiles(during),
               "peak_rss_mb": max(peaks) if peaks else None}
    figures["cleanup"] = cleanup(run, [search_project, big_project])
    checks = common_checks(run, [*baseline, *during, *ingest_samples], args.max_error_rate, None)
    checks.append(Check("every ingestion completed", all(i.get("error") == "" and "chunks" in i for i in ingests)
                        and len(ingests) == len(sizes), True, "true"))
    checks.append(Check("search p99 ms during ingestion", figures["search_during"].get("p99_ms"),
                        args.max_search_p99_ms, "<="))
    checks.append(Check("peak RSS MB", figures["peak_rss_mb"], args.max_rss_mb, "<="))
    return Outcome(figures=figures, checks=checks)


def main(argv: list[str] | None = None) -> int:
    return scenario_main(sys.modules[__name__], argv)
