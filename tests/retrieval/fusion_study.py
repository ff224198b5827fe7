"""The offline study behind the fusion settings (docs/RETRIEVAL.md): LoCoMo dev, every variant in seconds.

    python -m tests.retrieval.fusion_study --socket /tmp/x/s.sock [--data locomo_dev.json]

Not a test (pytest does not collect it). The turns and questions are embedded once through a running daemon's
``embed`` op (its real model); the keyword side is an in-memory SQLite FTS5 table built like the daemon's
(same tokenizer choices, same query words, same BM25 ``rank``), and the ranking is the daemon's own
``retrieval.fuse``. It prints hybrid / vector / keyword R@1, R@5, R@10 for: the tokenizer (unicode61 or porter),
whether an episode's keyword text carries the previous turn of its session (and its column weight), and the
similarity weight ``w``. The chosen settings are then measured for real by ``pirag-stress quality``.
"""

from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path

import numpy as np

from pirag.client import Client
from pirag.daemon.services.retrieval import KEYWORD_SCORED, Completed, Weights, fuse
from pirag.daemon.store import fts
from pirag.daemon.store.facts import query_words
from pirag.stress import quality_data as data


def embed(client: Client, texts: list[str]) -> np.ndarray:
    parts = [np.frombuffer(client.embed(texts[i:i + 64], format="f32").data, "<f4").reshape(-1, 384)
             for i in range(0, len(texts), 64)]
    return np.concatenate(parts)


def keyword_table(conversation: data.Conversation, tokenizer: str, context_weight: float | None) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute(f"CREATE VIRTUAL TABLE t USING fts5(content, context, tokenize='{tokenizer} remove_diacritics 2')")
    conn.execute(f"INSERT INTO t(t, rank) VALUES('rank', 'bm25(1.0, {context_weight or 0.0})')")
    turns = conversation.turns
    for index, (_, speaker, text, _, session) in enumerate(turns):
        previous = turns[index - 1] if index and turns[index - 1][4] == session else None
        context = f"{previous[1]}: {previous[2]}" if previous and context_weight else ""
        conn.execute("INSERT INTO t(rowid, content, context) VALUES (?, ?, ?)", (index, f"{speaker}: {text}", context))
    return conn


def evaluate(conversations: list[data.Conversation], vectors: dict[str, np.ndarray], tokenizer: str,
             context_weight: float | None, w: float, fetch: int = 30) -> dict[str, list[float]]:
    found = {"hybrid": [0, 0, 0], "vector": [0, 0, 0], "keyword": [0, 0, 0]}
    asked = 0
    for conversation in conversations:
        conn = keyword_table(conversation, tokenizer, context_weight)
        turns, questions = vectors[f"{conversation.id}_turns"], vectors[f"{conversation.id}_questions"]
        for number, question in enumerate(conversation.questions):
            asked += 1
            similarity = turns @ questions[number]
            vector_hits = [(int(i), float(similarity[i])) for i in np.argsort(-similarity)[:fetch]]
            words = query_words(question.text)
            match = fts.match_any(words) if words else ""
            scored = [(rowid, -rank) for rowid, rank in conn.execute(
                "SELECT rowid, rank FROM t WHERE t MATCH ? ORDER BY rank LIMIT ?",
                (match, fetch * KEYWORD_SCORED))] if match else []
            keyword_hits = scored[:fetch]   # as retrieval.retrieve: the rest only lend their BM25
            pool = {key for key, _ in vector_hits} | {key for key, _ in keyword_hits}
            completed = Completed(rows={key: key for key in pool},
                                  similarity={key: float(similarity[key]) for key in pool}, bm25=dict(scored))
            for mode, figures in found.items():
                ranked = fuse(vector_hits if mode != "keyword" else [], keyword_hits if mode != "vector" else [],
                              completed, Weights(w), mode)
                first = next((rank for rank, item in enumerate(ranked[:10], start=1)
                              if conversation.turns[item.key][0] in question.answers), None)
                for slot, k in enumerate((1, 5, 10)):
                    figures[slot] += bool(first and first <= k)
    return {mode: [round(value / asked, 3) for value in figures] for mode, figures in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--socket", required=True)
    parser.add_argument("--data", default="/work/shared/data/locomo_dev.json")
    args = parser.parse_args()
    conversations = data.load_locomo(Path(args.data))
    vectors: dict[str, np.ndarray] = {}
    with Client(args.socket, timeout=600) as client:
        for conversation in conversations:
            vectors[f"{conversation.id}_turns"] = embed(client, [f"{s}: {t}" for _, s, t, _, _ in conversation.turns])
            vectors[f"{conversation.id}_questions"] = embed(client, [q.text for q in conversation.questions])
    for tokenizer in ("unicode61", "porter unicode61"):
        for context_weight in (None, 0.5, 1.0):
            for w in (0.3, 0.5, 0.7):
                figures = evaluate(conversations, vectors, tokenizer, context_weight, w)
                print(f"{tokenizer:17} context {context_weight!s:4} w {w}: hybrid R@1/5/10 {figures['hybrid']}  "
                      f"vector {figures['vector']}  keyword {figures['keyword']}", flush=True)


if __name__ == "__main__":
    main()
