"""The embedding engine's work queue: pending calls, the items of their texts, and the two lanes workers take from.

``_WorkQueue`` holds the latency lane's items and the bulk items, and the gate that holds bulk packs back while
the lane has work; ``_Call`` collects one ``embed`` call's rows from worker threads and resolves its future on
the event loop. ``engine.py`` owns the workers and the contexts; this module only hands work between threads.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

LANE_GATE_MAX_S = 0.05        # longest a bulk worker holds back a pack for the latency lane


@dataclass
class _Call:
    """One ``embed`` call's pending rows; completed from worker threads, resolved on the loop."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[np.ndarray]
    rows: np.ndarray                     # (n_unique_missing, dims)
    remaining: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: bool = False

    def deliver(self, index: int, vector: np.ndarray) -> None:
        with self.lock:
            if self.done:
                return
            self.rows[index] = vector
            self.remaining -= 1
            if self.remaining:
                return
            self.done = True
        self.loop.call_soon_threadsafe(_resolve, self.future, self.rows)

    def fail(self, error: BaseException) -> None:
        with self.lock:
            if self.done:
                return
            self.done = True
        self.loop.call_soon_threadsafe(_reject, self.future, error)


def _resolve(future: asyncio.Future[np.ndarray], rows: np.ndarray) -> None:
    if not future.done():
        future.set_result(rows)


def _reject(future: asyncio.Future[np.ndarray], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


@dataclass
class _Item:
    text: str
    call: _Call
    index: int
    fast: bool = False
    ids: list[int] | None = None


FAST, BULK, BOTH = (True, False), (False, True), (True, True)     # which lanes a worker takes from


class _WorkQueue:
    """Two FIFO lanes shared by the worker threads, and the latency lane's gate.

    ``put`` only takes a lock for microseconds (loop-safe). The gate is closed from the moment a small call is
    queued for the latency lane until the lane has nothing left; bulk workers wait on it before each pack.

    The lane and the bulk workers wait on two conditions of one lock: a query wakes the lane alone. Waking every
    worker for it (one condition, ``notify_all``) had the bulk threads wake, find nothing and queue for the GIL
    at the moment the lane needed it: a 5-7 ms query embedding took 15-40 ms one time in four."""

    def __init__(self) -> None:
        self._fast: deque[_Item] = deque()
        self._bulk: deque[_Item] = deque()
        lock = threading.Lock()
        self._cond = threading.Condition(lock)          # bulk workers (every worker while there is no lane)
        self._lane_cond = threading.Condition(lock)     # the latency lane
        self._lane_idle = threading.Event()
        self._lane_idle.set()
        self.lane = False            # a latency lane takes the fast items (set by the engine)
        self.closed = False
        self.gate_waits = 0

    def __len__(self) -> int:
        return len(self._fast) + len(self._bulk)

    def put_many(self, items: Sequence[_Item], fast: bool) -> None:
        with self._cond:
            (self._fast if fast else self._bulk).extend(items)
            if fast and self.lane:
                self._lane_idle.clear()
            if fast and self.lane:
                self._lane_cond.notify()
            elif fast:
                self._cond.notify_all()
            else:
                self._cond.notify(len(items))

    def put_back(self, item: _Item) -> None:
        with self._cond:
            self._fast.appendleft(item) if item.fast else self._bulk.appendleft(item)
            self._cond.notify_all()
            self._lane_cond.notify_all()

    def get(self, timeout: float | None, lanes: tuple[bool, bool] = BOTH) -> _Item | None:
        """The next item of ``lanes`` (fast first); waits up to ``timeout`` (None: until one comes or closed)."""
        fast, bulk = lanes

        def ready() -> bool:
            return bool((fast and self._fast) or (bulk and self._bulk))

        cond = self._lane_cond if lanes == FAST else self._cond
        with cond:
            if not ready() and timeout != 0:
                cond.wait_for(lambda: ready() or self.closed, timeout)
            if fast and self._fast:
                return self._fast.popleft()
            if bulk and self._bulk:
                return self._bulk.popleft()
            return None

    def lane_done(self) -> None:
        """The latency lane finished a pack: open the gate when nothing is left for it."""
        with self._cond:
            if not self._fast:
                self._lane_idle.set()

    def lane_gone(self) -> None:
        """The latency lane stopped for good: bulk workers take the fast items from now on."""
        with self._cond:
            self.lane = False
            self._lane_idle.set()
            self._cond.notify_all()
            self._lane_cond.notify_all()

    def wait_for_lane(self) -> None:
        """Before a bulk pack: hold back while the latency lane has work, at most ``LANE_GATE_MAX_S``."""
        if not self._lane_idle.is_set():
            self.gate_waits += 1
            self._lane_idle.wait(LANE_GATE_MAX_S)

    def close(self) -> list[_Item]:
        with self._cond:
            self.closed = True
            left = list(self._fast) + list(self._bulk)
            self._fast.clear()
            self._bulk.clear()
            self._cond.notify_all()
            self._lane_cond.notify_all()
            return left
