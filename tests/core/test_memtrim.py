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
