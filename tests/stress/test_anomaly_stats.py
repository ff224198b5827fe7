"""The robust statistics of pirag-stress on synthetic series (no daemon): quiet on noise, loud on faults."""

from __future__ import annotations

import numpy as np

from pirag.stress import anomaly
from pirag.stress.anomaly import Signal


def noisy(n: int = 200, seed: int = 0, level: float = 20.0) -> tuple[list[float], list[float]]:
    rng = np.random.default_rng(seed)
    times = [i * 0.5 for i in range(n)]
    values = list(level + rng.gamma(2.0, 3.0, n))  # skewed, like latencies
    return times, values


def test_clean_noise_is_quiet() -> None:
    for seed in range(20):
        times, values = noisy(seed=seed)
        detection = anomaly.detect({"lat": (times, values)}, [Signal("lat", z=8, abs_min=200, rel_min=3, level=True)])
        assert detection.events == [], (seed, detection.events)


def test_a_stall_is_flagged_where_it_happened() -> None:
    times, values = noisy()
    for index in range(100, 104):  # a 2 s stall
        values[index] = 2000.0
    detection = anomaly.detect({"lat": (times, values)}, [Signal("lat", z=8, abs_min=200, rel_min=3)])
    assert len(detection.events) == 1
    event = detection.events[0]
    assert event.start == 50.0 and event.end >= 51.5
    matched, unexplained = anomaly.match_faults(detection.events, [{"kind": "stop", "start": 50.2, "end": 52.0}])
    assert matched[0]["caught"] and not unexplained


def test_a_level_shift_in_a_flat_series_is_a_change_point() -> None:
    times = [i * 0.5 for i in range(120)]
    fds = [40.0] * 50 + [52.0] * 20 + [40.0] * 50  # connections held open for 10 s
    assert anomaly.change_points(fds, min_size=4, threshold=8, scale_floor=1.0, min_effect=6) == [50, 70]
    detection = anomaly.detect({"fds": (times, fds)}, [Signal("fds", abs_min=6, level=True)])
    assert detection.events and detection.events[0].start == 25.0
    assert anomaly.detect({"fds": (times, [40.0] * 120)}, [Signal("fds", abs_min=6, level=True)]).events == []


def test_counter_deltas_and_windows() -> None:
    assert anomaly.deltas([0, 0, 5, 5, 3, 4]) == [0.0, 0.0, 5.0, 0.0, 0.0, 1.0]
    samples = [(0.1, "search", 0.010, ""), (0.2, "search", 0.030, ""), (0.7, "search", 0.0, "busy")]
    windows = anomaly.latency_windows(samples, 0.0, 1.0)
    assert windows["completed"] == [2.0, 0.0] and windows["errors"] == [0.0, 1.0]
    assert windows["max_ms"][0] == 30.0


def test_theil_sen_ignores_outliers() -> None:
    x = np.arange(100, dtype=float)
    y = 3.0 * x + 7.0
    y[::10] += 500.0  # GC pauses, allocator bursts
    slope, intercept = anomaly.theil_sen(x, y)
    assert abs(slope - 3.0) < 1e-9 and abs(intercept - 7.0) < 1e-9
