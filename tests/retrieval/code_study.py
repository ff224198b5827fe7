"""The offline study behind the code-search settings (docs/RETRIEVAL.md, "Code search"): every variant in seconds.

    python -m tests.retrieval.code_study --socket /tmp/x/s.sock [--limit 400] [--model FILE.gguf]

Not a test (pytest does not collect it). The corpus and questions are ``pirag-stress quality``'s code task
(stdlib ``email``, ``asyncio``, ``http``, ``logging`` with docstrings blanked; the defining file is the answer).
Chunks are made by the daemon's own ``chunking`` code with the model's own tokenizer (read from the GGUF file)
and embedded once per distinct embedded text through a running daemon's ``embed`` op (its real model). The
keyword side is an in-memory FTS5 table with the daemon's columns and tokenizer, queried with the daemon's
query words and bounded expression; the ranking is the daemon's own ``retrieval.fuse`` and the grouping by file
the daemon's own ``retrieval.by_source``. It prints R@1 / R@5 / R@10 / MRR of the file for each chunking
variant (where the packer cuts, whether the contextual header is embedded), BM25 column weights, the fusion
weight ``w`` and the cap on chunks per file. The chosen settings are then measured for real by
``pirag-stress quality --tasks code``.
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pirag.client import Client
from pirag.daemon.embed.importer import KEY_MAX_SEQ
from pirag.daemon.embed.llama import LlamaModel
from pirag.daemon.embed.tokenizer import BertTokenizer, spec_from_gguf_tokens
from pirag.daemon.services import chunking
from pirag.daemon.services.retrieval import KEYWORD_SCORED, Completed, Weights, by_source, fuse
from pirag.daemon.services.search import fts_terms, keyword_expression
from pirag.daemon.store import fts
from pirag.stress import quality_data as data
from pirag.stress.quality import score

K = 10
FETCH = max(3 * K, 30)   # as search.py: candidates per side


@dataclass(frozen=True)
class Variant:
    name: str
    cut: chunking.Cut
    header: bool           # the file's path embedded in front of the definition path


VARIANTS = [
    Variant("before (top-level cuts, heading only)", chunking.PROSE, False),
    Variant("top-level cuts + path header", chunking.PROSE, True),
    Variant("every definition, merge < 1/4", chunking.Cut(None, 0.25), False),
    Variant("every definition, merge < 1/4 + path header", chunking.Cut(None, 0.25), True),
    Variant("every definition, merge < 1/8 + path header", chunking.Cut(None, 0.125), True),
    Variant("every definition, no merge + path header", chunking.Cut(None, 0.0), True),
]


# BM25 column weights: text, heading (definition path), idents (camel parts), context (the file's short path)
WEIGHT_GRID = [(1.0, 0.5, 0.5, 0.0), (1.0, 0.5, 0.5, 0.5), (1.0, 1.0, 0.5, 0.5), (1.0, 2.0, 0.5, 0.5),
               (1.0, 2.0, 1.0, 1.0), (1.0, 1.0, 1.0, 2.0)]


def tokenizer(model_path: str) -> tuple[BertTokenizer, int]:
    model = LlamaModel(model_path)
    try:
        max_tokens = int(model.meta(KEY_MAX_SEQ) or model.meta("bert.context_length") or 512)
        return BertTokenizer(spec_from_gguf_tokens(model.tokens()), max_tokens), max_tokens
    finally:
        model.close()


def embed(client: Client, texts: list[str], cache: dict[str, np.ndarray]) -> np.ndarray:
    missing = [text for text in dict.fromkeys(texts) if text not in cache]
    for start in range(0, len(missing), 64):
        part = missing[start:start + 64]
        vectors = np.frombuffer(client.embed(part, format="f32").data, "<f4").reshape(len(part), -1)
        cache.update(zip(part, vectors))
    return np.stack([cache[text] for text in texts])


def keyword_table(chunks: list[tuple[str, chunking.Chunk]]) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE VIRTUAL TABLE t USING fts5(text, heading, idents, context,"
                 " tokenize='porter unicode61 remove_diacritics 2')")
    conn.executemany("INSERT INTO t(rowid, text, heading, idents, context) VALUES (?, ?, ?, ?, ?)",
                     [(n, chunk.text, chunk.heading, fts.idents(chunk.text), fts.short_path(source))
                      for n, (source, chunk) in enumerate(chunks)])
    return conn


def keyword_ranks(conn: sqlite3.Connection, query: str, weights: tuple[float, ...]) -> list[tuple[int, float]]:
    terms = fts_terms(query)
    if not terms:
        return []
    expression, matched, _ = keyword_expression(
        terms, lambda e: conn.execute("SELECT count(*) FROM t WHERE t MATCH ?", (e,)).fetchone()[0])
    if not matched:
        return []
    bm25 = f"bm25(t, {', '.join(map(str, weights))})"
    return [(rowid, -value) for rowid, value in conn.execute(
        f"SELECT rowid, {bm25} FROM t WHERE t MATCH ? ORDER BY {bm25} LIMIT ?", (expression, FETCH * KEYWORD_SCORED))]


def evaluate(chunks: list[tuple[str, chunking.Chunk]], similarity: np.ndarray, questions: list[data.Question],
             keyword: list[list[tuple[int, float]]], w: float, cap: int,
             modes: Iterable[str] = ("hybrid", "vector", "keyword"),
             second: float = 0.0) -> dict[str, dict[str, float]]:
    """``similarity``: questions x chunks cosines; ``keyword``: each question's (chunk, BM25) best first;
    ``cap`` and ``second``: the daemon's grouping by file (``retrieval.by_source``)."""
    rows = {n: chunk for n, (_, chunk) in enumerate(chunks)}
    nearest = np.argsort(-similarity, axis=1)[:, :FETCH]
    results: dict[str, dict[str, float]] = {}
    for mode in modes:
        ranked_sources: list[list[str]] = []
        for number, question in enumerate(questions):
            row = similarity[number]
            vector_hits = [(int(i), float(row[i])) for i in nearest[number]]
            scored = keyword[number]
            keyword_hits = scored[:FETCH]
            pool = {key for key, _ in vector_hits} | {key for key, _ in keyword_hits}
            completed = Completed(rows={key: rows[key] for key in pool},
                                  similarity={key: float(row[key]) for key in pool}, bm25=dict(scored))
            pattern = fts.phrase_pattern(question.text)
            if pattern is not None and mode == "hybrid":
                completed.phrase = {key for key in pool if pattern.search(rows[key].text)}
            fused = fuse(vector_hits if mode != "keyword" else [], keyword_hits if mode != "vector" else [],
                         completed, Weights(w), mode)
            kept = by_source(fused, lambda item: chunks[item.key][0], cap, second)
            ranked_sources.append([chunks[item.key][0] for item in kept[:K]])
        results[mode] = score(ranked_sources, questions)
    return results


