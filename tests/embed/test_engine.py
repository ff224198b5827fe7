"""The engine's pool, micro-batching, cache and failure handling, in-process with the real model (q8_0)."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from pirag.client import errors
from pirag.client.protocol.embed import EmbedArgs
from pirag.daemon.config import Config, EmbedConfig
from pirag.daemon.embed import FakeEmbedder, build_embedder
from pirag.daemon.embed.engine import EmbedEngine, lane_threads, pool_shape

from .texts import docstring_texts


async def _started(path, **config) -> EmbedEngine:  # noqa: ANN001
    # One context and no latency lane unless a test asks: the failure-path tests count contexts and restarts.
    config.setdefault("contexts", 1)
    config.setdefault("lane", False)
    engine = EmbedEngine(EmbedConfig(model=str(path), **config))
    await engine.start()
    return engine


def test_concurrent_calls_match_sequential_results_and_share_batches(gguf_models) -> None:  # noqa: ANN001
    texts = docstring_texts(24)

    async def scenario() -> None:
        engine = await _started(gguf_models["q8_0"], contexts=2, threads_per_context=1, cache_entries=0)
        try:
            sequential = np.stack([(await engine.embed([text]))[0] for text in texts])
            batches_before = engine.batches
            loop_ticks = 0
            stop = asyncio.Event()

            async def ticker() -> None:   # the loop keeps running while the contexts work
                nonlocal loop_ticks
                while not stop.is_set():
                    loop_ticks += 1
                    await asyncio.sleep(0.001)

            tick = asyncio.create_task(ticker())
            results = await asyncio.gather(*[engine.embed([text]) for text in texts],
                                           engine.embed(texts[::-1]))
            stop.set()
            await tick
            concurrent = np.concatenate(results[:-1])
            # q8_0 kernels differ slightly between one row and a pack (cosine 0.9998 seen), rows must not mix up.
            assert ((concurrent * sequential).sum(axis=1) > 0.999).all()
            assert ((results[-1][::-1] * sequential).sum(axis=1) > 0.999).all()
            assert engine.batches - batches_before < 2 * len(texts)    # packs, not one call per text
            assert loop_ticks > 3
            stats = engine.stats()
            assert stats["contexts"] == 2 and stats["contexts_alive"] == 2 and stats["queue_depth"] == 0
            assert {worker.name for worker in engine._workers} == {"pirag-embed-0", "pirag-embed-1"}
        finally:
            await engine.close()

    asyncio.run(scenario())


def test_cache_hits_misses_and_lru_eviction(gguf_models) -> None:  # noqa: ANN001
    texts = docstring_texts(5)

    async def scenario() -> None:
        engine = await _started(gguf_models["q8_0"], cache_entries=3)
        try:
            first = await engine.embed(texts[:3])
            cache = engine.stats()["cache"]
            assert {key: cache[key] for key in ("entries", "capacity", "hits", "misses")} == \
                {"entries": 3, "capacity": 3, "hits": 0, "misses": 3}
            assert 0 < cache["bytes"] <= cache["max_bytes"] and cache["evicted"] == 0
            batches = engine.batches
            again = await engine.embed(texts[:3])
            assert engine.batches == batches and np.array_equal(first, again)   # served from the cache
            assert engine.stats()["cache"]["hits"] == 3
            await engine.embed(texts[3:5])          # evicts the two least recently used
            await engine.embed([texts[2]])
            cache = engine.stats()["cache"]
            assert cache["entries"] == 3 and cache["hits"] == 4
            await engine.embed([texts[0]])          # evicted: computed again
            assert engine.stats()["cache"]["misses"] == 6
            duplicates = await engine.embed([texts[4], texts[4], "fresh text from nowhere", texts[4]])
            assert np.array_equal(duplicates[0], duplicates[1]) and np.array_equal(duplicates[0], duplicates[3])
        finally:
            await engine.close()

    asyncio.run(scenario())


def test_a_failing_context_reaches_the_caller_and_is_recreated(gguf_models) -> None:  # noqa: ANN001
    async def scenario() -> None:
        engine = await _started(gguf_models["q8_0"], cache_entries=0)
        try:
            calls = 0

            def explode_once(sequences: list[list[int]]) -> None:
                nonlocal calls
                calls += 1
                if calls == 1:
                    raise RuntimeError("simulated llama.cpp failure")

            engine._before_encode = explode_once
            with pytest.raises(errors.InternalError, match="simulated llama.cpp failure"):
                await asyncio.wait_for(engine.embed(["this call fails"]), timeout=30)
            vectors = await asyncio.wait_for(engine.embed(["this one works"]), timeout=30)
            assert vectors.shape == (1, 384)
            stats = engine.stats()
            assert stats["failures"] == 1 and stats["context_restarts"] == 1 and stats["contexts_alive"] == 1
        finally:
            await engine.close()

    asyncio.run(scenario())


def test_when_no_context_can_be_made_calls_fail_instead_of_hanging(gguf_models) -> None:  # noqa: ANN001
    async def scenario() -> None:
        engine = await _started(gguf_models["q8_0"], cache_entries=0)
        try:
            def broken(sequences: list[list[int]]) -> None:
                raise RuntimeError("context lost")

            engine._before_encode = broken
            engine._new_context = lambda: (_ for _ in ()).throw(RuntimeError("cannot create"))
            with pytest.raises(errors.InternalError):
                await asyncio.wait_for(engine.embed(["first"]), timeout=30)
            for _ in range(100):
                if engine.stats()["contexts_alive"] == 0:
                    break
                await asyncio.sleep(0.01)
            with pytest.raises(errors.Unavailable):
                await asyncio.wait_for(engine.embed(["second"]), timeout=30)
        finally:
            await engine.close()

    asyncio.run(scenario())


def test_close_fails_queued_calls_and_cancellation_is_harmless(gguf_models) -> None:  # noqa: ANN001
    async def scenario() -> None:
        engine = await _started(gguf_models["q8_0"], cache_entries=0)
        gate = threading.Event()
        engine._before_encode = lambda sequences: gate.wait(10)
        running = asyncio.create_task(engine.embed(["held in the context"]))
        await asyncio.sleep(0.05)
        queued = asyncio.create_task(engine.embed(["waits in the queue"]))
        cancelled = asyncio.create_task(engine.embed(["cancelled while queued"]))
        await asyncio.sleep(0.05)
        cancelled.cancel()
        closing = asyncio.create_task(engine.close())
        await asyncio.sleep(0.05)
        gate.set()
        await asyncio.wait_for(closing, timeout=30)
        assert (await running).shape == (1, 384)
        with pytest.raises(errors.Unavailable):
            await queued
        with pytest.raises(asyncio.CancelledError):
            await cancelled

    asyncio.run(scenario())


def test_embed_op_formats_and_limits(gguf_models) -> None:  # noqa: ANN001
    async def scenario() -> None:
        engine = await _started(gguf_models["q8_0"], max_texts_per_request=3)
        try:
            handler = engine.handlers()["embed"]
            floats = await handler(EmbedArgs(texts=["alpha", "beta"]), None)
            packed = await handler(EmbedArgs(texts=["alpha", "beta"], format="f32"), None)
            assert floats.count == packed.count == 2 and floats.dims == 384
            assert floats.model_id == engine.model.model_id and floats.model_id.startswith("minilm.q8_0-")
            assert np.allclose(np.array(floats.vectors), np.array(packed.rows()))
            empty = await handler(EmbedArgs(texts=[]), None)
            assert empty.count == 0 and empty.vectors == []
            with pytest.raises(errors.InvalidArgument, match="max_texts_per_request"):
                await handler(EmbedArgs(texts=["a", "b", "c", "d"]), None)
        finally:
            await engine.close()

    asyncio.run(scenario())


def test_single_query_does_not_wait_for_a_batch(gguf_models) -> None:  # noqa: ANN001
    async def scenario() -> None:
        engine = await _started(gguf_models["q8_0"], batch_wait_ms=500, cache_entries=0)
        try:
            started = time.perf_counter()
            await engine.embed(["a lone query"])
            assert time.perf_counter() - started < 0.4      # the 500 ms batch wait does not apply to it
        finally:
            await engine.close()

    asyncio.run(scenario())


def test_pool_shape_defaults_and_fake_selection() -> None:
    assert pool_shape(EmbedConfig(), cpus=2) == (2, 1)
    assert pool_shape(EmbedConfig(), cpus=4) == (4, 1)
    assert pool_shape(EmbedConfig(threads_per_context=2), cpus=4) == (2, 2)
    assert pool_shape(EmbedConfig(contexts=3), cpus=4) == (3, 1)
    assert pool_shape(EmbedConfig(contexts=1, threads_per_context=3), cpus=8) == (1, 3)
    fake = build_embedder(Config(embed=EmbedConfig(model="fake")))
    assert isinstance(fake, FakeEmbedder) and fake.name == "embed"
    real = build_embedder(Config(embed=EmbedConfig(model="/nonexistent.gguf")), "/tmp")
    assert isinstance(real, EmbedEngine) and real.model is None
    with pytest.raises(FileNotFoundError):
        asyncio.run(real.start())


def test_latency_lane_takes_small_calls_and_bulk_waits_for_it_boundedly(gguf_models) -> None:  # noqa: ANN001
    texts = docstring_texts(12)

    async def scenario() -> None:
        engine = await _started(gguf_models["q8_0"], lane=True, lane_threads=2, cache_entries=0)
        try:
            assert {worker.name for worker in engine._workers} == {"pirag-embed-0", "pirag-embed-lane"}
            bulk = await engine.embed(texts)                        # 12 texts: the bulk context, not the lane
            assert engine.stats()["lane"]["texts"] == 0
            lone = np.concatenate([await engine.embed([text]) for text in texts[:3]])
            lane = engine.stats()["lane"]
            assert lane["threads"] == 2 and lane["active"] and lane["texts"] == 3
            assert lane["pool_poll"] == 0                            # its own ggml thread pool (threadpool.py)
            assert ((lone * bulk[:3]).sum(axis=1) > 0.999).all()   # same vectors whichever context made them

            # Hold the lane inside its encode: a bulk call waits at the gate, then runs anyway (bounded).
            held, release = threading.Event(), threading.Event()

            def hold_lane(sequences: list[list[int]]) -> None:
                if threading.current_thread().name == "pirag-embed-lane":
                    held.set()
                    release.wait(10)

            engine._before_encode = hold_lane
            query = asyncio.create_task(engine.embed(["a query held in the lane"]))
            assert await asyncio.to_thread(held.wait, 10)
            waits = engine.stats()["lane"]["gate_waits"]
            started = time.perf_counter()
            await asyncio.wait_for(engine.embed(docstring_texts(26)[20:]), timeout=30)
            assert engine.stats()["lane"]["gate_waits"] > waits
            assert not query.done() and time.perf_counter() - started >= 0.04   # it did wait for the lane
            release.set()
            assert (await asyncio.wait_for(query, timeout=30)).shape == (1, 384)
        finally:
            await engine.close()

    asyncio.run(scenario())


def test_the_lane_pool_computes_what_ggml_own_threads_compute(gguf_models) -> None:  # noqa: ANN001
    """A persistent ggml thread pool (embed.lane_pool) changes who runs the graph, not what it gives; a polling
    pool works too, and a lane without one says so."""
    texts = docstring_texts(6)

    async def vectors_of(**config) -> tuple[np.ndarray, object]:  # noqa: ANN003
        engine = await _started(gguf_models["q8_0"], lane=True, lane_threads=2, cache_entries=0, **config)
        try:
            rows = np.concatenate([await engine.embed([text]) for text in texts])
            assert engine.stats()["lane"]["texts"] == len(texts)
            return rows, engine.stats()["lane"]["pool_poll"]
        finally:
            await engine.close()

    async def scenario() -> None:
        plain, none = await vectors_of(lane_pool=False)
        pooled, poll = await vectors_of(lane_pool=True, lane_poll=0)
        polling, level = await vectors_of(lane_pool=True, lane_poll=30)
        assert (none, poll, level) == (None, 0, 30)
        assert ((plain * pooled).sum(axis=1) > 0.9999).all() and ((plain * polling).sum(axis=1) > 0.9999).all()

    asyncio.run(scenario())


def test_a_small_bulk_call_never_takes_the_latency_lane(gguf_models) -> None:  # noqa: ANN001
    """Ingestion of a three-chunk note is background work: it must leave the lane to the queries."""
    texts = docstring_texts(3)

    async def scenario() -> None:
        engine = await _started(gguf_models["q8_0"], lane=True, lane_threads=2, cache_entries=0)
        try:
            names: list[str] = []
            engine._before_encode = lambda sequences: names.append(threading.current_thread().name)
            bulk = await engine.embed(texts, bulk=True)
            assert engine.stats()["lane"]["texts"] == 0 and names and set(names) == {"pirag-embed-0"}
            lone = await engine.embed(texts)                        # the same three, interactive: the lane
            assert engine.stats()["lane"]["texts"] == 3 and names[-1] == "pirag-embed-lane"
            assert ((lone * bulk).sum(axis=1) > 0.999).all()
        finally:
            await engine.close()

    asyncio.run(scenario())


def test_bulk_contexts_run_at_a_lower_priority_than_the_lane(gguf_models) -> None:  # noqa: ANN001
    """A running bulk pack must yield its core to a query: the bulk threads' nice value is raised, the lane's
    and the daemon's are not; without a lane (the bulk threads embed the queries too) nothing is lowered."""
    import os

    base = os.getpriority(os.PRIO_PROCESS, 0)

    async def scenario(lane: bool, bulk_nice: int) -> dict[str, int]:
        engine = await _started(gguf_models["q8_0"], lane=lane, lane_threads=1, cache_entries=0,
                                bulk_nice=bulk_nice)
        try:
            seen: dict[str, int] = {}

            def record(sequences: list[list[int]]) -> None:   # each worker thread reports its own nice value
                seen[threading.current_thread().name] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

            engine._before_encode = record
            await engine.embed(docstring_texts(6), bulk=True)
            await engine.embed(["a lone query"])
            assert engine.stats()["bulk_nice"] == (min(19, base + bulk_nice) if lane and bulk_nice else 0)
            return seen
        finally:
            await engine.close()

    with_lane = asyncio.run(scenario(True, 10))
    assert with_lane == {"pirag-embed-0": min(19, base + 10), "pirag-embed-lane": base}
    assert asyncio.run(scenario(False, 10)) == {"pirag-embed-0": base}
    assert asyncio.run(scenario(True, 0))["pirag-embed-0"] == base
    assert os.getpriority(os.PRIO_PROCESS, 0) == base    # the calling thread (the daemon's loop) is untouched


