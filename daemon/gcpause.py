"""Python's cyclic garbage collector: how long its pauses stop the daemon, and keeping them short.

Every collection stops every Python thread, the event loop's included, while it walks the objects of the
generations it collects. The oldest generation holds nearly everything the daemon loaded at start (numpy,
msgspec structs, llama-cpp-python, the MCP SDK, the config, the model's vocabulary): a full collection walked
them all, and an ingestion, which allocates many container objects, set one off every few seconds, each a
stall of the loop (docs/PERFORMANCE_IMPROVEMENTS.md, "Garbage-collector pauses").

- ``GcMonitor`` times every collection (``gc.callbacks``) per generation; ``status`` shows counts, p50/p99/max
  pauses of recent collections and how many objects are frozen (``components.gc``).
- ``freeze()`` (``server.gc_freeze``, on by default): once the daemon is ready, ``gc.freeze()`` moves every
  object alive then into a permanent generation that collections no longer walk (what CPython documents for
  forking servers, and Instagram's web tier uses for the same pauses). Those objects live as long as the daemon
  anyway; garbage cycles among them are not reclaimed, which is bounded by what start-up made.
"""

from __future__ import annotations

import gc
import time
from collections import deque
from typing import Any

from .metrics import quantile_ms


class GcMonitor:
    """Pause times of the collector's runs, per generation, from ``gc.callbacks``."""

    def __init__(self, window: int = 512):
        self._pauses: dict[int, deque[float]] = {generation: deque(maxlen=window) for generation in range(3)}
        self._counts = [0, 0, 0]
        self._worst = [0.0, 0.0, 0.0]
        self._started: float | None = None

    def install(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        # runs inside the collection, on whichever thread set it off: keep it to two clock reads
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            seconds = time.perf_counter() - self._started
            self._started = None
            generation = int(info.get("generation", 0))
            self._pauses[generation].append(seconds)
            self._counts[generation] += 1
            self._worst[generation] = max(self._worst[generation], seconds)

    def freeze(self) -> int:
        """Collect once, then freeze everything alive (``gc.freeze``); returns the frozen object count."""
        gc.collect()
        gc.freeze()
        return gc.get_freeze_count()

    def stats(self) -> dict[str, Any]:
        figures: dict[str, Any] = {"frozen_objects": gc.get_freeze_count(), "tracked_counts": list(gc.get_count()),
                                   "thresholds": list(gc.get_threshold())}
        for generation in range(3):
            ordered = sorted(self._pauses[generation])
            entry: dict[str, Any] = {"collections": self._counts[generation],
                                     "max_ms": round(self._worst[generation] * 1000, 3)}
            if ordered:
                entry["last_ms"] = round(self._pauses[generation][-1] * 1000, 3)
                entry["recent_p50_ms"] = quantile_ms(ordered, 0.5)
                entry["recent_p99_ms"] = quantile_ms(ordered, 0.99)
            figures[f"gen{generation}"] = entry
        return figures
