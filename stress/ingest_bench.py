"""Document ingestion and search benchmark, through the socket (client library only; never daemon code).

    python -m pirag.stress.ingest_bench --sizes 1,10 [--socket PATH] [--workdir /tmp/pirag-bench] [--big]
    python -m pirag.stress.ingest_bench --socket PATH --search-only PROJECT    # search figures only

1. Builds corpora of ~N MB from the Python standard library present on this machine (``.py`` sources, plus
   ``.rst``/``.txt``/``.html`` docs when installed) by copying files into ``--workdir/corpus-N``. The daemon
   must be allowed to read there (``ingest.allowed_roots``), or pass ``--upload`` to send the contents.
2. Ingests each into a fresh project and reports chunks/s and tokens/s (figures from the job) beside the
   embedding engine's own throughput measured in the same run with the ``embed`` op on texts of the same
   size as the chunks (target: ingestion >= 0.9x the engine).
3. Search latency over the socket: cache misses (``use_cache=False``, distinct queries so the embedding cache
   does not help either) p50/p99, for common-word queries and for natural questions, and cache hits p50. With ``--big`` it first grows one project to
   ``--big-chunks`` chunks (default 100k) by ingesting copies of the corpus.
4. Daemon RSS after indexing, from ``status``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import sysconfig
import time
from pathlib import Path

from pirag.client import AsyncClient, Client
from pirag.client.errors import Forbidden, Unavailable
from pirag.client.protocol.documents import DocumentIn

WORDS = ("parse read write socket thread queue timeout header message decode encode json email logging handler "
         "format request response url cookie async await task event loop process pool lock file path error "
         "retry buffer stream test case assert mock server client string bytes unicode charset").split()

# Questions a person would type (the bench's word salad above stresses keyword search with common code words;
# these are the realistic load). Both are reported.
QUESTIONS = ("how do I read a file line by line", "retry a request with exponential backoff",
             "parse json from a socket", "what does the logging handler do", "close the thread pool on shutdown",
             "decode bytes as utf-8", "set a timeout on the connection", "where is the email header parsed",
             "how are cookies stored by the http client", "run a subprocess and capture its output",
             "compare two dates with a time zone", "walk a directory tree recursively",
             "why does the lock raise an error", "send an email with an attachment",
             "format a number with thousands separators", "cancel an asyncio task that hangs",
             "what happens when the queue is full", "escape html special characters",
             "read a csv file into a dictionary", "how to mock a method in a unit test")


def stdlib_files() -> list[Path]:
    roots = [Path(sysconfig.get_paths()["stdlib"])]
    for doc in ("/usr/share/doc/python3", "/usr/share/doc/python3.11", "/usr/share/doc/python3-doc"):
        if Path(doc).is_dir():
            roots.append(Path(doc))
    found: list[Path] = []
    for root in roots:
        for path in sorted(root.rglob("*")):
            if any(part in {"__pycache__", "site-packages", "dist-packages", "test", "tests", "idlelib"}
                   for part in path.parts):
                continue
            if path.suffix in {".py", ".rst", ".txt", ".html", ".md"} and path.is_file():
                found.append(path)
    return found


def build_corpus(target: Path, megabytes: float, files: list[Path], copy: int = 0) -> tuple[Path, int, int]:
    """Copy files until ~``megabytes`` MB; returns (dir, files, bytes). ``copy`` makes distinct copies."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    limit = int(megabytes * (1 << 20))
    total = count = 0
    for index, path in enumerate(files):
        size = path.stat().st_size
        if size > 512 << 10 or size == 0:
            continue
        if total + size > limit:
            break
        destination = target / f"{index:05d}_{path.name}"
        data = path.read_bytes()
        if copy:
            data = f"# copy {copy}\n".encode() + data
        destination.write_bytes(data)
        total += len(data)
        count += 1
    return target, count, total


