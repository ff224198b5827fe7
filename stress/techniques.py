"""``pirag-stress compare --techniques``: each of pirag's techniques measured with and without it, in one run.

Starts temporary daemons (``pirag serve`` as a subprocess; this module never imports daemon code) that differ in
one config key each, on the daemon's own model file, all alive at once, and measures them round by round,
alternating, keeping the best round of each (machine noise hits them all alike):

  base          the defaults (one 1-thread context per CPU plus the latency lane, batch_wait_ms=2, flash attention)
  no-lane       embed.lane = false (small calls go first in the 1-thread contexts' queue)
  no-batching   embed.batch_wait_ms = 0 (no waiting to coalesce concurrent requests)
  contexts-2    embed.contexts = 2, embed.threads_per_context = 1
  no-flash      embed.flash_attn = false
  no-caches     embed.cache_entries = 0 and search.cache_entries = 0
  batch-256     embed.batch_tokens = 256 (smaller packs: at most one ~170-token chunk per llama.cpp batch)

Then, with chromadb in-process (no daemon needed), two storage techniques that have no switch:
bulk upserts (one ``upsert`` of N vectors vs N upserts of one) and per-project collections (a query on a
dedicated collection vs a ``where``-filtered query on one shared collection holding 10 projects).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pirag.client import Client
from pirag.client.paths import default_socket_path
from pirag.client.protocol.documents import DocumentIn

from .compare import Tokens, build_chunks, ms, pirag_embed_bulk, pirag_embed_clients, tagged
from .ingest_bench import WORDS
from .measure import percentile, print_table

VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "base": {},
    "no-lane": {"embed": {"lane": False}},
    "no-batching": {"embed": {"batch_wait_ms": 0.0}},
    "contexts-2": {"embed": {"contexts": 2, "threads_per_context": 1}},
    "no-flash": {"embed": {"flash_attn": False}},
    "no-caches": {"embed": {"cache_entries": 0}, "search": {"cache_entries": 0}},
    "batch-256": {"embed": {"batch_tokens": 256}},
}


def toml(config: dict[str, dict[str, Any]]) -> str:
    lines = []
    for section, values in config.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


class Daemon:
    def __init__(self, name: str, root: Path, model: str, overrides: dict[str, dict[str, Any]]):
        config: dict[str, dict[str, Any]] = {"embed": {"model": model}, "log": {"requests": False}}
        for section, values in overrides.items():
            config.setdefault(section, {}).update(values)
        self.name, self.root = name, root
        root.mkdir(parents=True)
        (root / "pirag.toml").write_text(toml(config))
        self.socket = str(root / "s.sock")
        pirag = str(Path(sys.executable).with_name("pirag"))
        self.log = open(root / "daemon.log", "wb")
        self.process = subprocess.Popen([pirag, "serve", "--config", str(root / "pirag.toml"), "--socket",
                                         self.socket, "--state-dir", str(root / "state")],
                                        stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon {self.name} exited {self.process.returncode}: "
                                   f"{(self.root / 'daemon.log').read_text()[-600:]}")
            try:
                with Client(self.socket, timeout=5, connect_timeout=1) as client:
                    if client.status().components.get("server", {}).get("ready"):
                        return
                time.sleep(0.5)
            except Exception:  # noqa: BLE001 - not listening yet
                time.sleep(0.5)
        raise RuntimeError(f"daemon {self.name} not ready within {timeout:.0f} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log.close()


def measure_variant(daemon: Daemon, base: list[str], tag: str, max_s: float) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    figures["embed_1_client"] = asyncio.run(pirag_embed_clients(daemon.socket, tagged(base, f"{tag}a"), 1,
                                                                time.monotonic() + max_s))["texts_per_s"]
    figures["embed_20_clients"] = asyncio.run(pirag_embed_clients(daemon.socket, tagged(base, f"{tag}b"), 20,
                                                                  time.monotonic() + max_s))["texts_per_s"]
    figures["embed_bulk_64"] = asyncio.run(pirag_embed_bulk(daemon.socket, tagged(base, f"{tag}c"), 64,
                                                            time.monotonic() + max_s))["texts_per_s"]
    with Client(daemon.socket, timeout=300) as client:
        misses, hits = [], []
        for index in range(20):
            text = f"how do I read a file line by line {tag} {index}"
            t0 = time.perf_counter()
            client.embed([text])
            misses.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            client.embed([text])
            hits.append(time.perf_counter() - t0)
        figures["query_embed_first_p50_ms"] = ms(percentile(misses, 50))
        figures["query_embed_repeat_p50_ms"] = ms(percentile(hits, 50))
        project = "tech"
        if not any(p.name == project for p in client.list_projects().projects):
            client.ingest(project, documents=[DocumentIn(source=f"c{i}.txt", text=text)
                                              for i, text in enumerate(base)])
        query = f"{WORDS[3]} {WORDS[7]} {tag}"
        client.search(query, project, k=8)
        repeat = []
        for _ in range(20):
            t0 = time.perf_counter()
            client.search(query, project, k=8)
            repeat.append(time.perf_counter() - t0)
        figures["search_repeat_p50_ms"] = ms(percentile(repeat, 50))
    return figures


def storage_batching(daemon: Daemon, chunks: list[str], tag: str) -> dict[str, Any]:
    """Ingestion with its embeddings already cached (so only chunking and storage are timed): one request of
    N documents (one SQLite transaction and one Chroma upsert per adaptive batch) vs N requests of one."""
    half = len(chunks) // 2
    batched, single = tagged(chunks[:half], f"{tag}B"), tagged(chunks[half:2 * half], f"{tag}S")
    with Client(daemon.socket, timeout=600) as client:
        for texts in (batched, single):
            for start in range(0, len(texts), 64):
                client.embed(texts[start:start + 64], format="f32")
        before = client.status().components["embed"]["cache"]
        t0 = time.perf_counter()
        client.ingest("storage-batched", documents=[DocumentIn(source=f"b{i}.txt", text=text)
                                                    for i, text in enumerate(batched)])
        batched_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i, text in enumerate(single):
            client.ingest("storage-single", documents=[DocumentIn(source=f"s{i}.txt", text=text)])
        single_s = time.perf_counter() - t0
        after = client.status().components["embed"]["cache"]
        counts = {p.name: p.chunks for p in client.list_projects().projects}
    return {"documents": half, "one_request_docs_per_s": round(half / batched_s, 1),
            "one_request_per_doc_docs_per_s": round(half / single_s, 1), "ratio": round(single_s / batched_s, 1),
            "chunks": [counts.get("storage-batched"), counts.get("storage-single")],
            "embed_cache_misses_during_ingest": after["misses"] - before["misses"]}


def chroma_techniques(dims: int, bulk: int, per_project: int, projects: int) -> dict[str, Any]:
    import chromadb
    import numpy as np
    from chromadb.config import Settings

    rng = np.random.default_rng(5)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="tech-chroma-", dir="/tmp") as directory:
        client = chromadb.PersistentClient(path=directory, settings=Settings(anonymized_telemetry=False))
        vectors = rng.standard_normal((bulk, dims)).astype("float32")
        one = client.create_collection("one-by-one", metadata={"hnsw:space": "cosine"})
        started = time.perf_counter()
        for index in range(bulk):
            one.upsert(ids=[str(index)], embeddings=vectors[index:index + 1].tolist())
        single_s = time.perf_counter() - started
        batched = client.create_collection("bulk", metadata={"hnsw:space": "cosine"})
        started = time.perf_counter()
        batched.upsert(ids=[str(i) for i in range(bulk)], embeddings=vectors.tolist())
        bulk_s = time.perf_counter() - started
        out["bulk_upserts"] = {"vectors": bulk, "one_per_upsert_vectors_per_s": round(bulk / single_s, 1),
                               "one_upsert_vectors_per_s": round(bulk / bulk_s, 1),
                               "ratio": round(single_s / bulk_s, 1)}
        shared = client.create_collection("shared", metadata={"hnsw:space": "cosine"})
        total = per_project * projects
        data = rng.standard_normal((total, dims)).astype("float32")
        for start in range(0, total, 5000):
            stop = min(total, start + 5000)
            shared.add(ids=[str(i) for i in range(start, stop)], embeddings=data[start:stop].tolist(),
                       metadatas=[{"project": f"p{i % projects}"} for i in range(start, stop)])
        own = client.create_collection("own", metadata={"hnsw:space": "cosine"})
        mine = data[0::projects]
        own.add(ids=[str(i) for i in range(len(mine))], embeddings=mine.tolist())
        queries = rng.standard_normal((40, dims)).astype("float32").tolist()
        filtered, dedicated = [], []
        for query in queries:
            t0 = time.perf_counter()
            shared.query(query_embeddings=[query], n_results=8, where={"project": "p0"})
            filtered.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            own.query(query_embeddings=[query], n_results=8)
            dedicated.append(time.perf_counter() - t0)
        out["per_project_collections"] = {
            "projects": projects, "vectors_per_project": per_project,
            "shared_collection_where_p50_ms": ms(percentile(filtered, 50)),
            "own_collection_p50_ms": ms(percentile(dedicated, 50)),
            "ratio": round(percentile(filtered, 50) / percentile(dedicated, 50), 1)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pirag-stress compare --techniques", description=__doc__.split("\n\n")[0])
    parser.add_argument("--socket", default=str(default_socket_path()), help="a daemon whose model file is used")
    parser.add_argument("--texts", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-seconds", type=float, default=120)
    parser.add_argument("--only", help="comma-separated variants (default: all)")
    parser.add_argument("--storage-docs", type=int, default=200, help="documents for the storage batching test")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    with Client(args.socket) as client:
        model = client.status().components["embed"]["model"]
    base = build_chunks(args.texts, Tokens(model["path"]))
    names = [n for n in VARIANTS if not args.only or n in args.only.split(",")]
    report: dict[str, Any] = {"time": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "model": model["model_id"],
                              "command": "pirag-stress compare --techniques " + " ".join(argv or []),
                              "load_average_start": [round(x, 2) for x in os.getloadavg()], "variants": {}}
    root = Path(tempfile.mkdtemp(prefix="tech-", dir="/tmp"))
    daemons: dict[str, Daemon] = {}
    try:
        for name in names:
            daemons[name] = Daemon(name, root / name, model["path"], VARIANTS[name])
        for daemon in daemons.values():
            daemon.wait_ready()
        print(f"{len(daemons)} daemons up; {len(base)} chunks; {args.rounds} alternated rounds", flush=True)
        best: dict[str, dict[str, Any]] = {}
        for round_number in range(args.rounds):
            for name, daemon in daemons.items():
                figures = measure_variant(daemon, base, f"r{round_number}{name}{os.getpid()}", args.max_seconds)
                print(f"  round {round_number + 1} {name}: {figures}", flush=True)
                if name not in best:
                    best[name] = figures
                else:
                    for key, value in figures.items():
                        better = max if key.startswith("embed_") else min
                        best[name][key] = better(best[name][key], value)
        report["variants"] = {name: {"config": VARIANTS[name], "figures": figures} for name, figures in best.items()}
        if "base" in daemons and args.storage_docs:
            print("storage batching on the base daemon (embeddings cached first)", flush=True)
            report["storage_batching"] = storage_batching(
                daemons["base"], build_chunks(args.storage_docs, Tokens(model["path"]), seed=11), str(os.getpid()))
            print(f"  {report['storage_batching']}", flush=True)
    finally:
        for daemon in daemons.values():
            daemon.stop()
        shutil.rmtree(root, ignore_errors=True)
    print("chromadb in-process: bulk upserts and per-project collections", flush=True)
    report["chroma"] = chroma_techniques(int(model["dims"]), 1000, 2000, 10)
    report["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    keys = ["embed_1_client", "embed_20_clients", "embed_bulk_64", "query_embed_first_p50_ms",
            "query_embed_repeat_p50_ms", "search_repeat_p50_ms"]
    print_table(f"techniques with and without ({report['time']}, load {report['load_average_start']} -> "
                f"{report['load_average_end']}; embed_* in texts/s, best of rounds)", ["variant", *keys],
                [[name, *(v["figures"][key] for key in keys)] for name, v in report["variants"].items()])
    print(json.dumps(report["chroma"], indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