def test_a_lost_lane_hands_small_calls_to_the_bulk_contexts(gguf_models) -> None:  # noqa: ANN001
    async def scenario() -> None:
        engine = await _started(gguf_models["q8_0"], lane=True, lane_threads=2, cache_entries=0)
        try:
            make_context = engine._new_context

            def lane_fails(sequences: list[list[int]]) -> None:
                if threading.current_thread().name == "pirag-embed-lane":
                    raise RuntimeError("lane context lost")

            def no_lane_context(threads: int | None = None) -> object:
                if threads == engine.lane_threads:
                    raise RuntimeError("cannot create the lane context")
                return make_context(threads)

            engine._before_encode = lane_fails
            engine._new_context = no_lane_context
            with pytest.raises(errors.InternalError, match="lane context lost"):
                await asyncio.wait_for(engine.embed(["fails in the lane"]), timeout=30)
            for _ in range(200):
                if not engine.stats()["lane"]["active"]:
                    break
                await asyncio.sleep(0.01)
            assert not engine.stats()["lane"]["active"] and engine.stats()["contexts_alive"] == 1
            vectors = await asyncio.wait_for(engine.embed(["served by the bulk context"]), timeout=30)
            assert vectors.shape == (1, 384)
        finally:
            await engine.close()

    asyncio.run(scenario())