def ingest(client: Client, project: str, corpus: Path, upload: bool) -> dict[str, float]:
    started = time.perf_counter()
    if upload:
        documents = [DocumentIn(source=str(path), data=path.read_bytes()) for path in sorted(corpus.iterdir())]
        chunks = tokens = 0
        for start in range(0, len(documents), 200):
            result = client.ingest(project, documents=documents[start:start + 200])
            chunks += result.chunks_embedded + result.chunks_reused
            tokens += result.tokens
        elapsed = time.perf_counter() - started
        return {"seconds": elapsed, "chunks": chunks, "tokens": tokens}
    result = client.ingest(project, [str(corpus)])
    if result.job_id is None:
        elapsed = time.perf_counter() - started
        return {"seconds": elapsed, "chunks": result.chunks_total, "tokens": 0}
    while True:
        job = client.ingest_status(result.job_id).jobs[0]
        if job.state not in ("queued", "running"):
            break
        time.sleep(0.2)
    elapsed = time.perf_counter() - started
    if job.state != "done":
        raise RuntimeError(f"job {job.job_id} ended {job.state}: {job.error}")
    summary_tokens = job.result.tokens if job.result is not None else 0
    return {"seconds": elapsed, "chunks": job.chunks_done, "tokens": summary_tokens, "files": job.files_done}


def engine_throughput(socket: str | None, samples: list[str], concurrency: int = 4, batch: int = 64) -> float:
    """Texts/s of the ``embed`` op alone (several requests in flight, like the ingest pipeline keeps)."""

    async def run() -> float:
        async with AsyncClient(socket, timeout=600) as client:
            batches = [samples[i:i + batch] for i in range(0, len(samples), batch)]
            semaphore = asyncio.Semaphore(concurrency)

            async def one(texts: list[str]) -> None:
                async with semaphore:
                    await client.embed(texts, format="f32")

            started = time.perf_counter()
            await asyncio.gather(*(one(texts) for texts in batches))
            return len(samples) / (time.perf_counter() - started)

    return asyncio.run(run())


