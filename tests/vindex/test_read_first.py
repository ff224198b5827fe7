"""The vector index's request lock: queued reads before queued writes, writes in order, none starved, and a
cancelled waiter never keeps the lock (plumbing: no worker)."""

from __future__ import annotations

import asyncio

from pirag.daemon.store.read_first import ReadFirstLock


async def _holder(lock: ReadFirstLock, name: str, read: bool, order: list[str], seconds: float = 0.0) -> None:
    async with lock.hold(read=read):
        order.append(name)
        await asyncio.sleep(seconds)


def test_queued_reads_overtake_queued_writes_and_writes_keep_their_order() -> None:
    async def scenario() -> list[str]:
        lock, order = ReadFirstLock(write_max_wait_s=10.0), []
        first = asyncio.create_task(_holder(lock, "upsert-0", False, order, 0.05))
        await asyncio.sleep(0.01)
        tasks = [asyncio.create_task(_holder(lock, name, name.startswith("query"), order))
                 for name in ("upsert-1", "delete-2", "query-a", "query-b")]
        await asyncio.gather(first, *tasks)
        assert not lock.locked() and lock.overtaken == 2
        return order

    assert asyncio.run(scenario()) == ["upsert-0", "query-a", "query-b", "upsert-1", "delete-2"]


def test_a_write_that_waited_too_long_goes_before_more_reads() -> None:
    async def scenario() -> list[str]:
        lock, order = ReadFirstLock(write_max_wait_s=0.05), []
        first = asyncio.create_task(_holder(lock, "query-0", True, order, 0.1))
        await asyncio.sleep(0.01)
        write = asyncio.create_task(_holder(lock, "upsert", False, order))
        reads = [asyncio.create_task(_holder(lock, f"query-{n}", True, order)) for n in (1, 2)]
        await asyncio.gather(first, write, *reads)
        return order

    assert asyncio.run(scenario()) == ["query-0", "upsert", "query-1", "query-2"]


def test_a_cancelled_waiter_neither_runs_nor_keeps_the_lock() -> None:
    async def scenario() -> list[str]:
        lock, order = ReadFirstLock(), []
        first = asyncio.create_task(_holder(lock, "upsert-0", False, order, 0.05))
        await asyncio.sleep(0.01)
        doomed = asyncio.create_task(_holder(lock, "query-x", True, order))
        later = asyncio.create_task(_holder(lock, "upsert-1", False, order))
        await asyncio.sleep(0.01)
        doomed.cancel()
        await asyncio.gather(first, later)
        assert doomed.cancelled() and not lock.locked()
        return order

    assert asyncio.run(scenario()) == ["upsert-0", "upsert-1"]
