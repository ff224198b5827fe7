"""Fair ingestion: which queued job runs next, and when a long ingestion steps aside for a short one.

- ``JobQueue``: journaled jobs wait here. Up to ``MAX_RUNNING_JOBS`` run at once, never two of one project (they
  would only wait on its lock). The next job is the smallest queued one (the bytes its walk found at submit
  time; a job resumed after a restart counts as large), unless the oldest has waited more than
  ``MAX_WAIT_S``: then the oldest, so a stream of small jobs cannot starve a large one.
- ``ProjectTurns``: a short ingestion (``INLINE_FILES`` files or fewer, an upload of a few documents) announces
  that it waits for its project's lock; a long ingestion of that project looks between files and steps aside:
  its pipeline drains (at most the batches in flight), it releases the lock, and takes it again after them.
  Sources are never split between turns, so one pipeline still owns a source from its first chunk to its last.

Both live on the event loop (no locks of their own).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

MAX_RUNNING_JOBS = 2
MAX_WAIT_S = 60.0
UNKNOWN_SIZE = 1 << 62
SLOW_TURN_S = 1.0

log = logging.getLogger("pirag.ingest")


@dataclass
class QueuedJob:
    job_id: int
    project: str
    size_bytes: int
    queued_at: float = field(default_factory=time.monotonic)


class JobQueue:
    """Queued jobs and the slots they run in; ``next()`` hands out the job that should run now."""

    def __init__(self, slots: int = MAX_RUNNING_JOBS, max_wait_s: float = MAX_WAIT_S):
        self.slots = slots
        self.max_wait_s = max_wait_s
        self._queued: list[QueuedJob] = []
        self.running: dict[int, str] = {}            # job id -> project
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._queued)

    def put(self, job_id: int, project: str, size_bytes: int | None = None) -> None:
        self._queued.append(QueuedJob(job_id, project, UNKNOWN_SIZE if size_bytes is None else size_bytes))
        self._changed.set()

    def done(self, job_id: int) -> None:
        self.running.pop(job_id, None)
        self._changed.set()

    def pick(self, now: float | None = None) -> QueuedJob | None:
        """The job to start now, or None (no free slot, or every queued job's project is busy)."""
        if len(self.running) >= self.slots:
            return None
        busy = set(self.running.values())
        ready = [job for job in self._queued if job.project not in busy]
        if not ready:
            return None
        now = time.monotonic() if now is None else now
        oldest = min(ready, key=lambda job: job.queued_at)
        if now - oldest.queued_at > self.max_wait_s:
            chosen = oldest
        else:
            chosen = min(ready, key=lambda job: (job.size_bytes, job.queued_at))
        self._queued.remove(chosen)
        self.running[chosen.job_id] = chosen.project
        return chosen

    async def next(self) -> QueuedJob:
        """Wait for a job that may start now (a free slot, its project not already running a job)."""
        while True:
            job = self.pick()
            if job is not None:
                return job
            self._changed.clear()
            try:
                # the oldest job's wait can cross max_wait_s with nothing else changing: look again then
                await asyncio.wait_for(self._changed.wait(), timeout=self.max_wait_s / 4)
            except asyncio.TimeoutError:
                pass


class ProjectTurns:
    """Per project: how many short ingestions wait for its lock (a long one steps aside while any do)."""

    def __init__(self) -> None:
        self._waiting: dict[str, int] = {}

    def wanted(self, project: str) -> bool:
        return self._waiting.get(project, 0) > 0

    @asynccontextmanager
    async def short(self, lock: asyncio.Lock, project: str) -> AsyncIterator[None]:
        """Hold ``project``'s lock for a short ingestion, asking a long one that holds it to step aside."""
        self._waiting[project] = self._waiting.get(project, 0) + 1
        started = time.monotonic()
        try:
            await lock.acquire()
            waited = time.monotonic() - started
            if waited >= SLOW_TURN_S:   # how long a long ingestion took to step aside: the fairness figure
                log.info("a short ingestion into %s waited %.2f s for a long one to step aside", project, waited)
        finally:
            self._waiting[project] -= 1
            if not self._waiting[project]:
                del self._waiting[project]
        try:
            yield
        finally:
            lock.release()