def line(label: str, figures: dict[str, float]) -> str:
    return (f"{label}: R@1 {figures['R@1']:.3f} R@5 {figures['R@5']:.3f} R@10 {figures['R@10']:.3f}"
            f" MRR {figures['MRR']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--socket", required=True)
    parser.add_argument("--model", required=True, help="the daemon's GGUF file (for its tokenizer)")
    parser.add_argument("--limit", type=int, default=400)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--variants", default="", help="comma-separated indexes into VARIANTS (default: all)")
    parser.add_argument("--cache", help="keep the vectors here (.npy of a pickled dict) across runs")
    args = parser.parse_args()
    files, questions = data.code_search_task(args.limit)
    bert, max_tokens = tokenizer(args.model)
    size = chunking.default_chunk_tokens(max_tokens)
    cache: dict[str, np.ndarray] = {}
    if args.cache and Path(args.cache).exists():
        cache = np.load(args.cache, allow_pickle=True).item()
    chosen = [VARIANTS[int(i)] for i in args.variants.split(",")] if args.variants else VARIANTS
    with Client(args.socket, timeout=600) as client:
        query_vectors = embed(client, [q.text for q in questions], cache)
        for variant in chosen:
            started = time.perf_counter()
            chunks: list[tuple[str, chunking.Chunk]] = []
            for source, text in files.items():
                segments = chunking.segment(text, "py")
                label = fts.short_path(source) if variant.header else ""
                chunks += [(source, chunk) for chunk in chunking.chunk_segments(
                    segments, bert.count_tokens, size, args.overlap, label, variant.cut)]
            matrix = embed(client, [chunk.embed_text for _, chunk in chunks], cache)
            if args.cache:
                np.save(args.cache, np.array(cache, dtype=object), allow_pickle=True)
            conn = keyword_table(chunks)
            print(f"## {variant.name}: {len(chunks)} chunks, {time.perf_counter() - started:.0f} s", flush=True)
            similarity = query_vectors @ matrix.T
            for weights in WEIGHT_GRID:
                keyword = [keyword_ranks(conn, q.text, weights) for q in questions]
                for cap in (0, 1, 2, 3):
                    for w in (0.6, 0.7, 0.8, 0.9):
                        modes = ("hybrid", "vector", "keyword") if w == 0.8 else ("hybrid",)
                        figures = evaluate(chunks, similarity, questions, keyword, w, cap, modes)
                        text = "  ".join(line(mode, f) for mode, f in figures.items())
                        print(f"bm25 {weights} cap {cap} w {w}: {text}", flush=True)
                for second in (0.25, 0.5):
                    for w in (0.7, 0.8):
                        figures = evaluate(chunks, similarity, questions, keyword, w, 1, ("hybrid",), second)
                        print(f"bm25 {weights} by file + {second} x second w {w}: {line('hybrid', figures['hybrid'])}",
                              flush=True)


if __name__ == "__main__":
    main()
