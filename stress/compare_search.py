"""The search phase of ``pirag-stress compare``: pirag's search (cache miss, query vector cached, result cache
hit), remember and recall of texts the daemon has not seen, and the same searches against ``chroma run`` over HTTP
on the same vectors (raw keep-alive HTTP and chromadb's own client)."""

from __future__ import annotations

import asyncio
import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pirag.client import Client
from pirag.client.protocol.documents import DocumentIn

from . import peers
from .compare_report import Report
from .ingest_bench import WORDS
from .measure import ms, percentile


def timed_calls(call: Callable[[str], Any], items: list[str], deadline: float) -> tuple[list[float], Any]:
    """``call(item)`` for each item until ``deadline``: (seconds of each call, the last call's result)."""
    latencies, result = [], None
    for item in items:
        if time.monotonic() > deadline:
            break
        t0 = time.perf_counter()
        result = call(item)
        latencies.append(time.perf_counter() - t0)
    return latencies, result


def search_timings(client: Client, project: str, queries: list[str], use_cache: bool, deadline: float) -> dict:
    latencies, result = timed_calls(lambda query: client.search(query, project, k=8, use_cache=use_cache), queries,
                                    deadline)
    return {"queries": len(latencies), "p50_ms": ms(percentile(latencies, 50)),
            "p99_ms": ms(percentile(latencies, 99)), "last_cached": result.cached if latencies else None}


def memory_timings(client: Client, project: str, texts: list[str], op: str, deadline: float) -> dict:
    """p50/p99 of ``remember`` (each text a new fact) or ``recall`` (each text a fresh query) in ``project``:
    every text is new to the daemon, so each call embeds it."""
    def call(text: str) -> Any:
        return (client.remember(text, project=project) if op == "remember"
                else client.recall(text, project=project, k=8))

    latencies, _ = timed_calls(call, texts, deadline)
    return {"calls": len(latencies), "p50_ms": ms(percentile(latencies, 50)), "p99_ms": ms(percentile(latencies, 99))}


async def chroma_raw_queries(port: int, collection_id: str, vectors: list[list[float]], deadline: float) -> dict:
    path = f"/api/v2/tenants/default_tenant/databases/default_database/collections/{collection_id}/query"
    connection = await peers.HttpConnection(port).connect()
    latencies = []
    try:
        for vector in vectors:
            if time.monotonic() > deadline:
                break
            t0 = time.perf_counter()
            status, body = await connection.request("POST", path, {
                "query_embeddings": [vector], "n_results": 8, "include": ["documents", "metadatas", "distances"]})
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                raise RuntimeError(f"chroma query answered HTTP {status}: {body[:200]!r}")
    finally:
        connection.close()
    return {"queries": len(latencies), "p50_ms": ms(percentile(latencies, 50)), "p99_ms": ms(percentile(latencies, 99))}


