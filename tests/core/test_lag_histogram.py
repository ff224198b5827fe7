"""The loop-lag histogram ``status`` carries: counts per bucket since start, so that a benchmark can take the
quantiles of exactly its own phase from two readings (stress/scenario_latency.py)."""

from __future__ import annotations

from pirag.client.protocol.core import LAG_BUCKETS_MS, lag_quantile_ms
from pirag.daemon.metrics import LagSampler


def test_histogram_counts_each_lag_in_its_bucket() -> None:
    sampler = LagSampler(window=4)
    for lag_ms in (0.2, 0.5, 0.51, 9.9, 10.0, 10.01, 99999.0):
        sampler.add(lag_ms / 1000)
    sampler.add(-0.001)                                  # a probe woken early counts as no lag
    counts = sampler.summary()["histogram"]
    assert len(counts) == len(LAG_BUCKETS_MS) + 1 and sum(counts) == 8
    bucket = {bound: counts[i] for i, bound in enumerate(LAG_BUCKETS_MS)}
    assert bucket[0.5] == 3 and bucket[1] == 1 and bucket[10] == 2 and bucket[12] == 1 and counts[-1] == 1
    assert sampler.summary()["samples"] == 4             # the recent window is bounded, the histogram is not


def test_quantiles_of_one_phase_from_two_readings() -> None:
    sampler = LagSampler()
    for _ in range(1000):                                # before the phase: lags of 40 ms
        sampler.add(0.040)
    before = sampler.summary()["histogram"]
    for n in range(1000):                                # the phase: 1 ms mostly, 11 ms for 1 %, one of 600 ms
        sampler.add(0.6 if n == 0 else 0.011 if n % 100 == 1 else 0.001)
    after = sampler.summary()["histogram"]
    assert lag_quantile_ms(before, after, 0.5) == 1.0
    assert lag_quantile_ms(before, after, 0.99) == 12.0  # the upper bound of 11 ms's bucket: errs high
    assert lag_quantile_ms(before, after, 1.0) == 1000.0
    assert lag_quantile_ms([], after, 0.5) == 50.0   # without a first reading: everything since start
    assert lag_quantile_ms(after, after, 0.99) is None  # no sample between the readings
    sampler.add(60.0)
    assert lag_quantile_ms(after, sampler.summary()["histogram"], 1.0) == float("inf")
