"""Counters and the event-loop lag sampler the server keeps for ``status`` and the metric lines."""

from __future__ import annotations

import os
from bisect import bisect_left
from collections import Counter, deque

from pirag.client.protocol.core import LAG_BUCKETS_MS

# The lag probe wakes every LAG_PROBE_S: often enough that a 20-s benchmark phase has ~1,000 samples, so its p99 is
# a p99 and not its maximum (a 0.25-s tick gave 80). RECENT_SAMPLES covers the last ~10 s.
LAG_PROBE_S = 0.02
RECENT_SAMPLES = 500


def quantile_ms(ordered: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of sorted seconds, in milliseconds (nearest rank below)."""
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000, 3)


class LagSampler:
    """The loop's lag: how late a periodic probe wakes up. A blocked loop shows as a large lag.

    Besides the recent window it keeps counts per bucket since start (``LAG_BUCKETS_MS``, never reset): a
    benchmark subtracts two readings and has the distribution of exactly its phase (``lag_quantile_ms``).
    """

    def __init__(self, window: int = 3000):
        self._samples: deque[float] = deque(maxlen=window)
        self.histogram = [0] * (len(LAG_BUCKETS_MS) + 1)    # the last bucket: above the highest bound

    def add(self, lag_s: float) -> None:
        lag_s = max(lag_s, 0.0)
        self._samples.append(lag_s)
        self.histogram[bisect_left(LAG_BUCKETS_MS, lag_s * 1000)] += 1

    def summary(self) -> dict[str, float | int]:
        if not self._samples:
            return {"p50_ms": 0.0, "p99_ms": 0.0, "samples": 0, "histogram": list(self.histogram)}
        ordered = sorted(self._samples)
        recent = sorted(list(self._samples)[-RECENT_SAMPLES:])
        return {
            "p50_ms": quantile_ms(ordered, 0.5),
            "p99_ms": quantile_ms(ordered, 0.99),
            "samples": len(ordered),
            "recent_p99_ms": quantile_ms(recent, 0.99),
            "max_ms": round(ordered[-1] * 1000, 3),
            "histogram": list(self.histogram),
        }


class Metrics:
    def __init__(self) -> None:
        self.requests_by_op: Counter[str] = Counter()
        self.errors_by_code: Counter[str] = Counter()
        self.connections_total = 0
        self.lag = LagSampler()
        self._last_total = 0

    @property
    def requests_total(self) -> int:
        return sum(self.requests_by_op.values())

    def requests_since_last(self) -> int:
        """Requests counted since the previous call (for requests/s in status lines)."""
        total = self.requests_total
        delta, self._last_total = total - self._last_total, total
        return delta


def rss_bytes() -> int:
    """This process's resident set size, from /proc (0 where there is none)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0

