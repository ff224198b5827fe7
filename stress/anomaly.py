"""Robust statistics over a run's time series: median/MAD z-scores, change points, Theil-Sen slopes.

Nothing here knows about faults: ``detect`` is given named series (latency per window, error counts, open FDs,
connections, event-loop lag...) and returns the intervals where one of them leaves its own normal range. The
``anomaly-detection`` scenario then checks that each fault it injected overlaps a detected interval and that a
clean run yields none.

Why robust: a run's series have heavy tails (a GC pause, a neighbour's burst on a shared core) and the faults
themselves are outliers, so the mean and standard deviation would be dragged by what we look for. The median
and the MAD (median absolute deviation, x1.4826 to match a normal sigma) ignore up to half the points. A flat
series has MAD 0, so each signal also carries floors: a point is flagged only if it is ``z`` robust sigmas away
*and* farther than an absolute and a relative minimum effect (the smallest change worth calling an anomaly).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

MAD_TO_SIGMA = 1.4826


def median_mad(values: Sequence[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        return math.nan, math.nan
    median = float(np.median(array))
    return median, float(np.median(np.abs(array - median))) * MAD_TO_SIGMA


def robust_z(values: Sequence[float], scale_floor: float = 0.0) -> np.ndarray:
    """(x - median) / max(MAD sigma, scale_floor) for each point."""
    array = np.asarray(values, dtype=float)
    median, sigma = median_mad(array)
    scale = max(sigma, scale_floor, 1e-12)
    return (array - median) / scale


def theil_sen(x: Sequence[float], y: Sequence[float], max_points: int = 400) -> tuple[float, float]:
    """Theil-Sen line (slope, intercept): the median of pairwise slopes; resistant to ~29 % outliers."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xs.size < 2:
        return math.nan, math.nan
    if xs.size > max_points:
        pick = np.linspace(0, xs.size - 1, max_points).astype(int)
        xs, ys = xs[pick], ys[pick]
    i, j = np.triu_indices(xs.size, k=1)
    dx = xs[j] - xs[i]
    keep = dx != 0
    if not keep.any():
        return math.nan, math.nan
    slope = float(np.median((ys[j] - ys[i])[keep] / dx[keep]))
    return slope, float(np.median(ys - slope * xs))


