"""``latency``: what interactive clients see while the daemon ingests 10 MB: p50/p99/max of search (fresh
queries), recall, remember and log_episode with 1 and 5 clients, idle and during the ingestion, the event-loop
lag ``status`` reports, and how long a one-file ingest into the same project takes meanwhile.

Phases, in order: a pure embedding measure (the ``embed`` op on chunk-sized texts: the ingestion's yardstick);
for each client count a closed-loop idle phase of ``--phase`` seconds; then one client uploads ``--size-mb`` of
standard-library sources cut into ``--doc-kb`` documents (one ``ingest`` request) while the same phases run
again, and a one-file ingest into the ingesting project is timed once the first phase is under way. A pinger
(10 pings/s on its own connection) measures how promptly the loop answers in every phase. Bounded: each phase
by its duration, the ingestion by ``--max-duration``.

Before the phases, the floor (``floor.py``): one in-process 2-thread llama-cpp-python query embedding plus one
in-process Chroma query, measured in a child process on the daemon's model file; the idle 1-client p50 of search,
recall and remember are reported against it (issue 13: each within 1.3x).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import Any

from pirag.client import Client
from pirag.client.errors import PiragError
from pirag.client.protocol.core import lag_quantile_ms
from pirag.client.protocol.documents import DocumentIn

from .floor import floor
from .llama_peer import daemon_model_params
from .report import Check, Sample
from .scenario_base import Outcome, Run, common_checks, scenario_main
from .scenario_concurrent import cleanup, seed_project
from .scenario_large_files import build_text, percentiles

NAME = "latency"
QUICK = {"size_mb": 0.3, "phase": 4.0, "max_duration": 600.0, "embed_texts": 16, "max_ratio": 50.0,
         "max_loop_lag_ms": 5000.0, "max_one_file_s": 120.0}
OPS = ("search_nocache", "recall", "remember", "log_episode")
MIX = {op: 25 for op in OPS}
PING_INTERVAL_S = 0.1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size-mb", type=float, default=10.0, help="size of the ingestion (default 10 MB)")
    parser.add_argument("--doc-kb", type=float, default=20.0, help="the ingestion's documents, KB each (a source file)")
    parser.add_argument("--clients", default="1,5", help="client counts, one phase each (default 1,5)")
    parser.add_argument("--phase", type=float, default=20.0, help="seconds per phase (default 20)")
    parser.add_argument("--embed-texts", type=int, default=64, help="texts of the pure embedding measure")
    parser.add_argument("--max-duration", type=float, default=3600.0, help="bound on the ingestion, s")
    parser.add_argument("--max-ratio", type=float, default=2.0, help="check: p99 during / idle p99 (search, "
                        "recall, remember)")
    parser.add_argument("--max-loop-lag-ms", type=float, default=10.0, help="check: loop lag p99 during ingestion")
    parser.add_argument("--max-one-file-s", type=float, default=5.0, help="check: one-file ingest during it")
    parser.add_argument("--max-error-rate", type=float, default=0.001)
    parser.add_argument("--no-floor", action="store_true", help="skip the in-process floor measure")


class Pinger:
    """10 pings/s on one connection; samples ``(t, "ping", latency_s, code)`` like the workers'."""

    def __init__(self, socket: str):
        self.socket = socket
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "Pinger":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        with Client(self.socket, timeout=30) as client:
            while not self._stop.wait(PING_INTERVAL_S):
                started = time.monotonic()
                try:
                    client.ping()
                    code = ""
                except PiragError as exc:
                    code = exc.code
                self.samples.append((started, "ping", time.monotonic() - started, code))


def by_op(samples: list[Sample]) -> dict[str, Any]:
    ops = sorted({s[1] for s in samples})
    return {op: percentiles([s for s in samples if s[1] == op]) for op in ops}


def loop_lag(run: Run, start: float, end: float) -> dict[str, Any]:
    """The daemon's loop lag over exactly one phase: the difference of ``status``'s lag histogram (counts since
    start, one probe every 20 ms) between the first and the last reading inside it. Quantiles are bucket upper
    bounds, so they err high; ``worst_10s_p99_ms`` is the highest p99 of a 10-s window ``status`` gave meanwhile."""
    window = [s for s in run.monitor.status_samples if start <= s["t"] <= end and s.get("loop_lag_histogram")]
    if len(window) < 2:
        return {"samples": 0}
    before, after = window[0]["loop_lag_histogram"], window[-1]["loop_lag_histogram"]
    return {"samples": sum(after) - sum(before),
            "p50_ms": lag_quantile_ms(before, after, 0.5), "p99_ms": lag_quantile_ms(before, after, 0.99),
            "max_bucket_ms": lag_quantile_ms(before, after, 1.0),
            "worst_10s_p99_ms": round(max(s.get("loop_lag_recent_p99_ms", 0.0) for s in window), 2)}


def pure_embedding(run: Run, text: str, count: int) -> dict[str, Any]:
    """Chunks/s of the ``embed`` op on ``count`` unique chunk-sized texts (the ingestion's ceiling)."""
    words = text.split()
    texts = [f"{n} " + " ".join(words[n * 150:(n + 1) * 150]) for n in range(count)]
    started = time.perf_counter()
    run.client.embed(texts)
    seconds = time.perf_counter() - started
    return {"texts": count, "seconds": round(seconds, 2), "chunks_per_s": round(count / seconds, 2)}


