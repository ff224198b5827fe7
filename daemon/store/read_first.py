"""``ReadFirstLock``: one holder at a time, queued reads served before queued writes, no write starved.

The vector index has one worker process and sends it one request at a time (``vectors.py``). Under 100 clients
with ingestion, a search's query waited behind the upserts and deletes queued before it (each tens of
milliseconds on a loaded machine) although nobody waits for those: a fake-model run of 8 clients already
showed queries waiting 64 ms for the worker on average to be served in 9. With this lock a query waits for the
request in progress and the other queries only. Writes keep their order among themselves (an upsert and a delete
of one id must not swap), and the oldest write goes next once it has waited ``write_max_wait_s``, so a stream of
queries cannot hold back the index forever. Reads that overtake a write were sent concurrently with it: no caller
was promised an order between them. Event-loop only (no thread safety). A leaf module.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class ReadFirstLock:
    def __init__(self, write_max_wait_s: float = 0.25):
        self.write_max_wait_s = write_max_wait_s
        self._held = False
        self._reads: deque[asyncio.Future[None]] = deque()
        self._writes: deque[tuple[float, asyncio.Future[None]]] = deque()
        self.overtaken = 0          # writes that a read went before (figures for status)

    def locked(self) -> bool:
        return self._held

    @asynccontextmanager
    async def hold(self, read: bool = False) -> AsyncIterator[None]:
        await self._acquire(read)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, read: bool) -> None:
        if not self._held and not self._reads and not self._writes:
            self._held = True
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if read:
            self._reads.append(waiter)
        else:
            self._writes.append((time.monotonic(), waiter))
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()            # handed the lock while being cancelled: pass it on
            else:
                self._discard(waiter)
            raise

    def _discard(self, waiter: asyncio.Future[None]) -> None:
        if waiter in self._reads:
            self._reads.remove(waiter)
        self._writes = deque(item for item in self._writes if item[1] is not waiter)

    def _next(self) -> asyncio.Future[None] | None:
        if self._writes and (not self._reads or time.monotonic() - self._writes[0][0] >= self.write_max_wait_s):
            return self._writes.popleft()[1]
        if self._reads:
            if self._writes:
                self.overtaken += 1
            return self._reads.popleft()
        return None

    def _release(self) -> None:
        while True:
            waiter = self._next()
            if waiter is None:
                self._held = False
                return
            if not waiter.done():          # a cancelled waiter is skipped
                waiter.set_result(None)    # the lock stays held: it passes to this waiter
                return
