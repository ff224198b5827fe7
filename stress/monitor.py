"""The resource monitor: the daemon process seen from outside (psutil) and from inside (``status``).

Two threads in the harness's parent process (the load comes from worker processes, so these stay prompt):

- ``sample_process`` every 0.5 s: RSS, USS, CPU %, open FDs and threads of the daemon pid (the pid comes from
  ``status``), and the RSS and USS of its child processes (the vector-index worker): a Pi's cgroup
  (``MemoryMax``) charges them too, so ``total_rss_mb`` (daemon + children) is what a memory bound is judged on.
  The sum of RSS counts the shared libraries both processes map twice: an upper bound of the charge; the sum of
  USS is its lower bound, and the sum of PSS (shared pages divided among their mappers) the fair middle. USS,
  PSS and FDs need the daemon's uid (or root); without them those fields are ``None``.
- ``poll_status`` every 0.5 s over its own connection: connections, requests and errors (cumulative),
  event-loop lag, embedding queue depth and cache hits, SQLite queues, query/recall cache figures.

A stopped daemon (SIGSTOP) does not stall the psutil thread; the status thread just waits (timeout 5 s).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from pirag.client import Client
from pirag.client.errors import PiragError

MB = 1 << 20


def _get(mapping: Any, *keys: str, default: Any = None) -> Any:
    for key in keys:
        if not isinstance(mapping, dict) or key not in mapping:
            return default
        mapping = mapping[key]
    return mapping


def status_figures(status: Any) -> dict[str, Any]:
    """The flat figures the harness keeps from one ``status`` reply."""
    components = status.components or {}
    embed_cache = _get(components, "embed", "cache", default={}) or {}
    query_cache = _get(components, "documents", "query_cache", default={}) or {}
    return {
        "connections": status.connections,
        "connections_total": status.connections_total,
        "inflight": status.inflight,
        "requests": sum(status.requests_by_op.values()),
        "requests_by_op": dict(status.requests_by_op),
        "errors": sum(status.errors_by_code.values()),
        "errors_by_code": dict(status.errors_by_code),
        "loop_lag_p50_ms": status.loop_lag.p50_ms,
        "loop_lag_p99_ms": status.loop_lag.p99_ms,
        "loop_lag_recent_p99_ms": getattr(status.loop_lag, "recent_p99_ms", 0.0),
        "loop_lag_histogram": list(getattr(status.loop_lag, "histogram", []) or []),
        "rss_mb": status.rss_bytes / MB,
        "embed_queue": _get(components, "embed", "queue_depth", default=0),
        "embed_pending": _get(components, "embed", "pending_calls", default=0),
        "embed_cache_hits": embed_cache.get("hits", 0),
        "embed_cache_misses": embed_cache.get("misses", 0),
        "db_write_queue": _get(components, "db", "write_queue", default=0),
        "db_read_queue": _get(components, "db", "read_queue", default=0),
        "query_cache_hits": query_cache.get("hits", 0),
        "query_cache_misses": query_cache.get("misses", 0),
        "recall_cache_hits": _get(components, "memory", "cache_hits", default=0),
        "projects": _get(components, "documents", "projects", default=0),
        "collections_open": _get(components, "vectors", "collections_open", default=0),
        "db_bytes": _get(components, "db", "bytes", default=0),
        "episodes_logged": _get(components, "memory", "episodes_logged", default=0) or 0,
        "vector_compactions": _get(components, "vectors", "compactions", default=0) or 0,
        "query_cache_fill": _fill(query_cache, "max_entries"),
        "embed_cache_fill": _fill(embed_cache, "capacity"),
        "worker_rss_mb": (_get(components, "vectors", "worker", "rss_bytes", default=0) or 0) / MB,
        "cache_bytes": (query_cache.get("bytes", 0) + embed_cache.get("bytes", 0)
                        + (_get(components, "memory", "cache_bytes", default=0) or 0)),
    }


def _fill(cache: dict[str, Any], entries_key: str) -> float:
    """How full a cache is, 0..1: by entries or by bytes, whichever is nearer its bound."""
    by_entries = cache.get("entries", 0) / cache[entries_key] if cache.get(entries_key) else 0.0
    by_bytes = cache.get("bytes", 0) / cache["max_bytes"] if cache.get("max_bytes") else 0.0
    return round(max(by_entries, by_bytes), 4)


@dataclass
class ProcessSample:
    t: float
    rss_mb: float
    uss_mb: float | None
    cpu_pct: float
    fds: int | None
    threads: int
    state: str
    file_mb: float = 0.0                  # of the daemon's RSS, file-backed pages: libraries, SQLite's mmap reads
    pss_mb: float | None = None           # proportional set size: shared pages divided among their mappers
    children_rss_mb: float = 0.0          # the daemon's child processes (the vector-index worker)
    children_uss_mb: float | None = 0.0
    children_pss_mb: float | None = 0.0
    children: int = 0

    @property
    def total_rss_mb(self) -> float:
        return self.rss_mb + self.children_rss_mb

    @property
    def anon_mb(self) -> float:
        """The daemon's own heap and stacks: what grows when the daemon leaks (its file pages the kernel can
        drop and read again)."""
        return self.rss_mb - self.file_mb

    @property
    def total_uss_mb(self) -> float | None:
        return None if self.uss_mb is None or self.children_uss_mb is None else self.uss_mb + self.children_uss_mb

    @property
    def total_pss_mb(self) -> float | None:
        """Daemon + worker with every shared page counted once in all: the fair figure for a memory bound (the
        sum of RSS counts a library both map twice, and a page of the database each SQLite connection's mmap
        touched once per connection)."""
        return None if self.pss_mb is None or self.children_pss_mb is None else self.pss_mb + self.children_pss_mb


def _uss_pss_mb(process: psutil.Process) -> tuple[float | None, float | None]:
    """USS (pages only this process maps) and PSS (each page divided among the processes mapping it: what a
    cgroup is charged for, closest), or Nones without the right to read ``smaps``."""
    try:
        info = process.memory_full_info()
    except (psutil.AccessDenied, psutil.ZombieProcess):
        return None, None
    pss = getattr(info, "pss", None)   # Linux only: elsewhere None, never USS under PSS's name
    return info.uss / MB, None if pss is None else pss / MB


def _children(process: psutil.Process) -> tuple[float, float | None, float | None, int]:
    """(RSS MB, USS MB or None, PSS MB or None, count) summed over the live children; one that exits meanwhile
    is skipped."""
    rss, uss, pss, count = 0.0, 0.0, 0.0, 0
    try:
        children = process.children(recursive=True)
    except psutil.Error:
        return 0.0, None, None, 0
    for child in children:
        try:
            child_rss = child.memory_info().rss / MB
        except psutil.Error:
            continue
        child_uss, child_pss = _uss_pss_mb(child)
        rss, count = rss + child_rss, count + 1
        uss = None if uss is None or child_uss is None else uss + child_uss
        pss = None if pss is None or child_pss is None else pss + child_pss
    return rss, uss, pss, count


def sample_once(process: psutil.Process) -> ProcessSample:
    with process.oneshot():
        memory = process.memory_info()
        rss, file_backed = memory.rss / MB, getattr(memory, "shared", 0) / MB
        uss, pss = _uss_pss_mb(process)
        try:
            fds: int | None = process.num_fds()
        except psutil.AccessDenied:
            fds = None
        cpu, threads, state = process.cpu_percent(None), process.num_threads(), process.status()
    children_rss, children_uss, children_pss, children = _children(process)
    return ProcessSample(t=time.monotonic(), rss_mb=rss, uss_mb=uss, cpu_pct=cpu, fds=fds, threads=threads,
                         state=state, file_mb=file_backed, pss_mb=pss, children_rss_mb=children_rss,
                         children_uss_mb=children_uss, children_pss_mb=children_pss, children=children)


@dataclass
class Monitor:
    socket: str
    pid: int
    interval_s: float = 0.5
    process_samples: list[ProcessSample] = field(default_factory=list)
    status_samples: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.process = psutil.Process(self.pid)
        self.process.cpu_percent(None)  # the first call only primes the counter

    def start(self) -> "Monitor":
        for target in (self._sample_process, self._poll_status):
            thread = threading.Thread(target=target, daemon=True, name=f"monitor-{target.__name__}")
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def __enter__(self) -> "Monitor":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _sample_process(self) -> None:
        while not self._stop.is_set():
            try:
                self.process_samples.append(sample_once(self.process))
            except psutil.NoSuchProcess:
                self.errors.append("the daemon process exited during the run")
                return
            except psutil.Error as exc:
                self.errors.append(f"psutil: {exc}")
            self._stop.wait(self.interval_s)

    def _poll_status(self) -> None:
        client = Client(self.socket, timeout=5.0)
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    figures = status_figures(client.status())
                    figures["t"] = started
                    figures["took_ms"] = (time.monotonic() - started) * 1000
                    self.status_samples.append(figures)
                except PiragError as exc:
                    self.errors.append(f"status: {exc}")
                self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))
        finally:
            client.close()

    # ----- views ------------------------------------------------------------------------------------------

    def latest(self) -> dict[str, Any]:
        figures: dict[str, Any] = {}
        if self.process_samples:
            last = self.process_samples[-1]
            figures.update(rss_mb=last.rss_mb, uss_mb=last.uss_mb, fds=last.fds, threads=last.threads,
                           cpu_pct=last.cpu_pct, children_rss_mb=last.children_rss_mb,
                           total_rss_mb=last.total_rss_mb)
        if self.status_samples:
            last_status = self.status_samples[-1]
            figures.update(loop_lag_p99_ms=last_status["loop_lag_p99_ms"], connections=last_status["connections"])
        return figures

    def series(self, since: float = 0.0, until: float = float("inf")) -> dict[str, list[Any]]:
        """Columns of the samples taken between ``since`` and ``until`` (monotonic times)."""
        process = [s for s in self.process_samples if since <= s.t <= until]
        status = [s for s in self.status_samples if since <= s["t"] <= until]
        columns: dict[str, list[Any]] = {
            "t": [s.t for s in process], "rss_mb": [s.rss_mb for s in process],
            "uss_mb": [s.uss_mb for s in process], "cpu_pct": [s.cpu_pct for s in process],
            "fds": [s.fds for s in process], "threads": [s.threads for s in process],
            "children_rss_mb": [s.children_rss_mb for s in process], "total_rss_mb": [s.total_rss_mb for s in process],
        }
        keys = ("connections", "connections_total", "inflight", "requests", "errors", "loop_lag_p99_ms", "embed_queue", "db_write_queue",
                "db_read_queue", "took_ms")
        columns["status_t"] = [s["t"] for s in status]
        for key in keys:
            columns[f"status_{key}"] = [s[key] for s in status]
        return columns


def resource_summary(monitor: Monitor, since: float = 0.0, until: float = float("inf")) -> dict[str, Any]:
    """Start/end/peak of the process figures and the daemon's counters over a window."""
    process = [s for s in monitor.process_samples if since <= s.t <= until]
    status = [s for s in monitor.status_samples if since <= s["t"] <= until]
    summary: dict[str, Any] = {"samples": len(process)}
    if process:
        for name in ("rss_mb", "uss_mb", "fds", "threads", "children_rss_mb", "total_rss_mb", "total_uss_mb",
                     "total_pss_mb"):
            values = [getattr(s, name) for s in process if getattr(s, name) is not None]
            if values:
                summary[f"{name}_start"] = round(values[0], 1)
                summary[f"{name}_end"] = round(values[-1], 1)
                summary[f"{name}_peak"] = round(max(values), 1)
        cpu = [s.cpu_pct for s in process]
        summary["cpu_mean_pct"] = round(sum(cpu) / len(cpu), 1)
        summary["cpu_peak_pct"] = round(max(cpu), 1)
    if status:
        first, last = status[0], status[-1]
        summary["loop_lag_p99_ms_max"] = max(s["loop_lag_p99_ms"] for s in status)
        summary["embed_queue_max"] = max(s["embed_queue"] for s in status)
        summary["db_write_queue_max"] = max(s["db_write_queue"] for s in status)
        summary["connections_max"] = max(s["connections"] for s in status)
        summary["daemon_requests"] = last["requests"] - first["requests"]
        errors = {code: count - first["errors_by_code"].get(code, 0) for code, count in last["errors_by_code"].items()}
        summary["daemon_errors_by_code"] = {code: count for code, count in errors.items() if count}

        def rate(hits: str, misses: str) -> float | None:
            h = last[hits] - first[hits]
            m = last[misses] - first[misses]
            return round(h / (h + m), 3) if h + m else None

        summary["embed_cache_hit_rate"] = rate("embed_cache_hits", "embed_cache_misses")
        summary["query_cache_hit_rate"] = rate("query_cache_hits", "query_cache_misses")
    return summary