def sample_texts(corpus: Path, count: int, chars: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    texts = []
    files = sorted(corpus.iterdir())
    while len(texts) < count:
        data = rng.choice(files).read_text("utf-8", errors="replace")
        if len(data) <= chars:
            texts.append(data + f"\n# sample {len(texts)}")
            continue
        start = rng.randrange(0, len(data) - chars)
        texts.append(data[start:start + chars] + f"\n# sample {len(texts)}")
    return texts


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def search_latency(client: Client, project: str, queries: int, seed: int) -> dict[str, float]:
    """Cache misses for the bench's common-word queries (four code words and a number) and for natural
    questions (``QUESTIONS`` with a number appended, so that neither cache helps), then cache hits. Another
    ``seed`` gives other queries (a second run against the same daemon must not hit its embedding cache)."""
    rng = random.Random(seed)
    misses: list[float] = []
    for number in range(queries):
        query = " ".join(rng.sample(WORDS, 4)) + f" {number}"
        started = time.perf_counter()
        client.search(query, project, k=8, use_cache=False)
        misses.append((time.perf_counter() - started) * 1000)
    natural: list[float] = []
    for number in range(queries):
        query = f"{QUESTIONS[number % len(QUESTIONS)]} {seed * queries + number}"
        started = time.perf_counter()
        client.search(query, project, k=8, use_cache=False)
        natural.append((time.perf_counter() - started) * 1000)
    hits: list[float] = []
    client.search("read a file line by line", project, k=8)
    for _ in range(queries):
        started = time.perf_counter()
        result = client.search("read a file line by line", project, k=8)
        hits.append((time.perf_counter() - started) * 1000)
        assert result.cached
    return {"miss_p50_ms": percentile(misses, 0.5), "miss_p99_ms": percentile(misses, 0.99),
            "natural_p50_ms": percentile(natural, 0.5), "natural_p99_ms": percentile(natural, 0.99),
            "hit_p50_ms": percentile(hits, 0.5), "queries": queries}


def latency_text(latency: dict[str, float]) -> str:
    return (f"miss p50 {latency['miss_p50_ms']:.2f} ms, p99 {latency['miss_p99_ms']:.2f} ms (common-word queries); "
            f"miss p50 {latency['natural_p50_ms']:.2f} ms, p99 {latency['natural_p99_ms']:.2f} ms (questions); "
            f"hit p50 {latency['hit_p50_ms']:.3f} ms")


def load_text() -> str:
    try:
        return "load average " + " ".join(f"{value:.1f}" for value in os.getloadavg()) + f" on {os.cpu_count()} cpus"
    except OSError:
        return "load average n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ingest_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--socket")
    parser.add_argument("--sizes", default="1,10", help="corpus sizes in MB (default 1,10)")
    parser.add_argument("--workdir", default="/tmp/pirag-bench")
    parser.add_argument("--upload", action="store_true", help="send contents instead of daemon-side paths")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--engine-samples", type=int, default=512)
    parser.add_argument("--big", action="store_true", help="grow a project to --big-chunks chunks, then search")
    parser.add_argument("--big-chunks", type=int, default=100_000)
    parser.add_argument("--keep", action="store_true", help="keep the benchmark projects")
    parser.add_argument("--seed", type=int, help="query seed for --search-only (default: the process id)")
    parser.add_argument("--search-only", metavar="PROJECT",
                        help="only measure search over an existing project (e.g. one kept by --big --keep)")
    args = parser.parse_args(argv)
    if args.search_only:
        with Client(args.socket, timeout=3600) as client:
            info = next((p for p in client.list_projects().projects if p.name == args.search_only), None)
            if info is None:
                print(f"no project {args.search_only!r}", file=sys.stderr)
                return 1
            embed = client.status().components.get("embed", {})
            model = embed.get("model_id") or (embed.get("model") or {}).get("model_id")
            print(f"daemon: model {model}")
            latency = search_latency(client, args.search_only, args.queries,
                                     seed=args.seed if args.seed is not None else os.getpid())
            print(f"search over {info.chunks} chunks: {latency_text(latency)}; daemon RSS "
                  f"{client.status().rss_bytes / (1 << 20):.0f} MiB; {load_text()}")
        return 0
    workdir = Path(args.workdir)
    files = stdlib_files()
    print(f"corpus source: {len(files)} stdlib files under {sysconfig.get_paths()['stdlib']}")
    with Client(args.socket, timeout=3600) as client:
        try:
            model = client.embed(["hello"]).model_id
        except Unavailable:   # a daemon with the fake embedder has no embed op: no engine figure
            model = None
        print(f"daemon: model {model}, vectors {client.status().components.get('vectors', {}).get('backend')}")
        for size in [float(s) for s in args.sizes.split(",") if s]:
            corpus, count, total = build_corpus(workdir / f"corpus-{size:g}", size, files)
            project = f"bench-{size:g}mb-{os.getpid()}"
            try:
                figures = ingest(client, project, corpus, args.upload)
            except Forbidden as exc:
                print(f"pirag: {exc.message}\nadd {workdir} to ingest.allowed_roots, or run with --upload",
                      file=sys.stderr)
                return 1
            info = next(p for p in client.list_projects().projects if p.name == project)
            chars_per_chunk = max(200, info.bytes // max(1, info.chunks))
            samples = sample_texts(corpus, args.engine_samples, chars_per_chunk, seed=int(size * 10))
            chunks_s = info.chunks / figures["seconds"]
            tokens_s = figures["tokens"] / figures["seconds"]
            if model is not None:
                engine = engine_throughput(args.socket, samples)
                engine_text = (f"engine alone {engine:.1f} texts/s on chunk-sized texts -> ingestion/engine = "
                               f"{chunks_s / engine:.2f}x")
            else:
                engine_text = "engine: n/a (this daemon has no embed op)"
            print(f"{size:g} MB: {count} files, {total / (1 << 20):.2f} MiB -> {info.chunks} chunks in "
                  f"{figures['seconds']:.1f} s: {chunks_s:.1f} chunks/s ({tokens_s:.0f} tokens/s); {engine_text}")
            latency = search_latency(client, project, args.queries, seed=1)
            print(f"  search over {info.chunks} chunks: {latency_text(latency)}; {load_text()}")
            print(f"  daemon RSS {client.status().rss_bytes / (1 << 20):.0f} MiB")
            if not args.keep:
                client.drop_project(project)
        if args.big:
            project = f"bench-big-{os.getpid()}"
            copy = 0
            chunks = 0
            started = time.perf_counter()
            while chunks < args.big_chunks:
                copy += 1
                corpus, _, _ = build_corpus(workdir / f"big-{copy}", 10, files, copy=copy)
                ingest(client, project, corpus, args.upload)
                chunks = next(p for p in client.list_projects().projects if p.name == project).chunks
                print(f"  big: {chunks} chunks after {time.perf_counter() - started:.0f} s", flush=True)
            latency = search_latency(client, project, args.queries, seed=2)
            print(f"big: search over {chunks} chunks: {latency_text(latency)}; daemon RSS "
                  f"{client.status().rss_bytes / (1 << 20):.0f} MiB; {load_text()}")
            if not args.keep:
                client.drop_project(project)
    return 0


if __name__ == "__main__":
    sys.exit(main())
