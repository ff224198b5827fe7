"""The interactive floor: what one query costs a program that does it all in-process, without a daemon.

One query = llama-cpp-python embedding the query text with 2 threads (``Llama(embedding=True)``, the daemon's own
model file) + one query of an in-process Chroma collection (``PersistentClient`` in a temporary directory,
``vectors`` random unit vectors of the model's width: an HNSW query's cost depends on the count, not on what
the vectors mean, and embedding them first would cost minutes on a busy machine). That is the yardstick issue 13
sets for remember, recall and fresh-query search (each within 1.3x of it).

It runs in a child process (``python -m pirag.stress.floor``), twice: with libgomp's defaults and with
``OMP_WAIT_POLICY=passive`` (on a busy machine the defaults' spinning makes 2 threads slower than 1); the faster
of the two is the floor, so pirag is never compared with a handicapped peer. Child processes also keep a crash
of llama.cpp (the AMX kernels, FINDINGS.md) from taking the harness down: it is reported, never hidden.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

from .workers import WORDS


def measure(model: str, queries: int, vectors: int, use_extra_bufts: bool, threads: int = 2) -> dict[str, Any]:
    import chromadb
    from chromadb.config import Settings

    from .llama_peer import naive_llama

    # the daemon's model parameters and CPU variant loading (llama_peer): AMX hosts, portable builds
    llm = naive_llama(model, threads, use_extra_bufts)
    rng = np.random.default_rng(7)
    dims = len(llm.embed("warm up", normalize=True))
    matrix = rng.standard_normal((vectors, dims)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    with tempfile.TemporaryDirectory(prefix="floor-", dir="/tmp") as directory:
        client = chromadb.PersistentClient(path=directory, settings=Settings(anonymized_telemetry=False))
        collection = client.create_collection("floor", metadata={"hnsw:space": "cosine"})
        collection.add(ids=[str(i) for i in range(len(matrix))], embeddings=matrix.tolist())
        embed_ms, total_ms = [], []
        for number in range(queries + 5):
            query = " ".join(rng.choice(WORDS, 4)) + f" {number}"
            t0 = time.perf_counter()
            vector = llm.embed(query, normalize=True)
            t1 = time.perf_counter()
            collection.query(query_embeddings=[vector], n_results=8)
            t2 = time.perf_counter()
            if number >= 5:                    # the first calls warm llama.cpp's buffers and Chroma's index
                embed_ms.append((t1 - t0) * 1000)
                total_ms.append((t2 - t0) * 1000)
    return {"threads": threads, "vectors": len(matrix), "queries": len(total_ms),
            "embed_p50_ms": round(float(np.percentile(embed_ms, 50)), 2),
            "p50_ms": round(float(np.percentile(total_ms, 50)), 2),
            "p99_ms": round(float(np.percentile(total_ms, 99)), 2)}


def floor(model: str, use_extra_bufts: bool, queries: int = 40, vectors: int = 100,
          timeout: float = 900) -> dict[str, Any]:
    """Both wait policies, each in a child; ``best_p50_ms`` is the faster (None only when both failed)."""
    runs: dict[str, Any] = {}
    for label, env in (("libgomp defaults", {}), ("OMP_WAIT_POLICY=passive", {"OMP_WAIT_POLICY": "passive"})):
        command = [sys.executable, "-m", "pirag.stress.floor", model, str(queries), str(vectors),
                   str(int(use_extra_bufts))]
        try:
            done = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            runs[label] = {"error": f"no result within {timeout:.0f} s"}
            continue
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if lines:
            runs[label] = json.loads(lines[-1][7:])
        else:
            tail = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
            runs[label] = {"error": f"exit {done.returncode}: {tail[:300]}"}
    measured = [run["p50_ms"] for run in runs.values() if "p50_ms" in run]
    return {"runs": runs, "best_p50_ms": min(measured) if measured else None}


if __name__ == "__main__":
    result = measure(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), bool(int(sys.argv[4])))
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