def run(run: Run, args: argparse.Namespace) -> Outcome:
    memory_project, big_project = f"{args.tag}-docs", f"{args.tag}-big"
    seed_project(run, memory_project)
    counts = [int(c) for c in args.clients.split(",") if c]
    text = build_text(args.size_mb)
    step = int(args.doc_kb * 1000)
    documents = [DocumentIn(source=f"big/part-{n:04d}.py", text=text[offset:offset + step])
                 for n, offset in enumerate(range(0, len(text), step))]
    figures: dict[str, Any] = {"size_mb": args.size_mb, "documents": len(documents),
                               "pure_embedding": pure_embedding(run, text, args.embed_texts)}
    if not args.no_floor:
        embed_status = (run.client.status().components or {}).get("embed", {})
        model = embed_status.get("model") or {}
        figures["floor"] = (floor(model["path"], daemon_model_params(embed_status)["use_extra_bufts"])
                            if model.get("path") else {"error": "the daemon reports no model"})
    phases: list[dict[str, Any]] = []
    all_samples: list[Sample] = []

    def phase(label: str, clients: int, until: Any = None) -> dict[str, Any]:
        # each phase its own texts: the phase during ingestion must not be served by what the idle one cached
        specs = run.specs(clients, args.phase, MIX, projects=[memory_project], max_ops=1_000_000,
                          phase=len(phases) + 1)
        start, end, samples = run.traffic(specs, f"{label}, {clients} client(s)", until=until)
        all_samples.extend(samples)
        pings = [s for s in pinger.samples if start <= s[0] <= end]
        found = {"phase": label, "clients": clients, "seconds": round(end - start, 2), "ops": by_op(samples),
                 "ping": percentiles(pings), "loop_lag": loop_lag(run, start, end), "start": start, "end": end}
        phases.append(found)
        return found

    ingest: dict[str, Any] = {}
    one_file: dict[str, Any] = {}
    done = threading.Event()

    def ingest_big() -> None:
        try:
            with Client(run.socket, timeout=args.max_duration) as client:
                started = time.monotonic()
                try:
                    result = client.ingest(big_project, documents=documents, wait=True)
                    ingest.update(chunks=result.chunks_embedded + result.chunks_reused, tokens=result.tokens,
                                  sources=result.sources_added + result.sources_updated, error="")
                except PiragError as exc:
                    ingest["error"] = exc.code
                ingest.update(start=started, end=time.monotonic(), seconds=round(time.monotonic() - started, 2))
        finally:
            done.set()

    def ingest_one_file() -> None:
        with Client(run.socket, timeout=120) as client:
            started = time.monotonic()
            try:
                client.ingest(big_project, documents=[DocumentIn(source="one-file.md", text=text[:3000])],
                              wait=True)
                one_file["error"] = ""
            except PiragError as exc:
                one_file["error"] = exc.code
            one_file.update(seconds=round(time.monotonic() - started, 2),
                            while_ingesting=not done.is_set())

    with Pinger(run.socket) as pinger:
        idle = {clients: phase("idle", clients) for clients in counts}
        big = threading.Thread(target=ingest_big, daemon=True)
        big.start()
        time.sleep(min(2.0, args.phase / 2))            # the ingestion is under way (its first batches)
        timer = threading.Timer(min(3.0, args.phase / 2), ingest_one_file)
        timer.start()
        during = {clients: phase("during ingestion", clients, until=done.is_set) for clients in counts}
        timer.join()
        big.join(timeout=args.max_duration + 60)
    if ingest.get("chunks"):
        ingest["chunks_per_s"] = round(ingest["chunks"] / ingest["seconds"], 2)
        pure = figures["pure_embedding"]["chunks_per_s"]
        # the pure measure's texts are ~150 words, like the ingestion's chunks; both are chunks per second
        ingest["vs_pure_embedding"] = round(ingest["chunks_per_s"] / pure, 3) if pure else None
    for item in (ingest, *phases):
        for key in ("start", "end"):
            if key in item:
                item[key] = round(item[key] - run.start, 2)
    figures.update(ingest=ingest, one_file_ingest=one_file, phases=phases)
    ratios: dict[str, Any] = {}
    for clients in counts:
        for op in OPS:
            before = idle[clients]["ops"].get(op, {}).get("p99_ms")
            after = during[clients]["ops"].get(op, {}).get("p99_ms")
            ratios[f"{op} {clients}c"] = round(after / before, 2) if before and after else None
    figures["p99_during_vs_idle"] = ratios
    best = (figures.get("floor") or {}).get("best_p50_ms")
    if best and counts:
        idle_ops = idle[counts[0]]["ops"]
        figures["idle_p50_vs_floor"] = {op: round(idle_ops[op]["p50_ms"] / best, 2) for op in
                                        ("search_nocache", "recall", "remember") if idle_ops.get(op, {}).get("p50_ms")}
    figures["cleanup"] = cleanup(run, [memory_project, big_project])

    checks = common_checks(run, all_samples, args.max_error_rate, None)
    checks.append(Check("the ingestion completed", ingest.get("error") == "" and bool(ingest.get("chunks")), True,
                        "true"))
    for name, ratio in ratios.items():
        if not name.startswith("log_episode"):
            checks.append(Check(f"p99 during/idle {name}", ratio, args.max_ratio, "<="))
    worst_lag = max((p["loop_lag"].get("p99_ms") or 0.0 for p in during.values()), default=None)
    checks.append(Check("loop lag p99 ms during ingestion", worst_lag, args.max_loop_lag_ms, "<="))
    checks.append(Check("one-file ingest s during ingestion", one_file.get("seconds"), args.max_one_file_s, "<="))
    checks.append(Check("the one-file ingest ran during the ingestion", one_file.get("while_ingesting"), True,
                        "true"))
    return Outcome(figures=figures, checks=checks, samples=[*all_samples])


def main(argv: list[str] | None = None) -> int:
    return scenario_main(sys.modules[__name__], argv)
