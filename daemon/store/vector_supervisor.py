"""The vector index's worker process, supervised: started, asked, timed out, restarted, recycled.

``vectors.py`` owns what the index means (collections, health against SQLite, storage errors); this module owns
the process that serves it (``vector_worker.py``), whatever it is asked:

- **A request at a time.** ``call`` holds a ``ReadFirstLock`` (queued reads before queued writes) and sends one
  frame, so each timeout measures that request alone. Per op it counts the time spent waiting for the lock and
  the time in the worker (``status``: ``components.vectors.ops``).
- **Crashes and hangs.** A worker that dies while a request runs is replaced and the request sent once more
  (every op is idempotent); one that overruns its timeout is killed, replaced, and the request answered
  ``unavailable``. Restarts close together wait longer (``RESTART_BACKOFF_S``). Every unplanned restart calls
  ``on_restart``: the owner re-checks its collections against SQLite.
- **Recycling.** ``recycle(worker)`` replaces a healthy worker by a fresh process: after a collection drop of
  the embedded backend (whose Rust side keeps a dropped collection's memory until the process exits) and once
  the worker's RSS passes ``store.vectors_worker_max_rss_mb``. With ``store.vectors_recycle_overlap`` (the
  default) the new process imports chromadb while the old one still serves, and requests wait only for the old
  client's close and the new one's open (a few hundred ms); without it the old worker is stopped first, which
  holds requests for a whole start (~2 s on a Pi) but never runs two workers (~100 MB) at once.

A fresh interpreter, not a fork (the daemon is threaded), on a socketpair. Event-loop only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from pirag.client.errors import Unavailable

from . import vector_worker as wire
from .read_first import ReadFirstLock

log = logging.getLogger("pirag.store.vectors")

START_TIMEOUT_S = 60.0          # a fresh interpreter importing chromadb on a loaded Pi
CLOSE_TIMEOUT_S = 10.0
RESTART_BACKOFF_S = (0.0, 0.5, 2.0, 5.0)   # successive restarts within RESTART_WINDOW_S wait longer
RESTART_WINDOW_S = 60.0


class WorkerLost(Exception):
    """The worker died (or was killed) while a request was in flight."""


class WorkerFailed(Exception):
    """The worker answered with an error (``kind``: ``not_found``, ``storage_full``, ``storage_error``,
    ``failed``)."""

    def __init__(self, kind: str, type_name: str, message: str):
        super().__init__(f"{type_name}: {message}")
        self.kind = kind
        self.type_name = type_name
        self.message = message


class WorkerProcess:
    """One worker process and its end of the socketpair: one frame out, one frame back."""

    def __init__(self, process: subprocess.Popen[bytes], reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter):
        self.process = process
        self.reader = reader
        self.writer = writer
        self.started_at = time.time()

    @classmethod
    async def launch(cls, settings: str, log_level: str) -> WorkerProcess:
        """Start a worker; it imports chromadb at once and then waits for its ``open`` request."""
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "pirag.daemon.store.vector_worker", "--fd", str(child_end.fileno()),
                 "--settings", settings, "--log-level", log_level],
                pass_fds=(child_end.fileno(),), stdin=subprocess.DEVNULL, close_fds=True)
        except BaseException:
            parent_end.close()
            raise
        finally:
            child_end.close()
        reader, writer = await asyncio.open_unix_connection(sock=parent_end, limit=wire.MAX_FRAME)
        return cls(process, reader, writer)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def rss_bytes(self) -> int:
        try:
            with open(f"/proc/{self.process.pid}/statm", "rb") as statm:
                return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return 0

    async def ask(self, request_id: int, op: str, args: dict[str, Any], timeout: float) -> Any:
        """Send one request and return its result. Raises ``asyncio.TimeoutError`` (the caller decides what a
        hang costs), ``WorkerLost`` (the process is gone or answered out of turn) or ``WorkerFailed``."""
        try:
            self.writer.write(wire.encode_frame({"id": request_id, "op": op, "args": args}))
            reply = await asyncio.wait_for(self._read_reply(), timeout)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            raise WorkerLost(f"{type(exc).__name__}: {exc}") from exc
        if reply.get("id") != request_id:
            raise WorkerLost(f"reply {reply.get('id')} to request {request_id}")
        error = reply.get("error")
        if error is not None:
            raise WorkerFailed(str(error.get("kind", "failed")), str(error.get("type")), str(error.get("message")))
        return reply.get("result")

    async def _read_reply(self) -> dict[str, Any]:
        (length,) = wire.HEADER.unpack(await self.reader.readexactly(wire.HEADER.size))
        return wire.decode_body(await self.reader.readexactly(length))

    async def stop(self, graceful: bool) -> None:
        """Close the Chroma client cleanly when ``graceful`` (killed if that does not answer), else kill."""
        if graceful and self.alive:
            try:
                await self.ask(0, "close", {}, CLOSE_TIMEOUT_S)
            except (asyncio.TimeoutError, WorkerLost, WorkerFailed, OSError):
                log.warning("vectors: the worker (pid %d) did not close in time; killing it", self.pid)
        if self.alive:
            self.process.kill()
        self.writer.close()

    async def reap(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, self.process.wait, CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            await loop.run_in_executor(None, self.process.wait)


class Supervisor:
    """Keeps one worker serving: ``start``, ``call``, ``recycle``, ``close``; figures in ``stats``."""

    def __init__(self, settings: Callable[[], str], log_level: str, open_timeout_s: float,
                 max_rss_mb: Callable[[], int], recycle_overlap: bool, on_restart: Callable[[], None]):
        self._settings = settings
        self._log_level = log_level
        self._open_timeout_s = open_timeout_s
        self._max_rss_mb = max_rss_mb
        self.recycle_overlap = recycle_overlap
        self._on_restart = on_restart
        self.worker: WorkerProcess | None = None
        self.info: dict[str, Any] = {}             # the worker's answer to open (max batch, counters)
        self._lock = ReadFirstLock()
        self._request_ids = 0
        self._running = False
        self._recent_restarts: list[float] = []
        self._recycling = asyncio.Lock()
        self._reaping: set[asyncio.Future[None]] = set()   # recycled workers' exits, waited for in the background
        self.restarts = 0
        self.rss_restarts = 0
        self.recycles = 0                          # planned replacements: after a drop, over max RSS
        self.recycle_ms = 0.0                      # how long the last one held requests up
        self.timeouts = 0
        self.last_error = ""
        self.last_error_at: float | None = None
        self.last_request_ms = 0.0
        # per op: [calls, seconds waiting for the worker (its lock), seconds in the worker]: one worker serves
        # every call in turn, so a query's wait behind upserts shows here
        self.op_times: dict[str, list[float]] = {}

    async def start(self) -> None:
        self._running = True
        await self._spawn()

    async def close(self) -> None:
        self._running = False
        async with self._lock.hold():
            await self._stop(graceful=True)
        await asyncio.gather(*self._reaping, return_exceptions=True)

    def note_error(self, message: str) -> None:
        self.last_error = message
        self.last_error_at = time.time()

    def stats(self) -> dict[str, Any]:
        worker = self.worker
        alive = worker is not None and worker.alive
        return {"pid": worker.pid if alive and worker else None, "alive": alive,
                "rss_bytes": worker.rss_bytes() if alive and worker else 0,
                "restarts": self.restarts, "rss_restarts": self.rss_restarts,
                "recycles": self.recycles, "last_recycle_ms": round(self.recycle_ms, 1),
                "recycle_overlap": self.recycle_overlap, "timeouts": self.timeouts,
                "last_error": self.last_error, "last_error_at": self.last_error_at,
                "max_rss_mb": self._max_rss_mb()}

    def op_stats(self) -> dict[str, Any]:
        return {op: {"calls": int(calls), "wait_s": round(wait, 3), "busy_s": round(busy, 3)}
                for op, (calls, wait, busy) in self.op_times.items()}

    @property
    def writes_overtaken(self) -> int:
        return self._lock.overtaken

    # -- requests -------------------------------------------------------------------------------------------

    async def call(self, op: str, args: dict[str, Any] | Callable[[], dict[str, Any]], timeout: float,
                   read: bool) -> Any:
        """One request to the worker; ``args`` may be a function, called once the worker is free."""
        queued = time.perf_counter()
        times = self.op_times.setdefault(op, [0, 0.0, 0.0])
        try:
            async with self._lock.hold(read=read):
                granted = time.perf_counter()
                if callable(args):
                    args = args()
                times[0] += 1
                times[1] += granted - queued
                try:
                    try:
                        return await self._request(op, args, timeout)
                    except WorkerLost as exc:
                        # A crash (or an outside kill) while this request ran: the request itself may be innocent,
                        # and every op is idempotent, so it is tried once more on a fresh worker.
                        await self._replace(f"the worker died during {op}: {exc}")
                    try:
                        return await self._request(op, args, timeout)
                    except WorkerLost as exc:
                        await self._replace(f"the worker died again during {op}: {exc}")
                        raise Unavailable(f"the vector index worker died during {op} twice; it was restarted") from exc
                finally:
                    times[2] += time.perf_counter() - granted
        finally:
            await self._check_rss()

    async def _request(self, op: str, args: dict[str, Any], timeout: float, respawn: bool = True) -> Any:
        """Send one request and wait for its reply, under the lock."""
        if respawn and (self.worker is None or not self.worker.alive):
            await self._replace("the worker was not running")
        worker = self.worker
        assert worker is not None
        self._request_ids += 1
        started = time.perf_counter()
        try:
            return await worker.ask(self._request_ids, op, args, timeout)
        except asyncio.TimeoutError:
            self.timeouts += 1
            message = f"{op} did not finish within {timeout:.1f} s; the worker (pid {worker.pid}) was killed"
            await self._replace(message)
            raise Unavailable(f"the vector index is stuck: {message} and restarted; SQLite still holds "
                              f"everything and the index is checked against it") from None
        finally:
            self.last_request_ms = (time.perf_counter() - started) * 1000

    # -- the worker's life ----------------------------------------------------------------------------------

    async def _spawn(self) -> None:
        await self._open(await WorkerProcess.launch(self._settings(), self._log_level))

    async def _open(self, worker: WorkerProcess) -> None:
        """Make ``worker`` the current one and open its Chroma client (under the lock, or before any request)."""
        self.worker = worker
        try:
            info = await self._request("open", {}, START_TIMEOUT_S + self._open_timeout_s, respawn=False)
        except WorkerLost as exc:
            await self._stop(graceful=False)
            raise Unavailable(f"the vector index worker failed to start: {exc}") from exc
        except BaseException:
            await self._stop(graceful=False)
            raise
        self.info = info

    async def _stop(self, graceful: bool, wait: bool = True) -> None:
        """Stop the current worker, then wait for its exit here or (``wait=False``: a recycle, whose successor
        may open the directory as soon as the client is closed) in the background."""
        worker, self.worker = self.worker, None
        if worker is None:
            return
        await worker.stop(graceful)
        if wait:
            await worker.reap()
        else:
            task = asyncio.ensure_future(worker.reap())
            self._reaping.add(task)
            task.add_done_callback(self._reaping.discard)

    async def _replace(self, reason: str) -> None:
        """Kill the worker (if alive), start a fresh one, and let the owner re-check its collections."""
        self.note_error(reason)
        log.error("vectors: %s; restarting the worker", reason)
        await self._stop(graceful=False)
        now = time.monotonic()
        self._recent_restarts = [t for t in self._recent_restarts if now - t < RESTART_WINDOW_S] + [now]
        await asyncio.sleep(RESTART_BACKOFF_S[min(len(self._recent_restarts), len(RESTART_BACKOFF_S)) - 1])
        self.restarts += 1
        await self._spawn()
        self._on_restart()

    async def _check_rss(self) -> None:
        limit_mb = self._max_rss_mb()
        worker = self.worker
        if not limit_mb or worker is None or not self._running:
            return
        rss = worker.rss_bytes()
        if rss <= limit_mb << 20:
            return
        log.warning("vectors: the worker's RSS is %d MiB, over store.vectors_worker_max_rss_mb = %d; "
                    "replacing it", rss >> 20, limit_mb)
        if await self.recycle(worker):
            self.rss_restarts += 1

    async def recycle(self, worker: WorkerProcess) -> bool:
        """Replace a healthy ``worker`` by a fresh process; False when it was replaced meanwhile.

        Nothing is re-checked: the old worker answered every request it was sent and closed its client."""
        if not self._running:
            return False
        async with self._recycling:
            if self.worker is not worker:
                return False
            if not self.recycle_overlap:
                async with self._lock.hold():
                    if self.worker is not worker:
                        return False
                    started = time.perf_counter()
                    await self._stop(graceful=True)
                    await self._spawn()   # on failure the next request starts a worker again
                    self._recycled(started)
                    return True
            fresh: WorkerProcess | None = await WorkerProcess.launch(self._settings(), self._log_level)
            assert fresh is not None
            try:
                # Answered once the new process has imported chromadb: until then the old one serves.
                try:
                    await fresh.ask(0, "info", {}, START_TIMEOUT_S)
                except (asyncio.TimeoutError, WorkerLost, WorkerFailed) as exc:
                    raise Unavailable(f"a new vector index worker did not start: {type(exc).__name__}: {exc}") \
                        from exc
                async with self._lock.hold():
                    if self.worker is not worker:
                        return False
                    started = time.perf_counter()
                    await self._stop(graceful=True, wait=False)
                    spare, fresh = fresh, None
                    await self._open(spare)     # on failure it stops the new worker: the next request respawns
                    self._recycled(started)
                    return True
            finally:
                if fresh is not None:   # not used: the old worker was replaced meanwhile, or it did not start
                    fresh.process.kill()
                    fresh.writer.close()
                    await fresh.reap()

    def _recycled(self, started: float) -> None:
        self.recycles += 1
        self.recycle_ms = (time.perf_counter() - started) * 1000
