"""The embedding engine (component ``embed``): one model, a warm pool of llama.cpp contexts, micro-batches, a cache.

How a call flows::

    embed(texts)                    event loop: cache lookups, identical texts folded, one future per call
      -> _WorkQueue                 two FIFO lanes (small interactive calls, bulk); put never blocks the loop
      -> the latency lane           one context with every CPU's thread, on its own long-lived thread: takes the
                                    small calls (a query, a fact); bulk contexts pause between packs meanwhile
      -> bulk worker thread x N     one single-threaded llama.cpp context each: takes texts until the batch token
                                    budget is full (tokenizing as it goes), encodes the pack in one llama_encode
      -> loop.call_soon_threadsafe  the call's future resolves when its last row is in; the loop caches the rows

The latency lane (``embed.lane``): a lone query on a one-thread context uses one core of N. The lane's context
has ``lane_threads`` threads (default: all CPUs of the affinity) and a gate: while the lane has work, bulk workers
start no new pack (waiting at most ``work_queue.LANE_GATE_MAX_S``, so a stream of queries cannot starve ingestion); a pack
already running finishes. ggml built with OpenMP makes the lane's threads wait for work in libgomp: its default
spin-then-sleep made a 2-thread query cost 10x a 1-thread one as soon as the cores were busy, so the engine asks
for passive waits (``OMP_WAIT_POLICY=passive``, set before llama.cpp is loaded, unless the environment says
otherwise). Built without OpenMP (the x86-64 packages), ggml would start and join the lane's threads on every
encode; the lane has a persistent ggml thread pool instead (``embed.lane_pool``, ``threadpool.py``). The figures
behind each choice: ``python -m pirag.daemon.embed.probe`` and
docs/PERFORMANCE_IMPROVEMENTS.md. Without the lane (or when its context cannot be made) small calls go first in
the bulk workers' queue, as before.

Micro-batching: a worker takes whatever is queued, up to ``batch_tokens`` tokens and 64 sequences, and runs it at
once: texts that arrive while a pack is being computed form the next pack, so a lone query never waits. Only when
the queue runs dry while other calls are still pending does a worker wait (at most ``batch_wait_ms``) for more.
With flash attention, packs of a few hundred tokens beat one text per call (FINDINGS.md; docs/EMBEDDINGS.md has
this build's figures).

Failures: a worker whose context raises fails the texts of that pack (their calls get ``InternalError``), throws the
context away and creates a new one; a call never hangs. When no context can be created, calls fail with
``Unavailable``.

Model info and ``count_tokens``/``tokenize_offsets`` match ``FakeEmbedder``'s surface (services code against it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pirag.client import errors
from pirag.client.protocol.embed import EmbedArgs, EmbedResult

from ..config import EmbedConfig
from .cache import EmbeddingCache, text_key
from .fake import ModelInfo
from .threads import available_cpus, lower_this_thread, uses_openmp
from .work_queue import BOTH, BULK, FAST, _Call, _Item, _WorkQueue

log = logging.getLogger("pirag.embed")

MAX_SEQUENCES_PER_BATCH = 64
SMALL_CALL_TEXTS = 4          # calls with at most this many texts (queries) go through the fast lane
LANE_PROBE_GAP_S = 0.005      # the idle gap before each calibration encode (a query arrives after a pause)
LANE_PROBE_RUNS = 7
LANE_PROBE_TEXT = "where did I put the notes about the backup schedule"
OMP_WAIT_POLICY = "passive"   # libgomp's waits for the lane's threads (probe.py: spinning loses on busy cores)


def pool_shape(config: EmbedConfig, cpus: int | None = None) -> tuple[int, int]:
    """(contexts, threads per context) from the config, 0 meaning automatic from the CPU affinity.

    Automatic: one single-threaded context per CPU. llama-cpp-python builds ggml with OpenMP, and libgomp makes
    a parallel region started from any thread but the process's first one pay a passive-wait penalty: the same
    llama_encode of a short query took 3.7 ms from the main thread and 8.6 ms from a worker thread (ours always
    are). Single-threaded contexts start no parallel region. Measured on an idle 2-core machine, 1 x 2 threads
    vs 2 x 1 thread: query p50 9.9-13.1 vs 5.3-7.1 ms, 48 concurrent texts 14.5 vs 18.7-19.6 texts/s, bulk
    13.7-16.9 vs 17.0-19.3 texts/s (docs/EMBEDDINGS.md)."""
    cpus = cpus or available_cpus()
    threads = config.threads_per_context or 1
    contexts = config.contexts or max(1, cpus // threads)
    return contexts, threads


def lane_threads(config: EmbedConfig, cpus: int | None = None) -> int:
    """Threads of the latency lane's context; 0 when there is no lane."""
    if not config.lane:
        return 0
    return config.lane_threads or cpus or available_cpus()


