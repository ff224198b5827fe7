"""Freed heap memory goes back to the kernel: ``malloc_trim`` really releases it, and the daemon calls it."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from pirag.daemon import memtrim

from ..conftest import wait_until

pytestmark = pytest.mark.skipif(not memtrim.available, reason="not glibc: no malloc_trim")

CHURN = """
import threading
from pirag.daemon import memtrim
from pirag.daemon.metrics import rss_bytes


kept = []


def churn():
    # many small blocks from a thread of its own (its own malloc arena), most of them then freed; the few
    # kept (one in 64, like a cache entry or a connection outliving a request) pin the arena's top, so glibc
    # cannot shrink it and keeps the free pages in between until malloc_trim gives them back
    blocks = [bytearray(2000) for _ in range(60_000)]
    kept.extend(blocks[::64])
    del blocks


threads = [threading.Thread(target=churn) for _ in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
before = rss_bytes()
memtrim.trim()
print(before - rss_bytes())
"""


def test_trim_returns_memory_freed_by_other_threads() -> None:
    # a fresh process: the heap of a long test session (arenas already grown and trimmed) would blur it
    released = int(subprocess.run([sys.executable, "-c", CHURN], capture_output=True, text=True, check=True,
                                  timeout=120).stdout.strip())
    assert released > 20 << 20, f"trim released only {released / 1e6:.1f} MB"


def test_daemon_trims_periodically(daemon_factory: Any) -> None:
    handle = daemon_factory("trim", {"embed": {"model": "fake"}, "server": {"malloc_trim_interval_s": 0.3}})
    with handle.client() as client:
        wait_until(lambda: client.status().components["memtrim"]["trims"] >= 3, timeout=20)


ARENAS = """
import sys
import threading
from pirag.daemon import memtrim

memtrim.limit_arenas(int(sys.argv[1]))
together = threading.Barrier(8)


def allocate():
    together.wait()   # all 8 allocate at once: glibc gives a contended thread an arena of its own
    blocks = [bytearray(100) for _ in range(20_000)]
    together.wait()
    del blocks


threads = [threading.Thread(target=allocate) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(memtrim.arena_count())
"""


def arenas_with_limit(limit: int) -> int:
    return int(subprocess.run([sys.executable, "-c", ARENAS, str(limit)], capture_output=True, text=True,
                              check=True, timeout=120).stdout.strip())


def test_arena_limit_caps_the_arenas_of_concurrent_threads() -> None:
    assert arenas_with_limit(0) > 2        # glibc's default: contended threads get arenas of their own
    assert arenas_with_limit(2) <= 2


def test_daemon_runs_with_its_arena_limit(daemon_factory: Any) -> None:
    handle = daemon_factory("arenas", {"embed": {"model": "fake"}})
    with handle.client() as client:
        for number in range(20):   # requests on several threads (readers, writer, embedding)
            client.remember(f"arena fact {number}", project="arenas")
            client.recall(f"arena {number}", project="arenas")
        figures = client.status().components["memtrim"]
    assert figures["arena_max"] == 2
    assert 1 <= figures["arenas"] <= 2, figures
