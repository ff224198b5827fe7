"""Benchmark: the vector index in its worker process against Chroma in the daemon's process (the old design).

Same data, same loop, one run: upsert throughput, query p50/p99, and the event loop's lag while a large
upsert runs. The in-process baseline is the previous ``VectorIndex``: the same Chroma calls on one thread
of the daemon's process (``ChromaHost`` from the worker module, driven through ``run_in_executor``).

    python -m tests.vindex.bench_worker [--vectors 20000] [--queries 500] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from pirag.daemon.store import vector_worker as wire
from pirag.daemon.store.vectors import VectorIndex
from tests.documents.helpers import make_config

DIMS = 384
BATCH = 1000


class InProcess:
    """The old design: Chroma on one thread of this process."""

    def __init__(self, path: Path):
        self.host = wire.ChromaHost({"backend": "chroma", "path": str(path)})
        self.pool = ThreadPoolExecutor(max_workers=1)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def start(self) -> None:
        await self._run(self.host.open)

    async def close(self) -> None:
        await self._run(self.host.close)
        self.pool.shutdown()

    async def upsert(self, name: str, ids: list[str], vectors: np.ndarray) -> None:
        await self._run(self.host.op_upsert, name, ids, wire.pack_vectors(vectors), None)

    async def query(self, name: str, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        return (await self._run(self.host.op_query_many, name, wire.pack_vectors(vector[None, :]), k, None))[0]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(index: Any, vectors: np.ndarray, queries: int) -> dict[str, float]:
    name = "bench-docs"
    n = len(vectors)
    half = n // 2
    started = time.perf_counter()
    for start in range(0, half, BATCH):
        await index.upsert(name, [str(i) for i in range(start, min(half, start + BATCH))], vectors[start:start + BATCH])
    upsert_rate = half / (time.perf_counter() - started)
    rng = np.random.default_rng(1)
    probes = vectors[rng.integers(0, half, queries)]
    for probe in probes[:20]:  # warm the HNSW load
        await index.query(name, probe, 8)
    latencies = []
    for probe in probes:
        begun = time.perf_counter()
        await index.query(name, probe, 8)
        latencies.append((time.perf_counter() - begun) * 1000)
    lags: list[float] = []

    async def ticker() -> None:
        while True:
            expected = time.perf_counter() + 0.005
            await asyncio.sleep(0.005)
            lags.append((time.perf_counter() - expected) * 1000)

    ticking = asyncio.ensure_future(ticker())
    await asyncio.sleep(0.2)
    idle = list(lags)
    lags.clear()
    big = time.perf_counter()
    await index.upsert(name, [str(i) for i in range(half, n)], vectors[half:])   # one large upsert
    big_s = time.perf_counter() - big
    ticking.cancel()
    return {"upsert_vectors_per_s": round(upsert_rate), "query_p50_ms": round(statistics.median(latencies), 3),
            "query_p99_ms": round(percentile(latencies, 0.99), 3), "large_upsert_vectors": n - half,
            "large_upsert_s": round(big_s, 2), "loop_lag_idle_p99_ms": round(percentile(idle, 0.99), 2),
            "loop_lag_p99_ms": round(percentile(lags, 0.99), 2), "loop_lag_max_ms": round(max(lags), 2)}


async def main_async(count: int, queries: int) -> dict[str, Any]:
    rows = np.random.default_rng(0).standard_normal((count, DIMS)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    root = Path(tempfile.mkdtemp(prefix="vx-bench-", dir="/tmp"))
    try:
        baseline = InProcess(root / "inproc" / "chroma")
        await baseline.start()
        try:
            before = await measure(baseline, rows, queries)
        finally:
            await baseline.close()
        index = VectorIndex(make_config(root / "worker"))
        await index.start()
        try:
            after = await measure(index, rows, queries)
        finally:
            await index.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"vectors": count, "dims": DIMS, "queries": queries, "load": os.getloadavg(),
            "in_process": before, "worker": after,
            "ratios_worker_over_in_process": {key: round(after[key] / before[key], 2) if before[key] else None
                                              for key in before}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vectors", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--json", default="")
    options = parser.parse_args()
    load_before = os.getloadavg()
    result = asyncio.run(main_async(options.vectors, options.queries))
    result["load_before"] = load_before
    print(f"| figure | in process (old) | worker process | ratio |   load {load_before[0]:.2f} -> {result['load'][0]:.2f}")
    print("|---|---|---|---|")
    for key, value in result["in_process"].items():
        print(f"| {key} | {value} | {result['worker'][key]} | {result['ratios_worker_over_in_process'][key]} |")
    if options.json:
        Path(options.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