def prefer_passive_waits() -> str:
    """Ask libgomp for passive waits before llama.cpp (and libgomp) is loaded; returns the policy in force.

    libgomp reads its environment once, when it is loaded: after that a change is ignored, so a process that
    imported llama_cpp earlier keeps what it had ("unknown"). A policy set in the environment wins."""
    if "llama_cpp" in sys.modules and "OMP_WAIT_POLICY" not in os.environ:
        return "unknown (llama.cpp was loaded before the engine)"
    return os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)


class EmbedEngine:
    """The ``embed`` component. ``model`` is set once ``start()`` has loaded and warmed the model."""

    name = "embed"

    def __init__(self, config: EmbedConfig, *, model_path: str | Path | None = None,
                 state_dir: str | Path | None = None, progress: Callable[[str], None] | None = None,
                 use_extra_bufts: bool | None = None):
        self.config = config
        self._model_path = Path(model_path) if model_path else (Path(config.model) if config.model else None)
        self._state_dir = Path(state_dir) if state_dir else None
        self._progress = progress or (lambda message: None)
        if use_extra_bufts is None and config.extra_buffer_types != "auto":
            use_extra_bufts = config.extra_buffer_types == "on"
        self._use_extra_bufts = use_extra_bufts      # None: llama.cpu_has_amx() decides
        self.contexts, self.threads_per_context = pool_shape(config)
        self.lane_threads = lane_threads(config)
        self.lane_calibration: dict[str, Any] | None = None
        self.lane_pool_poll: int | None = None   # the lane's persistent ggml pool's polling level; None: no pool
        self.lane_resized = 0            # times the lane's threads were fitted to the CPUs bulk packs leave
        self._bulk_busy = 0              # bulk packs being encoded right now
        self.bulk_nice = 0               # the bulk threads' nice value (embed.bulk_nice), once they run
        self._busy_lock = threading.Lock()
        self.omp_wait_policy = ""
        self.openmp: bool | None = None
        self.model: ModelInfo | None = None
        self._tokenizer: Any = None
        self._llama_model: Any = None
        self._queue = _WorkQueue()
        self._workers: list[threading.Thread] = []
        self._alive = 0
        self._alive_lock = threading.Lock()
        self._cache = EmbeddingCache(config.cache_entries, config.cache_max_mb << 20)
        self._pending_calls = 0
        self._batch_tokens = 0
        self._batch_wait_s = config.batch_wait_ms / 1000.0
        # figures (workers update them; an int += under the GIL is good enough for counters)
        self.batches = 0
        self.texts_embedded = 0
        self.tokens_embedded = 0
        self.calls = 0
        self.failures = 0
        self.context_restarts = 0
        self.lane_batches = 0
        self.lane_texts = 0
        self._started = False
        # test hook: called with the token-id lists before each llama_encode
        self._before_encode: Callable[[list[list[int]]], None] | None = None

    # ---- lifecycle -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Resolve (and on first use import) the model, load it, create and warm every context."""
        await asyncio.to_thread(self._start_blocking)
        self._started = True

    def _start_blocking(self) -> None:
        self.omp_wait_policy = prefer_passive_waits() if self.lane_threads > 1 else os.environ.get(
            "OMP_WAIT_POLICY", "")
        from .importer import FILE_TYPE_NAMES, KEY_CHINESE, KEY_LOWERCASE, KEY_MAX_SEQ, KEY_STRIP_ACCENTS, POOLING_NAMES
        from .importer import sha256_file
        from .llama import LlamaModel
        from .tokenizer import BertTokenizer, spec_from_gguf_tokens

        path = self._model_path
        if path is None:
            from .default_model import ensure_default_model

            if self._state_dir is None:
                raise RuntimeError("the embedded default model needs a state directory")
            path = ensure_default_model(self._state_dir, self._progress)
        path = path.expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"embed.model: {path} does not exist")
        started = time.perf_counter()
        self._progress(f"loading embedding model {path.name}")
        # Metadata and vocabulary come from llama.cpp itself: gguf's Python reader takes a second for 30k tokens.
        llama_model = LlamaModel(path, use_extra_bufts=self._use_extra_bufts)
        try:
            architecture = llama_model.meta("general.architecture") or "?"
            if architecture != "bert":
                raise ValueError(f"{path}: architecture {architecture!r} is not supported "
                                 "(BERT-family GGUF embedding models only)")
            pooling = POOLING_NAMES.get(int(llama_model.meta("bert.pooling_type") or 0), "?")
            if pooling not in ("mean", "cls"):
                raise ValueError(f"{path}: pooling {pooling!r} is not supported (mean or CLS)")
            context_length = int(llama_model.meta("bert.context_length") or 512)
            max_tokens = int(llama_model.meta(KEY_MAX_SEQ) or context_length)
            file_type = llama_model.meta("general.file_type")
            quantization = FILE_TYPE_NAMES.get(int(file_type), file_type) if file_type else "?"

            def flag(key: str, default: bool | None) -> bool | None:
                value = llama_model.meta(key)
                return default if value is None else value == "true"

            spec = spec_from_gguf_tokens(llama_model.tokens(), lowercase=bool(flag(KEY_LOWERCASE, True)),
                                         strip_accents=flag(KEY_STRIP_ACCENTS, None),
                                         chinese_chars=bool(flag(KEY_CHINESE, True)))
        except BaseException:
            llama_model.close()
            raise
        self._llama_model = llama_model
        self._tokenizer = BertTokenizer(spec, max_tokens)
        self._batch_tokens = max(self.config.batch_tokens, max_tokens)
        digest = sha256_file(path)
        self.openmp = uses_openmp()
        contexts = [self._new_context() for _ in range(self.contexts)]
        lane = self._new_context(self.lane_threads, lane=True) if self.lane_threads else None
        if lane is not None:
            contexts.append(lane)
        for context in contexts:        # warm: the worst-case pack allocates every compute buffer now
            context.embed([self._tokenizer.encode("warm up")] * 2)
            context.embed([[spec.special["[CLS]"]] + [spec.special["[UNK]"]] * (max_tokens - 2)
                           + [spec.special["[SEP]"]]])
        if lane is not None and not self.config.lane_threads and self.lane_threads > 1:
            self.lane_threads = self._calibrate_lane(lane, self._tokenizer.encode(LANE_PROBE_TEXT))
        load_s = time.perf_counter() - started
        self.model = ModelInfo(model_id=f"{path.stem}-{digest[:12]}", path=str(path), dims=self._llama_model.dims,
                               max_tokens=max_tokens, pooling=pooling, quantization=quantization,
                               load_s=round(load_s, 3), architecture=architecture)
        self._alive = len(contexts)
        self._queue.lane = lane is not None
        for number, context in enumerate(contexts):
            is_lane = context is lane
            worker = threading.Thread(target=self._work, args=(context, is_lane), daemon=True,
                                      name="pirag-embed-lane" if is_lane else f"pirag-embed-{number}")
            worker.start()
            self._workers.append(worker)
        log.info("embedding model %s: %d dims, %s pooling, max %d tokens, %s, %d context(s) x %d thread(s), "
                 "latency lane %s, OpenMP %s (wait policy %s), loaded and warm in %.2f s", self.model.model_id,
                 self.model.dims, self.model.pooling, max_tokens, self.model.quantization, self.contexts,
                 self.threads_per_context, f"{self.lane_threads} thread(s)" if lane is not None else "off",
                 "yes" if self.openmp else "no", self.omp_wait_policy or "libgomp's default", load_s)

    def _calibrate_lane(self, lane: Any, ids: list[int]) -> int:
        """The lane's thread count, measured: a query after an idle gap, with one thread and with every CPU.

        A thread on every CPU wins where an idle CPU wakes at once (a Pi). On a virtual machine a sleeping vCPU
        can take milliseconds to be scheduled again: on this project's 2-vCPU build host the second thread made
        a query 16 ms instead of 4.7 ms after a 5 ms pause (2.3 ms back to back). So the daemon measures both
        at start (``LANE_PROBE_RUNS`` each, about 0.2 s) and keeps the faster; ``embed.lane_threads`` set to a
        number skips this."""
        timings: dict[int, float] = {}
        for threads in (self.lane_threads, 1):
            lane.set_threads(threads)
            lane.embed([ids])
            runs = []
            for _ in range(LANE_PROBE_RUNS):
                time.sleep(LANE_PROBE_GAP_S)
                begun = time.perf_counter()
                lane.embed([ids])
                runs.append(time.perf_counter() - begun)
            timings[threads] = sorted(runs)[len(runs) // 2] * 1000
        chosen = min(timings, key=lambda threads: (timings[threads], -threads))
        lane.set_threads(chosen)
        self.lane_calibration = {"ms_by_threads": {str(t): round(ms, 2) for t, ms in timings.items()},
                                 "gap_ms": LANE_PROBE_GAP_S * 1000, "chosen": chosen}
        log.info("latency lane: %s ms for a query after an idle gap (by threads); using %d thread(s)",
                 self.lane_calibration["ms_by_threads"], chosen)
        return chosen

    def _new_context(self, threads: int | None = None, lane: bool = False) -> Any:
        """A bulk context, or (``lane``) the latency lane's, with a persistent ggml thread pool where
        ``embed.lane_pool`` asks for one (threadpool.py)."""
        from .llama import LlamaContext

        context = LlamaContext(self._llama_model, batch_tokens=self._batch_tokens,
                               max_sequences=MAX_SEQUENCES_PER_BATCH, threads=threads or self.threads_per_context,
                               flash_attn=self.config.flash_attn)
        if lane and self.config.lane_pool and context.threads > 1:
            from . import threadpool

            pool = threadpool.make(context.threads, self.config.lane_poll)
            if pool is not None:
                context.use_pool(pool)
                self.lane_pool_poll = pool.poll
        return context

    async def close(self) -> None:
        for item in self._queue.close():
            item.call.fail(errors.Unavailable("the embedding engine is shutting down"))
        workers, self._workers = self._workers, []
        await asyncio.to_thread(lambda: [worker.join(timeout=30) for worker in workers])
        if self._llama_model is not None and not any(worker.is_alive() for worker in workers):
            self._llama_model.close()
            self._llama_model = None

    # ---- the surface services use ----------------------------------------------------------------------------

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text takes untruncated, [CLS] and [SEP] included (thread-safe)."""
        return self._tokenizer.count_tokens(texts)

    def tokenize_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character spans of ``text``'s tokens (no special tokens, no truncation), for token-aware chunking."""
        return self._tokenizer.tokenize_offsets(text)

    async def embed(self, texts: Sequence[str], *, bulk: bool = False) -> np.ndarray:
        """L2-normalized float32 vectors, shape (len(texts), dims), in the order of ``texts``.

        ``bulk``: background work nobody waits on at the moment (ingestion, episode vectors, imports): never the
        latency lane, however few its texts. Without it an ingestion of three chunks took the lane like a query,
        and 100 clients' searches waited behind 256-token chunks (docs/DURABILITY.md, 100 clients)."""
        model = self.model
        if model is None or not self._started:
            raise errors.Unavailable("the embedding engine is not started")
        out = np.empty((len(texts), model.dims), dtype=np.float32)
        if not texts:
            return out
        self.calls += 1
        missing: dict[bytes, list[int]] = {}
        missing_text: dict[bytes, str] = {}
        for row, text in enumerate(texts):
            key = text_key(text)
            if key in missing:              # the same text twice in one call: computed once
                missing[key].append(row)
                continue
            vector = self._cache.get(model.model_id, key)
            if vector is not None:
                out[row] = vector
            else:
                missing[key] = [row]
                missing_text[key] = text
        if not missing:
            return out
        if self._alive == 0:
            raise errors.Unavailable("no embedding context is available (see the daemon log)")
        loop = asyncio.get_running_loop()
        keys = list(missing)
        call = _Call(loop=loop, future=loop.create_future(), rows=np.empty((len(keys), model.dims), np.float32),
                     remaining=len(keys))
        fast = not bulk and len(keys) <= SMALL_CALL_TEXTS
        items = [_Item(text=missing_text[key], call=call, index=index, fast=fast) for index, key in enumerate(keys)]
        self._pending_calls += 1
        try:
            self._queue.put_many(items, fast=fast)
            rows = await call.future
        except asyncio.CancelledError:
            call.fail(errors.Unavailable("cancelled"))   # marks the call done: workers skip its texts
            raise
        finally:
            self._pending_calls -= 1
        for index, key in enumerate(keys):
            vector = rows[index].copy()        # a copy: a cached row must not pin the whole call's array
            self._cache.put(model.model_id, key, vector)
            out[missing[key]] = vector
        return out

    # ---- the op -------------------------------------------------------------------------------------------

    def handlers(self) -> dict[str, Any]:
        return {"embed": self._op_embed}

    async def _op_embed(self, args: EmbedArgs, ctx: Any) -> EmbedResult:
        if len(args.texts) > self.config.max_texts_per_request:
            raise errors.InvalidArgument(
                f"{len(args.texts)} texts in one embed request; the limit is {self.config.max_texts_per_request} "
                "(embed.max_texts_per_request)", details={"limit": self.config.max_texts_per_request})
        vectors = await self.embed(args.texts)
        model = self.model
        assert model is not None
        if args.format == "f32":
            return EmbedResult(model_id=model.model_id, dims=model.dims, count=len(vectors),
                               data=vectors.astype("<f4", copy=False).tobytes())
        return EmbedResult(model_id=model.model_id, dims=model.dims, count=len(vectors), vectors=vectors.tolist())

    def stats(self) -> dict[str, Any]:
        model = self.model
        figures: dict[str, Any] = {
            "model": None if model is None else {
                "model_id": model.model_id, "path": model.path, "dims": model.dims, "max_tokens": model.max_tokens,
                "pooling": model.pooling, "quantization": model.quantization, "load_s": model.load_s,
            },
            "contexts": self.contexts,
            "contexts_alive": self._alive,
            "threads_per_context": self.threads_per_context,
            "lane": {"threads": self.lane_threads, "active": self._queue.lane, "batches": self.lane_batches,
                     "texts": self.lane_texts, "gate_waits": self._queue.gate_waits,
                     "calibration": self.lane_calibration, "resized": self.lane_resized,
                     "pool_poll": self.lane_pool_poll},
            "bulk_nice": self.bulk_nice,
            "openmp": self.openmp,
            "omp_wait_policy": self.omp_wait_policy,
            "batch_tokens": self._batch_tokens,
            "flash_attn": self.config.flash_attn,
            "extra_buffer_types": None if self._llama_model is None else self._llama_model.use_extra_bufts,
            "queue_depth": len(self._queue),
            "pending_calls": self._pending_calls,
            "calls": self.calls,
            "batches": self.batches,
            "texts": self.texts_embedded,
            "tokens": self.tokens_embedded,
            "mean_batch_texts": round(self.texts_embedded / self.batches, 2) if self.batches else 0.0,
            "failures": self.failures,
            "context_restarts": self.context_restarts,
            "cache": self._cache.stats(),
        }
        return figures

    # ---- worker threads ----------------------------------------------------------------------------------

    def _lanes(self, is_lane: bool) -> tuple[bool, bool]:
        if is_lane:
            return FAST
        return BULK if self._queue.lane else BOTH

    def _take_batch(self, is_lane: bool = False) -> list[_Item] | None:
        """Items for one pack: blocks for the first, then takes what is queued (bounded wait, bounded tokens)."""
        budget = self._batch_tokens
        batch: list[_Item] = []
        used = 0
        deadline: float | None = None
        while len(batch) < MAX_SEQUENCES_PER_BATCH:
            if not batch:
                if is_lane:
                    self._queue.lane_done()      # about to wait: the gate must not stay shut for skipped items
                # a bulk worker that waited for an item re-reads which lanes are its own (the lane may be gone)
                item = self._queue.get(timeout=None if is_lane else 0.5, lanes=self._lanes(is_lane))
                if item is None:
                    if self._queue.closed:
                        return None
                    continue
            else:
                item = self._queue.get(timeout=0, lanes=self._lanes(is_lane))
                if item is None:
                    # Queue dry: wait briefly only when other calls are pending (they may be about to queue).
                    calls_here = len({id(entry.call) for entry in batch})
                    if self._batch_wait_s <= 0 or used * 2 >= budget or self._pending_calls <= calls_here:
                        break
                    now = time.monotonic()
                    deadline = deadline or now + self._batch_wait_s
                    if now >= deadline:
                        break
                    item = self._queue.get(timeout=deadline - now, lanes=self._lanes(is_lane))
                    if item is None:
                        break
            if item.call.done:
                continue
            if item.ids is None:
                try:
                    item.ids = self._tokenizer.encode(item.text)
                except Exception as exc:  # e.g. a text the tokenizer rejects: fail that call only
                    item.call.fail(errors.InvalidArgument(f"cannot tokenize a text: {exc}"))
                    continue
            if used + len(item.ids) > budget:
                self._queue.put_back(item)
                break
            batch.append(item)
            used += len(item.ids)
        return batch

    def _work(self, context: Any, is_lane: bool = False) -> None:
        if not is_lane and self._queue.lane:
            # Bulk packs run at a lower CPU priority: a query's lane thread, the event loop and the index worker
            # then get a core at once instead of sharing it with a pack that is already running (the gate only
            # stops new packs), while an otherwise idle machine still gives the packs every cycle.
            self.bulk_nice = lower_this_thread(self.config.bulk_nice)
        while True:
            batch = self._take_batch(is_lane)
            if batch is None:
                break
            if not batch:
                if is_lane:
                    self._queue.lane_done()
                continue
            if not is_lane:
                # Hold back while the lane runs: its threads need the cores this pack would take.
                self._queue.wait_for_lane()
            else:
                self._fit_lane(context)
            sequences = [item.ids for item in batch]
            try:
                if self._before_encode is not None:
                    self._before_encode(sequences)
                if is_lane:
                    vectors = context.embed(sequences)
                else:
                    with self._busy_lock:
                        self._bulk_busy += 1
                    try:
                        vectors = context.embed(sequences)
                    finally:
                        with self._busy_lock:
                            self._bulk_busy -= 1
            except Exception as exc:
                self.failures += 1
                log.error("embedding context failed on a pack of %d texts: %r; recreating it", len(batch), exc)
                failure = errors.InternalError(f"embedding failed: {exc}")
                for item in batch:
                    item.call.fail(failure)
                context = self._recreate(context, is_lane)
                if context is None:
                    if is_lane:
                        self._queue.lane_gone()
                    return
                if is_lane:
                    self._queue.lane_done()
                continue
            if is_lane:
                self._queue.lane_done()
                self.lane_batches += 1
                self.lane_texts += len(batch)
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            np.maximum(norms, 1e-12, out=norms)
            vectors /= norms
            self.batches += 1
            self.texts_embedded += len(batch)
            self.tokens_embedded += sum(len(ids) for ids in sequences)
            for item, vector in zip(batch, vectors):
                item.call.deliver(item.index, vector)
        context.close()

    def _fit_lane(self, context: Any) -> None:
        """Give the lane the CPUs no bulk pack holds. A pack already running keeps its core until it ends (the
        gate only stops new ones), and ggml's threads spin at every barrier: a lane thread sharing a core with a
        running pack waits a scheduler time slice per barrier (a query's p99 during a 10 MB ingestion went from
        ~0.2 s to 0.5-0.6 s with a 2-thread lane; docs/PERFORMANCE_IMPROVEMENTS.md section 12)."""
        threads = max(1, self.lane_threads - self._bulk_busy)
        if threads != context.threads:
            context.set_threads(threads)
            self.lane_resized += 1

    def _recreate(self, context: Any, is_lane: bool = False) -> Any:
        try:
            context.close()
        except Exception:
            log.exception("closing a failed embedding context")
        try:
            fresh = self._new_context(self.lane_threads if is_lane else None, lane=is_lane)
            self.context_restarts += 1
            return fresh
        except Exception:
            log.exception("cannot recreate an embedding context; this worker stops")
            with self._alive_lock:
                self._alive -= 1
                last = self._alive == 0
            if last:
                for item in self._queue.close():
                    item.call.fail(errors.Unavailable("no embedding context is available"))
            return None

