"""Memory benchmark: remember / recall latency with a large fact store, log_episode throughput, timeline latency.

Talks to a running daemon through ``pirag.client`` only (DESIGN.md: stress never imports daemon code).

    python -m pirag.stress.memory_bench --socket /tmp/x/s.sock --facts 100000

Setup: the store is filled to ``--facts`` facts in the bench project through ``import_memory`` (the bulk-load
path: batches of records, embedded in batches by the daemon) unless it already holds them. The measured
``remember`` calls are then ordinary single calls over the socket, embedding included.

With the real model the bulk load is bound by the embedder (about 25 facts/s on the 2 loaded cores of the
reference machine: more than an hour for 100k). ``--seed-db PATH`` is the quick way to a big store: the
vocabulary's most frequent words are embedded with the daemon's real model (``embed`` op); each fact's vector is
the normalized sum of its words' vectors (words beyond those get a fixed pseudo-random vector), and the rows are
written straight into the daemon's SQLite file (``<state_dir>/pirag.sqlite3``; schema of migration 1, FTS by its
triggers) tagged with the daemon's model id. Restart the daemon afterwards: at start it finds the fact
collection's count differs from SQLite's and rebuilds it from these vectors. Only setup takes this shortcut;
every measured call goes through the socket, with the real model embedding each remembered fact and query.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import sqlite3
import statistics
import sys
import time
import unicodedata
from collections.abc import Sequence
from typing import Any

from pirag.client import AsyncClient, Client
from pirag.client.protocol.memory import ExportedFact

_WORDS = ("server backup network printer router kitchen garden invoice meeting deadline python rust database "
          "camera battery solar panel roof window door garage bicycle train ticket hotel passport doctor dentist "
          "birthday recipe coffee tea bread cheese wine laptop phone tablet cable charger monitor keyboard mouse "
          "desk chair lamp plant cat dog neighbour school teacher homework exam holiday beach mountain river "
          "lake forest city village museum concert guitar piano violin drum song movie book author poem").split()


_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "be", "do", "fa", "gu", "hi", "ja", "ze", "po")


def _vocabulary(size: int = 20_000) -> tuple[list[str], list[float]]:
    """Real words plus pseudo-words with Zipf-like frequencies: keyword search meets realistic posting lists
    (a tiny vocabulary would make every word match a sixth of the corpus)."""
    rng = random.Random(1)
    words = list(_WORDS)
    while len(words) < size:
        words.append("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4))))
    return words, [1.0 / (rank + 10) for rank in range(len(words))]


_VOCABULARY, _WEIGHTS = _vocabulary()


def words(rng: random.Random, count: int) -> list[str]:
    return rng.choices(_VOCABULARY, weights=_WEIGHTS, k=count)


def sentence(rng: random.Random, count: int = 12) -> str:
    return " ".join(words(rng, count)) + f" #{rng.randrange(10**9)}"


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def show(name: str, samples: Sequence[float]) -> None:
    print(f"{name:<28} p50 {percentile(samples, 0.5) * 1000:8.2f} ms   p99 {percentile(samples, 0.99) * 1000:8.2f} ms"
          f"   mean {statistics.fmean(samples) * 1000:8.2f} ms   n={len(samples)}", flush=True)


def count_facts(client: Client, project: str) -> int:
    total, cursor = 0, ""
    while True:
        page = client.export_memory(what="facts", project=project, cursor=cursor, limit=4096)
        total += len(page.records)
        if not page.next_cursor:
            return total
        cursor = page.next_cursor


def bulk_load(client: Client, project: str, target: int, batch: int, rng: random.Random) -> None:
    have = count_facts(client, project)
    if have >= target:
        print(f"setup: {project!r} already holds {have} facts", flush=True)
        return
    started = time.perf_counter()
    now = time.time()
    loaded = have
    while loaded < target:
        size = min(batch, target - loaded)
        records = [ExportedFact(id=f"f_bench{loaded + i:09d}{rng.randrange(16**6):06x}", project=project,
                                content=sentence(rng), tags=[rng.choice(_WORDS)], created_at=now, updated_at=now)
                   for i in range(size)]
        result = client.import_memory(records)
        loaded += result.facts
        if result.facts == 0:
            break
        rate = (loaded - have) / (time.perf_counter() - started)
        print(f"\rsetup: bulk-loaded {loaded}/{target} facts ({rate:.0f}/s)", end="", flush=True)
    print(f"\nsetup: {loaded - have} facts in {time.perf_counter() - started:.1f} s (import_memory bulk path)",
          flush=True)


def _normalize(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def seed_db(client: Client, db_path: str, project: str, target: int, top_words: int, rng: random.Random) -> None:
    """Write ``target`` facts straight into the daemon's SQLite file (see the module docstring)."""
    import numpy as np

    started = time.perf_counter()
    top = _VOCABULARY[:top_words]
    table: dict[str, Any] = {}
    model_id = ""
    for start in range(0, len(top), 256):
        result = client.embed(top[start:start + 256], format="f32")
        model_id = result.model_id
        matrix = np.frombuffer(result.data, dtype="<f4").reshape(result.count, result.dims)
        table.update(zip(top[start:start + 256], matrix))
    dims = next(iter(table.values())).shape[0]
    print(f"setup: embedded {len(top)} words with {model_id} in {time.perf_counter() - started:.1f} s", flush=True)

    def word_vector(word: str) -> Any:
        vector = table.get(word)
        if vector is None:
            seed = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
            vector = np.random.default_rng(seed).standard_normal(dims).astype(np.float32)
            vector /= np.linalg.norm(vector)
            table[word] = vector
        return vector

    conn = sqlite3.connect(db_path, timeout=60, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 60000")
    have = conn.execute("SELECT count(*) FROM fact WHERE project = ?", (project,)).fetchone()[0]
    now = time.time()
    written = 0
    while have + written < target:
        rows, tags = [], []
        for i in range(min(5000, target - have - written)):
            text_words = words(rng, 12)
            content = " ".join(text_words) + f" #{rng.randrange(10**9)}"
            vector = np.sum([word_vector(word) for word in text_words], axis=0).astype("<f4")
            vector /= np.linalg.norm(vector)
            fact_id = f"f_seed{have + written + i:09d}{rng.randrange(16**6):06x}"
            tag = rng.choice(_WORDS)
            rows.append((fact_id, project, content, hashlib.sha256(_normalize(content).encode()).hexdigest(),
                         json.dumps([tag]), now, now, model_id, vector.tobytes()))
            tags.append((fact_id, tag))
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT OR IGNORE INTO fact (id, project, content, norm_hash, tags, created_at, updated_at, "
                         "model_id, vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.executemany("INSERT OR IGNORE INTO fact_tag (tag, fact_seq) SELECT ?, seq FROM fact WHERE id = ?",
                         [(tag, fact_id) for fact_id, tag in tags])
        conn.execute("COMMIT")
        written += len(rows)
        print(f"\rsetup: seeded {have + written}/{target} facts", end="", flush=True)
    conn.close()
    print(f"\nsetup: {written} facts written to {db_path} in {time.perf_counter() - started:.1f} s; "
          "restart the daemon (it rebuilds the index from SQLite), then run without --seed-db", flush=True)


async def episode_throughput(socket: str | None, clients: int, per_client: int, project: str) -> float:
    async def one(index: int) -> None:
        async with AsyncClient(socket) as client:
            for n in range(per_client):
                await client.log_episode(f"bench client {index} step {n} did something", session=f"bench-{index}",
                                         project=project, kind="action")

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(clients)))
    return clients * per_client / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="memory_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--socket", help="daemon socket (default: $PIRAG_SOCKET or the standard path)")
    parser.add_argument("--facts", type=int, default=100_000, help="facts in the store before measuring")
    parser.add_argument("--project", default="bench")
    parser.add_argument("--batch", type=int, default=2000, help="records per import_memory call during setup")
    parser.add_argument("--samples", type=int, default=300, help="calls measured per operation")
    parser.add_argument("--clients", type=int, default=20, help="concurrent clients for log_episode")
    parser.add_argument("--episodes-per-client", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--seed-db", metavar="PATH", help="setup only: write the facts straight into this SQLite "
                        "file (the daemon's <state_dir>/pirag.sqlite3), vectors from real word embeddings; then exit")
    parser.add_argument("--seed-words", type=int, default=3000, help="vocabulary words embedded for --seed-db")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)

    with Client(args.socket, timeout=600) as client:
        status = client.status()
        embed = status.components.get("embed", {})
        print(f"daemon pid {status.pid}, embed model {embed.get('model_id', '?')}, "
              f"db synchronous={status.components.get('db', {}).get('synchronous', '?')}", flush=True)
        if args.seed_db:
            seed_db(client, args.seed_db, args.project, args.facts, args.seed_words, rng)
            return 0
        bulk_load(client, args.project, args.facts, args.batch, rng)

        # fresh texts on every run: a text remembered by an earlier run would be an exact duplicate (no model)
        rng = random.Random(f"{args.seed}-{time.time_ns()}")
        floor: list[float] = []   # the model's share of a remember: embedding one fact's text over the socket
        for _ in range(min(args.samples, 100)):
            text = sentence(rng)
            started = time.perf_counter()
            client.embed([text])
            floor.append(time.perf_counter() - started)
        show("embed (a fact's text)", floor)

        remember: list[float] = []
        created = 0
        for _ in range(args.samples):
            text = sentence(rng)
            started = time.perf_counter()
            created += client.remember(text, project=args.project, tags=[rng.choice(_WORDS)]).created
            remember.append(time.perf_counter() - started)
        show("remember", remember)
        if created < len(remember):
            print(f"  ({len(remember) - created} of them were duplicates)", flush=True)

        recall: list[float] = []
        for _ in range(args.samples):
            query = " ".join(words(rng, 4))
            started = time.perf_counter()
            client.recall(query, project=args.project, k=8)
            recall.append(time.perf_counter() - started)
        show("recall (hybrid, k=8)", recall)

        filtered: list[float] = []
        for _ in range(args.samples // 3):
            query = " ".join(words(rng, 4))
            started = time.perf_counter()
            client.recall(query, project=args.project, tags=[rng.choice(_WORDS)], k=8)
            filtered.append(time.perf_counter() - started)
        show("recall (tag filter)", filtered)

    rate = asyncio.run(episode_throughput(args.socket, args.clients, args.episodes_per_client, args.project))
    print(f"{'log_episode':<28} {rate:8.0f} episodes/s with {args.clients} concurrent clients "
          f"({args.clients * args.episodes_per_client} episodes)", flush=True)

    with Client(args.socket) as client:
        timeline: list[float] = []
        for n in range(args.samples):
            started = time.perf_counter()
            client.timeline(session=f"bench-{n % args.clients}", limit=20)
            timeline.append(time.perf_counter() - started)
        show("timeline (session, 20)", timeline)
        project_timeline: list[float] = []
        for _ in range(args.samples):
            started = time.perf_counter()
            client.timeline(project=args.project, when="today", limit=20)
            project_timeline.append(time.perf_counter() - started)
        show("timeline (project, today)", project_timeline)
        ping: list[float] = []
        for _ in range(args.samples):
            started = time.perf_counter()
            client.ping()
            ping.append(time.perf_counter() - started)
        show("ping (socket floor)", ping)
    return 0


if __name__ == "__main__":
    sys.exit(main())
