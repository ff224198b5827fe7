"""The vector index's worker process: killed mid-upsert, stuck past its timeout, over its RSS limit.

Each test runs a real ``VectorIndex`` with its real worker (a separate Python process holding Chroma) on a
real Chroma directory; the daemon's event loop is the test's own loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import signal
import time

import numpy as np
import pytest

from pirag.client.errors import Unavailable
from pirag.daemon.store.vectors import VectorIndex, collection_name
from tests.documents.helpers import make_config

DIMS = 384


def unit_vectors(n: int, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, DIMS)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def run(scenario):
    return asyncio.run(scenario())


@contextlib.asynccontextmanager
async def running(config):
    """A started ``VectorIndex`` (its worker process up), closed at the end."""
    index = VectorIndex(config)
    await index.start()
    try:
        yield index
    finally:
        await index.close()


def test_chroma_is_not_loaded_in_the_daemon_process(tmp_path):
    if "chromadb" in sys.modules:
        # an earlier test of this pytest process imported chromadb itself (the crash scenario reads the index
        # directly): run this test alone, in a fresh interpreter, where only the VectorIndex could load it
        done = subprocess.run([sys.executable, "-m", "pytest", "-q",
                               f"{__file__}::test_chroma_is_not_loaded_in_the_daemon_process"],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
        return

    async def scenario():
        async with running(make_config(tmp_path)) as index:
            await index.upsert("c-docs", ["a"], unit_vectors(1))
            assert index.worker_pid not in (None, os.getpid())
            with open(f"/proc/{os.getpid()}/maps") as maps:
                assert "chromadb_rust_bindings" not in maps.read()
            with open(f"/proc/{index.worker_pid}/maps") as maps:
                assert "chromadb_rust_bindings" in maps.read()

    run(scenario)


def test_worker_killed_mid_upsert_is_restarted_and_searches_stay_right(tmp_path):
    async def scenario():
        async with running(make_config(tmp_path)) as index:
            name = collection_name("kill", "docs")
            vectors = unit_vectors(12_000)
            ids = [f"v{i}" for i in range(len(vectors))]
            await index.upsert(name, ids[:100], vectors[:100])
            first_pid = index.worker_pid
            upsert = asyncio.ensure_future(index.upsert(name, ids, vectors))
            await asyncio.sleep(0.5)          # Chroma is inside the upsert (12k vectors take seconds)
            assert not upsert.done()
            os.kill(first_pid, signal.SIGKILL)
            await upsert                      # retried once on the new worker: the caller sees no error
            assert index.worker_pid != first_pid
            assert index.stats()["worker"]["restarts"] == 1
            assert "died during upsert" in index.stats()["worker"]["last_error"]
            assert await index.count(name) == len(ids)
            for probe in (0, 4321, 11_999):
                hits = await index.query(name, vectors[probe], 3)
                assert hits[0][0] == ids[probe] and hits[0][1] < 1e-4

    run(scenario)


def test_a_stuck_worker_is_killed_at_its_timeout_and_the_loop_never_stalls(tmp_path):
    config = make_config(tmp_path, store={"vectors_timeout_s": 1.0})

    async def scenario():
        async with running(config) as index:
            name = collection_name("stuck", "docs")
            vectors = unit_vectors(50)
            await index.upsert(name, [str(i) for i in range(50)], vectors)
            stuck_pid = index.worker_pid
            lags: list[float] = []

            async def ticker():
                while True:
                    expected = time.perf_counter() + 0.01
                    await asyncio.sleep(0.01)
                    lags.append(time.perf_counter() - expected)

            ticking = asyncio.ensure_future(ticker())
            started = time.perf_counter()
            with pytest.raises(Unavailable, match="stuck"):
                await index._stall_worker(60)   # behaves like the upsert that never returned on a full disk
            elapsed = time.perf_counter() - started
            ticking.cancel()
            assert 1.0 <= elapsed < 10, elapsed
            assert max(lags) < 0.5, max(lags)   # the loop kept running while the worker hung
            assert index.worker_pid != stuck_pid
            with pytest.raises(ProcessLookupError):
                os.kill(stuck_pid, 0)
            worker = index.stats()["worker"]
            assert worker["timeouts"] == 1 and worker["restarts"] == 1 and worker["alive"]
            hits = await index.query(name, vectors[7], 1)
            assert hits[0][0] == "7"

    run(scenario)


def test_after_an_unplanned_restart_known_collections_are_checked_against_sqlite(tmp_path):
    async def scenario():
        async with running(make_config(tmp_path)) as index:
            name = collection_name("recheck", "docs")
            vectors = unit_vectors(40)
            ids = [str(i) for i in range(40)]

            async def load():   # what SQLite holds: 40 vectors
                for start in range(0, 40, 16):
                    yield ids[start:start + 16], vectors[start:start + 16], None

            assert await index.ensure(name, 40, load) == "rebuilt"
            # the index gets ahead of SQLite (as a half-done write would leave it), then the worker dies
            await index.upsert(name, ["ghost"], unit_vectors(1, seed=9))
            os.kill(index.worker_pid, signal.SIGKILL)
            await asyncio.sleep(0.2)
            assert await index.count(name) in (40, 41)   # restarted on this request
            await asyncio.wait_for(index._recovery, 60)
            assert await index.count(name) == 40
            assert index.rebuilds == 2

    run(scenario)


def test_worker_over_its_rss_limit_is_replaced_between_requests(tmp_path):
    config = make_config(tmp_path, store={"vectors_worker_max_rss_mb": 1})

    async def scenario():
        async with running(config) as index:
            name = collection_name("rss", "docs")
            vectors = unit_vectors(30)
            first = index.worker_pid
            await index.upsert(name, [str(i) for i in range(30)], vectors)
            assert index.stats()["worker"]["rss_restarts"] >= 1
            assert index.worker_pid != first
            assert index.stats()["worker"]["restarts"] == 0   # a planned replacement, not a crash
            assert (await index.query(name, vectors[3], 1))[0][0] == "3"

    run(scenario)


def test_healthy_hnsw_files_pass_the_check_at_every_size(tmp_path):
    """The file check must never call a healthy index damaged (that would rebuild it at every start)."""
    from pirag.daemon.store.vector_worker import hnsw_problems

    async def scenario():
        async with running(make_config(tmp_path)) as index:
            name = collection_name("sizes", "docs")
            written = 0
            for size in (1, 20, 200, 1200, 2600):
                vectors = unit_vectors(size - written, seed=size)
                await index.upsert(name, [str(i) for i in range(written, size)], vectors)
                written = size
                await index.query(name, vectors[0], 1)
                assert await index._call("check", {"name": name}) == [], size
        segments = [path for path in (tmp_path / "chroma").iterdir() if path.is_dir()]
        assert segments and all(hnsw_problems(path) == [] for path in segments)
        data = max(segments, key=lambda path: (path / "link_lists.bin").stat().st_size)
        links = (data / "link_lists.bin").read_bytes()
        assert links
        for cut in range(0, len(links), 4):   # at every entry boundary too, not only mid-entry
            (data / "link_lists.bin").write_bytes(links[:cut])
            assert hnsw_problems(data), cut
        (data / "link_lists.bin").write_bytes(links)
        assert hnsw_problems(data) == []
        with open(data / "data_level0.bin", "r+b") as handle:
            handle.truncate(1000)
        assert hnsw_problems(data)

    run(scenario)


def test_the_worker_gives_freed_memory_back_between_requests(tmp_path):
    """The worker calls malloc_trim(0) between two requests once server.malloc_trim_interval_s has passed
    (a compaction frees a whole collection inside Chroma); the count comes back with the worker's info."""
    from pirag.daemon import memtrim

    if not memtrim.available:
        pytest.skip("this C library has no malloc_trim")
    config = make_config(tmp_path, server={"malloc_trim_interval_s": 0.2})

    async def scenario():
        async with running(config) as index:
            for round_number in range(4):
                name = f"c{round_number}-docs"
                await index.upsert(name, [str(i) for i in range(500)], unit_vectors(500, seed=round_number))
                await asyncio.sleep(0.25)
                await index.delete(name, [str(i) for i in range(250)])
            await index.refresh_worker_info()
            assert index.stats()["worker_malloc_trims"] >= 2, index.stats()

    run(scenario)

    async def disabled():
        async with running(make_config(tmp_path / "off", server={"malloc_trim_interval_s": 0.0})) as index:
            await index.upsert("c-docs", ["a"], unit_vectors(1))
            await asyncio.sleep(0.25)
            await index.delete("c-docs", ["a"])
            await index.refresh_worker_info()
            assert index.stats()["worker_malloc_trims"] == 0

    run(disabled)
