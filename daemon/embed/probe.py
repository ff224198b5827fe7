"""The latency-lane probe: what a lone query's embedding costs under each threading choice, measured in-process.

``python -m pirag.daemon.embed.probe MODEL.gguf`` runs every variant in a fresh subprocess (libgomp reads
``OMP_WAIT_POLICY`` / ``GOMP_SPINCOUNT`` once, when it is loaded) and prints one table: a short query (12 tokens)
embedded by a context of T threads from the process's main thread or from a long-lived worker thread, under
libgomp's wait policies, alone and while bulk contexts (one thread each) encode chunk-sized packs (170 tokens)
without pause; with the bulk contexts paused while the lane runs ("gate") or not. Bulk throughput is reported
beside the lane's latency, since a lane that stalls bulk work is no lane.

The engine's choices (``engine.py``, docs/PERFORMANCE_IMPROVEMENTS.md) come from this table. Token ids are
synthetic (the cost of an encode depends on the token count, not on which tokens). A developer tool, not used by
the daemon.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np

QUERY_TOKENS = 12
CHUNK_TOKENS = 170


def _ids(count: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return [101] + [int(x) for x in rng.integers(1000, 20000, count - 2)] + [102]


def _percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2) if values else float("nan")


def measure(model_path: str, threads: int, where: str, bulk: int, gate: bool, queries: int,
            interval_s: float) -> dict[str, Any]:
    """One variant, in this process: the lane's query latencies (ms) and the bulk contexts' chunks/s."""
    from .llama import LlamaContext, LlamaModel

    model = LlamaModel(model_path)
    lane = LlamaContext(model, batch_tokens=256, max_sequences=8, threads=threads, flash_attn=True)
    query = _ids(QUERY_TOKENS, 1)
    chunk = _ids(CHUNK_TOKENS, 2)
    stop = threading.Event()
    lane_busy = threading.Event()
    idle = threading.Condition()
    counts = [0] * bulk

    def bulk_worker(number: int) -> None:
        context = LlamaContext(model, batch_tokens=256, max_sequences=8, threads=1, flash_attn=True)
        context.embed([chunk])
        ready.wait()
        while not stop.is_set():
            if gate and lane_busy.is_set():
                with idle:
                    idle.wait_for(lambda: not lane_busy.is_set() or stop.is_set(), 0.1)
                continue
            context.embed([chunk])
            counts[number] += 1
        context.close()

    latencies: list[float] = []

    def lane_loop() -> None:
        for _ in range(5):
            lane.embed([query])       # warm: libgomp makes this thread's pool now
        ready.set()
        time.sleep(0.3 if bulk else 0.0)
        for _ in range(queries):
            lane_busy.set()
            started = time.perf_counter()
            lane.embed([query])
            latencies.append((time.perf_counter() - started) * 1000)
            lane_busy.clear()
            with idle:
                idle.notify_all()
            time.sleep(interval_s)

    ready = threading.Event()
    workers = [threading.Thread(target=bulk_worker, args=(n,)) for n in range(bulk)]
    for worker in workers:
        worker.start()
    started = time.perf_counter()
    if where == "main":
        lane_loop()
    else:
        runner = threading.Thread(target=lane_loop)
        runner.start()
        runner.join()
    elapsed = time.perf_counter() - started
    stop.set()
    with idle:
        idle.notify_all()
    for worker in workers:
        worker.join()
    lane.close()
    model.close()
    return {"query_p50_ms": _percentile(latencies, 50), "query_p90_ms": _percentile(latencies, 90),
            "query_p99_ms": _percentile(latencies, 99),
            "bulk_chunks_per_s": round(sum(counts) / elapsed, 1) if bulk else None}


def bulk_only(model_path: str, bulk: int, seconds: float) -> float:
    """Chunks/s of ``bulk`` one-thread contexts with no lane at all (the baseline of the contended rows)."""
    from .llama import LlamaContext, LlamaModel

    model = LlamaModel(model_path)
    chunk = _ids(CHUNK_TOKENS, 2)
    counts = [0] * bulk
    deadline = time.perf_counter() + seconds

    def worker(number: int) -> None:
        context = LlamaContext(model, batch_tokens=256, max_sequences=8, threads=1, flash_attn=True)
        context.embed([chunk])
        while time.perf_counter() < deadline:
            context.embed([chunk])
            counts[number] += 1
        context.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(bulk)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rate = sum(counts) / (time.perf_counter() - started)
    model.close()
    return round(rate, 1)


# (label, env, threads, where, bulk contexts, gate)
def variants(cpus: int) -> list[tuple[str, dict[str, str], int, str, int, bool]]:
    return [
        ("1 thread, worker thread", {}, 1, "worker", 0, False),
        (f"{cpus} threads, main thread", {}, cpus, "main", 0, False),
        (f"{cpus} threads, worker thread", {}, cpus, "worker", 0, False),
        (f"{cpus} threads, worker, OMP_WAIT_POLICY=active", {"OMP_WAIT_POLICY": "active"}, cpus, "worker", 0, False),
        (f"{cpus} threads, worker, OMP_WAIT_POLICY=passive", {"OMP_WAIT_POLICY": "passive"}, cpus, "worker", 0,
         False),
        (f"{cpus} threads, main thread, OMP_WAIT_POLICY=passive", {"OMP_WAIT_POLICY": "passive"}, cpus, "main", 0,
         False),
        (f"{cpus} threads, worker, GOMP_SPINCOUNT=10000", {"GOMP_SPINCOUNT": "10000"}, cpus, "worker", 0, False),
        (f"1 thread lane + {cpus} bulk, no gate", {}, 1, "worker", cpus, False),
        (f"{cpus} threads lane + {cpus} bulk, no gate", {}, cpus, "worker", cpus, False),
        (f"1 thread lane + {cpus} bulk, gate", {}, 1, "worker", cpus, True),
        (f"{cpus} threads lane + {cpus} bulk, gate", {}, cpus, "worker", cpus, True),
        (f"{cpus} threads lane + {cpus} bulk, no gate, passive", {"OMP_WAIT_POLICY": "passive"}, cpus, "worker", cpus,
         False),
        (f"{cpus} threads lane + {cpus} bulk, gate, passive", {"OMP_WAIT_POLICY": "passive"}, cpus, "worker", cpus,
         True),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pirag.daemon.embed.probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a GGUF embedding model")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--interval-ms", type=float, default=10.0, help="pause between lane queries")
    parser.add_argument("--bulk-seconds", type=float, default=5.0, help="duration of the bulk-only baseline")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--one", help=argparse.SUPPRESS)      # internal: one variant (JSON), in a subprocess
    args = parser.parse_args(argv)
    if args.one:
        spec = json.loads(args.one)
        if spec.get("bulk_only"):
            print(json.dumps({"bulk_chunks_per_s": bulk_only(args.model, spec["bulk"], args.bulk_seconds)}))
        else:
            print(json.dumps(measure(args.model, spec["threads"], spec["where"], spec["bulk"], spec["gate"],
                                     args.queries, args.interval_ms / 1000)))
        return 0
    from .threads import build_info

    cpus = len(os.sched_getaffinity(0))
    print(f"llama.cpp: {build_info()}; {cpus} CPUs; load {os.getloadavg()[0]:.2f}")
    rows: list[dict[str, Any]] = []

    def child(spec: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
        command = [sys.executable, "-m", "pirag.daemon.embed.probe", args.model, "--queries", str(args.queries),
                   "--interval-ms", str(args.interval_ms), "--bulk-seconds", str(args.bulk_seconds),
                   "--one", json.dumps(spec)]
        done = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            return {"error": done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]}
        return json.loads(done.stdout.strip().splitlines()[-1])

    baseline = child({"bulk_only": True, "bulk": cpus}, {})
    print(f"{cpus} bulk contexts x 1 thread, no lane: {baseline.get('bulk_chunks_per_s')} chunks/s")
    print(f"{'variant':<52} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'bulk/s':>8} {'bulk vs alone':>14}")
    for label, env, threads, where, bulk, gate in variants(cpus):
        result = child({"threads": threads, "where": where, "bulk": bulk, "gate": gate}, env)
        result["variant"] = label
        rows.append(result)
        rate = result.get("bulk_chunks_per_s")
        ratio = f"{rate / baseline['bulk_chunks_per_s']:.2f}x" if rate and baseline.get("bulk_chunks_per_s") else ""
        print(f"{label:<52} {result.get('query_p50_ms', '-'):>8} {result.get('query_p90_ms', '-'):>8} "
              f"{result.get('query_p99_ms', '-'):>8} {rate if rate is not None else '':>8} {ratio:>14}"
              + (f"  {result['error']}" if "error" in result else ""), flush=True)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"build": build_info(), "cpus": cpus, "bulk_alone": baseline, "rows": rows}, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
