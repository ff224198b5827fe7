"""Traffic generators: worker processes, each driving several client connections (one ``AsyncClient`` each).

The parent builds one ``WorkerSpec`` per process and calls ``run_workers``; every worker runs an asyncio loop
with ``clients`` coroutines, each holding its own connection to the daemon and issuing operations picked from
a weighted mix (``OPS``). Every client loop is bounded twice: by ``max_ops`` and by ``duration_s``; the parent
adds a hard deadline on top and terminates a worker that outlives it.

A client is closed-loop (next request when the reply arrives, optionally after ``think_s``) or open-loop at
``rate`` requests/s (``load``): in open-loop mode the latency is measured from the request's *scheduled* start,
so a daemon that falls behind shows it in the figures instead of silently slowing the generator (coordinated
omission).

Samples travel back to the parent in batches every ~0.5 s as ``(t, op, latency_s, code)`` tuples, ``t`` being
``time.monotonic()`` at the (scheduled) start: CLOCK_MONOTONIC is system-wide on Linux, so the parent can line
samples up with its resource monitor. ``code`` is "" for success, else the error code (``busy``, ``timeout``,
``connection_failed``, ...).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import queue as queue_module
import random
import sysconfig
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pirag.client import AsyncClient
from pirag.client.errors import PiragError

Sample = tuple[float, str, float, str]

WORDS = ("parse read write socket thread queue timeout header message decode encode json email logging handler "
         "format request response url cookie async await task event loop process pool lock file path error "
         "retry buffer stream test case assert mock server client string bytes unicode charset backup network "
         "memory index vector search cache project config daemon signal").split()


@dataclass
class WorkerSpec:
    """What one worker process does. Picklable (it crosses to a spawned process)."""

    socket: str
    worker: int
    clients: int
    duration_s: float
    max_ops: int                                   # per client
    mix: dict[str, float]                          # op name -> weight
    projects: list[str] = field(default_factory=list)
    rate: float | None = None                      # per client, requests/s (open loop); None: closed loop
    think_s: float = 0.0
    timeout_s: float = 30.0
    seed: int = 0
    tag: str = "stress"                            # prefix of sessions/sources/tags this run writes
    bounded: bool = False                          # draw contents from a fixed pool (steady state: leaks)
    pool_size: int = 200
    cache_fraction: float = 0.3                    # searches that repeat a popular query (cache hits)
    mode: str = "mix"                              # mix | churn
    churn_docs: int = 4
    start_at: float = 0.0                          # time.monotonic() to start at (lines workers up)
    # a scenario comparing phases gives each its own number: new texts, queries and facts per phase, so that a
    # later phase is not served by the caches and exact-duplicate checks the earlier one filled (0: shared)
    phase: int = 0


# --------------------------------------------------------------------------------------------------------------
# text from the machine


def stdlib_paragraphs(limit_files: int = 60, seed: int = 0) -> list[str]:
    """Paragraphs of real text: docstrings and comments of the Python standard library on this machine."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py") if p.stat().st_size > 4000)
    random.Random(seed).shuffle(files)
    paragraphs: list[str] = []
    for path in files[:limit_files]:
        try:
            text = path.read_text("utf-8", errors="replace")
        except OSError:
            continue
        for block in text.split("\n\n"):
            block = block.strip()
            if 80 <= len(block) <= 2000:
                paragraphs.append(block)
    return paragraphs or ["pirag keeps the embedding model warm and answers on one Unix socket."] * 10


class Content:
    """Texts, queries and names for one client; ``bounded`` repeats a fixed pool so the data set stops growing."""

    def __init__(self, spec: WorkerSpec, client_index: int, paragraphs: list[str]):
        self.spec = spec
        self.rng = random.Random(spec.seed * 1000 + spec.worker * 100 + client_index + spec.phase * 1_000_003)
        self.paragraphs = paragraphs
        self.client_id = f"{spec.tag}-w{spec.worker}c{client_index}" + (f"p{spec.phase}" if spec.phase else "")
        self.counter = 0
        self.popular = [" ".join(random.Random(n).sample(WORDS, 3)) for n in range(8)]

    def next_number(self) -> int:
        self.counter += 1
        if self.spec.bounded:
            return self.rng.randrange(self.spec.pool_size)
        return self.counter

    def paragraph(self) -> str:
        return self.rng.choice(self.paragraphs)

    def fact(self) -> str:
        number = self.next_number()
        base = self.paragraphs[(number * 7919) % len(self.paragraphs)][:300]
        return f"{base} [{self.client_id} fact {number}]"

    def query(self) -> tuple[str, bool]:
        if self.rng.random() < self.spec.cache_fraction:
            return self.rng.choice(self.popular), True
        words = " ".join(self.rng.sample(WORDS, 4))
        if self.spec.bounded:
            return f"{words} {self.rng.randrange(self.spec.pool_size)}", True
        return f"{words} {self.client_id} {self.counter}", False

    def project(self) -> str:
        return self.rng.choice(self.spec.projects) if self.spec.projects else f"{self.spec.tag}-docs"