def theil_sen_ci(x: Sequence[float], y: Sequence[float], z: float = 1.96) -> tuple[float, float]:
    """Sen's (1968) distribution-free confidence interval of the Theil-Sen slope (95 % for z = 1.96): the order
    statistics of the sorted pairwise slopes at (N -/+ C) / 2, C = z * sqrt(n (n - 1) (2n + 5) / 18). It
    assumes independent residuals: thin autocorrelated samples (an RSS every 0.5 s) before calling it."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = xs.size
    if n < 4:
        return math.nan, math.nan
    i, j = np.triu_indices(n, k=1)
    dx = xs[j] - xs[i]
    keep = dx != 0
    slopes = np.sort((ys[j] - ys[i])[keep] / dx[keep])
    count = slopes.size
    if count < 2:
        return math.nan, math.nan
    spread = z * math.sqrt(n * (n - 1) * (2 * n + 5) / 18.0)
    low = max(0, int(math.floor((count - spread) / 2.0)))
    high = min(count - 1, int(math.ceil((count + spread) / 2.0)))
    return float(slopes[low]), float(slopes[high])


def change_points(values: Sequence[float], min_size: int = 4, threshold: float = 6.0, scale_floor: float = 0.0,
                  min_effect: float = 0.0, max_points: int = 8) -> list[int]:
    """Indices where the level of the series changes, by a sliding two-sample median test.

    At each index the medians of the ``2 * min_size`` points before and after are compared; a change is kept where
    they differ by more than ``min_effect`` and by ``threshold`` robust sigmas of the whole series (scaled by
    sqrt(window / 2), like a two-sample statistic). Unlike binary segmentation on medians, a short bump (a fault
    that comes and goes) yields both of its edges. Local maxima only, at least one window apart."""
    array = np.asarray(values, dtype=float)
    window = 2 * min_size
    if array.size < 2 * window:
        return []
    _, sigma = median_mad(array)
    scale = max(sigma, scale_floor, 1e-12)
    statistic = np.zeros(array.size)
    for index in range(window, array.size - window + 1):
        difference = abs(float(np.median(array[index:index + window])) - float(np.median(array[index - window:index])))
        if difference > min_effect:
            statistic[index] = difference / scale * math.sqrt(window / 2)
    found: list[int] = []
    while len(found) < max_points:
        best = int(np.argmax(statistic))
        if statistic[best] < threshold:
            break
        low = high = best
        while low > 0 and statistic[low - 1] == statistic[best]:
            low -= 1
        while high < array.size - 1 and statistic[high + 1] == statistic[best]:
            high += 1
        point = (low + high + 1) // 2
        found.append(point)
        statistic[max(0, min(low, point - window)):max(high, point + window) + 1] = 0.0
    return sorted(found)


@dataclass
class Signal:
    """How to judge one series: direction, robust-z threshold and the smallest effect worth reporting."""

    name: str
    direction: str = "up"          # up | down | both
    z: float = 8.0
    abs_min: float = 0.0           # |x - median| must exceed this ...
    rel_min: float = 0.0           # ... and rel_min * |median|
    level: bool = False            # also look for level shifts (change points)


@dataclass
class Event:
    signal: str
    start: float
    end: float
    peak: float
    baseline: float
    score: float
    kind: str = "spike"            # spike | level


@dataclass
class Detection:
    events: list[Event] = field(default_factory=list)
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"events": [asdict(event) for event in self.events], "baselines": self.baselines}


def _intervals(times: np.ndarray, mask: np.ndarray, step: float) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    start = None
    for index, flagged in enumerate(mask):
        if flagged and start is None:
            start = index
        if start is not None and (not flagged or index == len(mask) - 1):
            end = index if flagged else index - 1
            runs.append((start, end))
            start = None
    # join runs separated by a single quiet point (one event, not two)
    joined: list[tuple[int, int]] = []
    for run in runs:
        if joined and times[run[0]] - times[joined[-1][1]] <= 2.5 * step:
            joined[-1] = (joined[-1][0], run[1])
        else:
            joined.append(run)
    return joined


def detect_series(times: Sequence[float], values: Sequence[float | None], signal: Signal,
                  ignore_before: float = -math.inf) -> tuple[list[Event], dict[str, float]]:
    pairs = [(t, v) for t, v in zip(times, values) if v is not None and not math.isnan(v)]
    if len(pairs) < 8:
        return [], {}
    t = np.asarray([p[0] for p in pairs])
    x = np.asarray([p[1] for p in pairs], dtype=float)
    median, sigma = median_mad(x)
    floor = max(signal.abs_min, signal.rel_min * abs(median))
    scale = max(sigma, floor / signal.z, 1e-12)
    deviation = x - median
    if signal.direction == "up":
        effect = deviation
    elif signal.direction == "down":
        effect = -deviation
    else:
        effect = np.abs(deviation)
    mask = (effect / scale >= signal.z) & (effect > floor) & (t >= ignore_before)
    step = float(np.median(np.diff(t))) if t.size > 1 else 0.5
    events = [Event(signal=signal.name, start=float(t[a]), end=float(t[b]) + step,
                    peak=float(x[a:b + 1][np.argmax(effect[a:b + 1])]), baseline=median,
                    score=round(float(effect[a:b + 1].max() / scale), 1))
              for a, b in _intervals(t, mask, step)]
    if signal.level:
        points = change_points(x, min_size=4, threshold=signal.z, scale_floor=floor / signal.z, min_effect=floor)
        bounds = [0, *points, x.size]
        for a, b in zip(bounds, bounds[1:]):
            segment = float(np.median(x[a:b]))
            shift = segment - median
            wanted = (shift if signal.direction == "up" else -shift if signal.direction == "down" else abs(shift))
            if wanted > floor and t[a] >= ignore_before and not any(
                    e.start <= t[a] <= e.end or t[a] <= e.start <= t[b - 1] + step for e in events):
                events.append(Event(signal=signal.name, start=float(t[a]), end=float(t[b - 1]) + step,
                                    peak=segment, baseline=median, score=round(wanted / scale, 1), kind="level"))
    return events, {"median": round(median, 3), "mad_sigma": round(sigma, 3), "floor": round(floor, 3)}


def detect(series: dict[str, tuple[Sequence[float], Sequence[float | None]]], signals: Sequence[Signal],
           ignore_before: float = -math.inf) -> Detection:
    detection = Detection()
    for signal in signals:
        if signal.name not in series:
            continue
        times, values = series[signal.name]
        events, baseline = detect_series(times, values, signal, ignore_before)
        detection.events.extend(events)
        if baseline:
            detection.baselines[signal.name] = baseline
    detection.events.sort(key=lambda event: event.start)
    return detection


# ------------------------------------------------------------------------------------------------------------
# series from raw samples


def latency_windows(samples: Sequence[tuple[float, str, float, str]], start: float, end: float,
                    width: float = 0.5) -> dict[str, list[float]]:
    """Per window of ``width`` s (by start time): p50/p90/max latency (ms), completed and failed requests."""
    count = max(1, int(math.ceil((end - start) / width)))
    buckets: list[list[float]] = [[] for _ in range(count)]
    errors = [0] * count
    for t, _, latency, code in samples:
        index = int((t - start) / width)
        if 0 <= index < count:
            if code:
                errors[index] += 1
            else:
                buckets[index].append(latency * 1000)
    times, p50, p90, worst, done = [], [], [], [], []
    for index, bucket in enumerate(buckets):
        times.append(start + index * width)
        done.append(float(len(bucket)))
        if bucket:
            array = np.asarray(bucket)
            p50.append(float(np.percentile(array, 50)))
            p90.append(float(np.percentile(array, 90)))
            worst.append(float(array.max()))
        else:
            p50.append(math.nan)
            p90.append(math.nan)
            worst.append(math.nan)
    return {"t": times, "p50_ms": p50, "p90_ms": p90, "max_ms": worst, "completed": done,
            "errors": [float(e) for e in errors]}


def deltas(values: Sequence[float]) -> list[float]:
    """Increments of a cumulative counter (0 for the first point; a reset counts as 0)."""
    out = [0.0]
    for previous, current in zip(values, values[1:]):
        out.append(max(0.0, float(current) - float(previous)))
    return out


def match_faults(events: Sequence[Event], faults: Sequence[dict[str, Any]], before_s: float = 1.0,
                 after_s: float = 3.0) -> tuple[list[dict[str, Any]], list[Event]]:
    """Each fault with the events overlapping [start - before_s, end + after_s]; and the unexplained events."""
    explained: set[int] = set()
    matched = []
    for fault in faults:
        low, high = fault["start"] - before_s, fault["end"] + after_s
        hits = [index for index, event in enumerate(events) if event.start <= high and event.end >= low]
        explained.update(hits)
        matched.append({**fault, "caught": bool(hits), "signals": sorted({events[i].signal for i in hits})})
    return matched, [event for index, event in enumerate(events) if index not in explained]