def search_phase(client: Client, socket: str, report: Report, texts: list[str], sizes: dict[str, Any],
                 nonce: str, max_s: float, chroma: str | None) -> None:
    """pirag's search (cache miss, vector cached, cache hit), remember and recall of new texts, then the same
    search against ``chroma run``; ``texts`` are the collection, already unique to this run."""
    data = report.data
    project = f"compare-{nonce}"
    queries = [" ".join(random.Random(i * 7 + 1).sample(WORDS, 4)) + f" {nonce}{i}" for i in range(sizes["queries"])]
    try:
        # the collection's vectors, from pirag's own embed op (they warm its cache, so ingesting is cheap)
        vectors: list[list[float]] = []
        for start in range(0, len(texts), 64):
            vectors.extend(client.embed(texts[start:start + 64], format="f32").rows())
        started = time.perf_counter()
        for start in range(0, len(texts), 100):
            client.ingest(project, documents=[DocumentIn(source=f"chunk{start + i:05d}.txt", text=text)
                                              for i, text in enumerate(texts[start:start + 100])])
        ingest_s = time.perf_counter() - started
        info = next(p for p in client.list_projects().projects if p.name == project)
        data["pirag"]["search_collection"] = {"project_chunks": info.chunks, "ingest_s_cached_vectors":
                                              round(ingest_s, 2)}
        deadline = time.monotonic() + max_s
        data["pirag"]["search_miss"] = search_timings(client, project, queries, False, deadline)
        query_vectors = []
        for start in range(0, len(queries), 64):
            query_vectors.extend(client.embed(queries[start:start + 64], format="f32").rows())
        deadline = time.monotonic() + max_s
        data["pirag"]["search_vector_cached"] = search_timings(client, project, queries, False, deadline)
        client.search(queries[0], project, k=8)
        data["pirag"]["search_hit"] = search_timings(client, project, [queries[0]] * len(queries), True,
                                                     time.monotonic() + max_s)
        # remember and recall, each call embedding a short text it has not seen (issue 13's "each <= 1.3x one
        # in-process query embedding + one Chroma query"): facts built like the queries, in a project of their own
        facts = [f"decided to {' '.join(random.Random(i * 11 + 3).sample(WORDS, 5))} {nonce}f{i}"
                 for i in range(sizes["queries"])]
        data["pirag"]["remember_fresh"] = memory_timings(client, f"{project}-facts", facts, "remember",
                                                         time.monotonic() + max_s)
        data["pirag"]["recall_fresh"] = memory_timings(client, f"{project}-facts",
                                                       [f"{query} r" for query in queries], "recall",
                                                       time.monotonic() + max_s)

        executable = chroma or peers.chroma_executable()
        if executable is None or not os.access(executable, os.X_OK):
            report.peer_skipped("chroma_server", "the chroma command (from chromadb) is not installed"
                                + (f": {executable} is not an executable" if executable else ""))
            return
        if not peers.module_available("chromadb"):
            report.peer_skipped("chroma_server", "chromadb is not installed")
            return
        with tempfile.TemporaryDirectory(prefix="cmp-chroma-", dir="/tmp") as directory:
            port = peers.free_port()
            argv = [executable, "run", "--path", str(Path(directory) / "data"), "--host", "127.0.0.1",
                    "--port", str(port)]
            try:
                with peers.ServerPeer("chroma_server", argv, port, "/api/v2/heartbeat", Path(directory), 60) as peer:
                    import chromadb
                    from chromadb.config import Settings

                    remote = chromadb.HttpClient(host="127.0.0.1", port=port,
                                                 settings=Settings(anonymized_telemetry=False))
                    collection = remote.create_collection("compare", metadata={"hnsw:space": "cosine"})
                    batch = min(5000, remote.get_max_batch_size())
                    for start in range(0, len(texts), batch):
                        collection.add(ids=[f"c{i}" for i in range(start, min(len(texts), start + batch))],
                                       embeddings=vectors[start:start + batch], documents=texts[start:start + batch],
                                       metadatas=[{"source": f"chunk{i:05d}.txt"}
                                                  for i in range(start, min(len(texts), start + batch))])
                    for vector in query_vectors[:5]:
                        collection.query(query_embeddings=[vector], n_results=8)
                    raw = asyncio.run(chroma_raw_queries(port, str(collection.id), query_vectors,
                                                         time.monotonic() + max_s))
                    latencies = []
                    deadline = time.monotonic() + max_s
                    for vector in query_vectors:
                        if time.monotonic() > deadline:
                            break
                        t0 = time.perf_counter()
                        collection.query(query_embeddings=[vector], n_results=8,
                                         include=["documents", "metadatas", "distances"])
                        latencies.append(time.perf_counter() - t0)
                    official = {"queries": len(latencies), "p50_ms": ms(percentile(latencies, 50)),
                                "p99_ms": ms(percentile(latencies, 99))}
                    report.peer_ok("chroma_server", {"raw_http": raw, "chromadb_http_client": official,
                                                     "collection_count": collection.count()},
                                   argv=" ".join(argv[1:]), start_s=round(peer.start_s, 2))
            except Exception as exc:  # noqa: BLE001
                report.peer_skipped("chroma_server", str(exc))
    finally:
        for name in (project, f"{project}-facts"):
            try:
                client.drop_project(name)
            except Exception:  # noqa: BLE001 - the project may not exist if a step failed first
                pass