# --------------------------------------------------------------------------------------------------------------
# operations: each takes (client, content) and returns an awaitable


async def op_search(client: AsyncClient, content: Content) -> None:
    query, _ = content.query()
    await client.search(query, content.project(), k=8)


async def op_search_nocache(client: AsyncClient, content: Content) -> None:
    query, _ = content.query()
    await client.search(query, content.project(), k=8, use_cache=False)


async def op_remember(client: AsyncClient, content: Content) -> None:
    await client.remember(content.fact(), project=content.project(), tags=[content.spec.tag], source="pirag-stress")


async def op_recall(client: AsyncClient, content: Content) -> None:
    query, _ = content.query()
    await client.recall(query, project=content.project(), k=5)


async def op_log_episode(client: AsyncClient, content: Content) -> None:
    await client.log_episode(content.paragraph()[:500], session=content.client_id, kind="message", role="user",
                             project=content.project())


async def op_timeline(client: AsyncClient, content: Content) -> None:
    await client.timeline(session=content.client_id, limit=20)


async def op_ingest_small(client: AsyncClient, content: Content) -> None:
    number = content.next_number() % 50 if content.spec.bounded else content.next_number()
    text = "\n\n".join(content.paragraph() for _ in range(3))
    await client.ingest_text(content.project(), f"{content.client_id}/note-{number}.md", text)


async def op_ping(client: AsyncClient, content: Content) -> None:
    await client.ping()


OPS: dict[str, Callable[[AsyncClient, Content], Any]] = {
    "search": op_search, "search_nocache": op_search_nocache, "remember": op_remember, "recall": op_recall,
    "log_episode": op_log_episode, "timeline": op_timeline, "ingest_small": op_ingest_small, "ping": op_ping,
}

# The realistic mix of an agent-heavy machine: mostly reads, some writes, a few small ingests.
DEFAULT_MIX = {"search": 35, "recall": 20, "remember": 15, "log_episode": 15, "timeline": 10, "ingest_small": 5}


def error_code(exc: BaseException) -> str:
    if isinstance(exc, PiragError):
        return exc.code
    return f"exception:{type(exc).__name__}"


# --------------------------------------------------------------------------------------------------------------
# the worker process


class Recorder:
    """Collects samples and ships them to the parent in batches."""

    def __init__(self, out: Any, worker: int):
        self.out, self.worker = out, worker
        self.samples: list[Sample] = []
        self.last_flush = time.monotonic()

    def add(self, op: str, started: float, finished: float, code: str) -> None:
        self.samples.append((started, op, finished - started, code))
        if finished - self.last_flush > 0.5:
            self.flush()

    def flush(self) -> None:
        if self.samples:
            self.out.put(("samples", self.worker, self.samples))
            self.samples = []
        self.last_flush = time.monotonic()


async def timed(recorder: Recorder, op: str, call: Any, scheduled: float | None = None) -> str:
    started = time.monotonic() if scheduled is None else scheduled
    try:
        await call
        code = ""
    except (PiragError, OSError, asyncio.TimeoutError) as exc:
        code = error_code(exc)
    recorder.add(op, started, time.monotonic(), code)
    return code


def weighted(mix: dict[str, float], rng: random.Random) -> Iterator[str]:
    names = [name for name, weight in mix.items() if weight > 0]
    weights = [mix[name] for name in names]
    while True:
        yield rng.choices(names, weights)[0]


async def mix_client(spec: WorkerSpec, index: int, recorder: Recorder, deadline: float, stop: Any,
                     paragraphs: list[str]) -> None:
    content = Content(spec, index, paragraphs)
    ops = weighted(spec.mix, content.rng)
    client = AsyncClient(spec.socket, timeout=spec.timeout_s, max_inflight=4)
    try:
        try:
            await client.connect()
        except PiragError as exc:
            recorder.add("connect", time.monotonic(), time.monotonic(), error_code(exc))
            return
        interval = 1.0 / spec.rate if spec.rate else 0.0
        # spread the open-loop clients' phases so they do not fire in lockstep
        next_at = time.monotonic() + (content.rng.random() * interval if interval else 0.0)
        for _ in range(spec.max_ops):
            if time.monotonic() >= deadline or stop.is_set():
                break
            scheduled = None
            if interval:
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if next_at >= deadline:
                    break
                scheduled, next_at = next_at, next_at + interval
            op = next(ops)
            await timed(recorder, op, OPS[op](client, content), scheduled)
            if spec.think_s:
                await asyncio.sleep(content.rng.expovariate(1.0 / spec.think_s))
    finally:
        await client.close()


