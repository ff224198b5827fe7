"""Freed heap memory goes back to the kernel: ``malloc_trim`` really releases it, and the daemon calls it."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from pirag.daemon import memtrim
from pirag.daemon.metrics import rss_bytes

from ..conftest import wait_until

pytestmark = pytest.mark.skipif(not memtrim.available, reason="not glibc: no malloc_trim")


def test_trim_returns_memory_freed_by_other_threads() -> None:
    def churn() -> None:
        # many small blocks from a thread of its own (its own malloc arena), then freed: glibc keeps them
        blocks = [bytearray(2000) for _ in range(60_000)]
        del blocks

    threads = [threading.Thread(target=churn) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    before = rss_bytes()
    memtrim.trim()
    after = rss_bytes()
    assert before - after > 20 << 20, f"trim released only {(before - after) / 1e6:.1f} MB"


def test_daemon_trims_periodically(daemon_factory: Any) -> None:
    handle = daemon_factory("trim", {"embed": {"model": "fake"}, "server": {"malloc_trim_interval_s": 0.3}})
    with handle.client() as client:
        wait_until(lambda: client.status().components["memtrim"]["trims"] >= 3, timeout=20)