def test_lane_threads_follow_the_affinity_unless_configured() -> None:
    assert lane_threads(EmbedConfig(), cpus=4) == 4
    assert lane_threads(EmbedConfig(lane_threads=2), cpus=4) == 2
    assert lane_threads(EmbedConfig(lane=False), cpus=4) == 0


def test_an_automatic_lane_measures_its_thread_count_and_keeps_the_faster(gguf_models, monkeypatch) -> None:  # noqa: ANN001
    import pirag.daemon.embed.engine as engine_module

    monkeypatch.setattr(engine_module, "available_cpus", lambda: 2)

    async def scenario() -> None:
        engine = await _started(gguf_models["q8_0"], lane=True, cache_entries=0)
        try:
            calibration = engine.stats()["lane"]["calibration"]
            timings = calibration["ms_by_threads"]
            assert set(timings) == {"1", "2"} and all(ms > 0 for ms in timings.values())
            assert calibration["chosen"] == engine.lane_threads == min((1, 2), key=lambda t: timings[str(t)])
            text = "a query for the calibrated lane"
            lane_vector = (await engine.embed([text]))[0]          # one text: the lane
            assert engine.stats()["lane"]["texts"] == 1
            bulk_vector = (await engine.embed([text] + [f"filler {i}" for i in range(11)]))[0]   # the bulk context
            assert float(lane_vector @ bulk_vector) > 0.999    # packs round differently, not by threads
        finally:
            await engine.close()

    asyncio.run(scenario())


def test_a_configured_lane_is_not_measured(gguf_models) -> None:  # noqa: ANN001
    async def scenario() -> None:
        engine = await _started(gguf_models["q8_0"], lane=True, lane_threads=2, cache_entries=0)
        try:
            assert engine.stats()["lane"]["calibration"] is None and engine.lane_threads == 2
        finally:
            await engine.close()

    asyncio.run(scenario())


def test_the_lane_takes_only_the_cpus_bulk_packs_leave() -> None:
    class Context:
        threads = 4

        def set_threads(self, threads: int) -> None:
            self.threads = threads

    engine = EmbedEngine(EmbedConfig(lane=True, lane_threads=4))
    context = Context()
    for busy, expected in ((0, 4), (1, 3), (3, 1), (5, 1), (0, 4)):
        engine._bulk_busy = busy
        engine._fit_lane(context)
        assert context.threads == expected
    assert engine.lane_resized == 3        # 4->3, 3->1, 1->4: no call when the count is already right