async def churn_client(spec: WorkerSpec, index: int, recorder: Recorder, deadline: float, stop: Any,
                       paragraphs: list[str]) -> None:
    """Create, fill, query and drop one project after another (``project-churn``)."""
    content = Content(spec, index, paragraphs)
    client = AsyncClient(spec.socket, timeout=spec.timeout_s, max_inflight=4)
    try:
        await client.connect()
        for cycle in range(spec.max_ops):
            if time.monotonic() >= deadline or stop.is_set():
                break
            project = f"{spec.tag}-w{spec.worker}c{index}-{cycle}"
            for number in range(spec.churn_docs):
                text = "\n\n".join(content.paragraph() for _ in range(4))
                await timed(recorder, "ingest_small", client.ingest_text(project, f"doc-{number}.md", text))
            await timed(recorder, "remember", client.remember(content.fact(), project=project, tags=[spec.tag]))
            await timed(recorder, "log_episode", client.log_episode(content.paragraph()[:300],
                                                                    session=content.client_id, project=project))
            query, _ = content.query()
            await timed(recorder, "search", client.search(query, project, k=5))
            await timed(recorder, "recall", client.recall(query, project=project, k=5))
            await timed(recorder, "drop_project", client.drop_project(project))
    except PiragError as exc:
        recorder.add("connect", time.monotonic(), time.monotonic(), error_code(exc))
    finally:
        await client.close()


async def worker_async(spec: WorkerSpec, out: Any, stop: Any) -> None:
    recorder = Recorder(out, spec.worker)
    paragraphs = stdlib_paragraphs(seed=spec.seed)
    if spec.start_at:
        await asyncio.sleep(max(0.0, spec.start_at - time.monotonic()))
    deadline = time.monotonic() + spec.duration_s
    body = churn_client if spec.mode == "churn" else mix_client

    async def flusher() -> None:
        while True:
            await asyncio.sleep(0.5)
            recorder.flush()

    flushing = asyncio.create_task(flusher())
    try:
        await asyncio.wait_for(
            asyncio.gather(*(body(spec, index, recorder, deadline, stop, paragraphs) for index in range(spec.clients)),
                           return_exceptions=True),
            spec.duration_s + spec.timeout_s + 5)
    except asyncio.TimeoutError:
        pass
    finally:
        flushing.cancel()
        recorder.flush()


def worker_main(spec: WorkerSpec, out: Any, stop: Any) -> None:
    try:
        asyncio.run(worker_async(spec, out, stop))
    finally:
        out.put(("done", spec.worker, os.getpid()))


# --------------------------------------------------------------------------------------------------------------
# the parent side


def split_clients(clients: int, workers: int) -> list[int]:
    workers = max(1, min(workers, clients))
    return [clients // workers + (1 if index < clients % workers else 0) for index in range(workers)]


def default_workers(clients: int) -> int:
    return max(1, min(clients, max(2, (os.cpu_count() or 2)), 8))


def run_workers(specs: list[WorkerSpec], on_samples: Callable[[list[Sample]], None],
                on_tick: Callable[[], None] | None = None, grace_s: float = 30.0,
                until: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Start one process per spec, feed their samples to ``on_samples`` as they arrive, wait for all of them.

    ``until``: when it returns True the workers are told to stop early (their loops check between requests).
    Bounded: a worker still alive ``grace_s`` after the longest spec's duration is told to stop, then terminated.
    Returns {"workers", "terminated", "elapsed_s"}."""
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    stop = context.Event()
    processes = [context.Process(target=worker_main, args=(spec, out, stop), daemon=True) for spec in specs]
    started = time.monotonic()
    for process in processes:
        process.start()
    longest = max(spec.duration_s + max(0.0, spec.start_at - started) for spec in specs)
    hard_deadline = started + longest + grace_s + 10  # +10: process start-up (spawn imports)
    remaining = len(processes)
    terminated = 0
    last_tick = 0.0
    while remaining:
        now = time.monotonic()
        if now > hard_deadline:
            stop.set()
            break
        if until is not None and not stop.is_set() and until():
            stop.set()
        try:
            kind, _, payload = out.get(timeout=0.25)
        except queue_module.Empty:
            kind = ""
        if kind == "samples":
            on_samples(payload)
        elif kind == "done":
            remaining -= 1
        if on_tick is not None and time.monotonic() - last_tick >= 0.5:
            on_tick()
            last_tick = time.monotonic()
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():
            process.terminate()
            process.join(timeout=5)
            terminated += 1
    while True:  # samples sent just before the end
        try:
            kind, _, payload = out.get_nowait()
        except (queue_module.Empty, OSError, ValueError):
            break
        if kind == "samples":
            on_samples(payload)
    out.close()
    return {"workers": len(processes), "terminated": terminated, "elapsed_s": time.monotonic() - started}
