"""``memory-leaks``' fit on synthetic samples (no daemon): the index worker's memory is counted, a flat run's
interval includes 0, a worker-only leak shows in the total although the daemon is flat, windows are cut."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from pirag.stress import scenario_leaks
from pirag.stress.monitor import ProcessSample

OPS_PER_S = 50.0


def fake_run(seconds: float, daemon_mb: Any, worker_mb: Any, seed: int = 0) -> SimpleNamespace:
    """A Run stand-in: process samples every 0.5 s and status samples with a steady request count."""
    rng = np.random.default_rng(seed)
    process, status = [], []
    for step in range(int(seconds / 0.5)):
        t = step * 0.5
        noise = rng.normal(0.0, 1.5, 2)
        process.append(ProcessSample(t=t, rss_mb=daemon_mb(t) + noise[0], uss_mb=None, cpu_pct=0.0, fds=40,
                                     threads=20, state="running", children_rss_mb=worker_mb(t) + noise[1],
                                     children_uss_mb=None, children=1))
        status.append({"t": t, "requests": int(t * OPS_PER_S), "cache_bytes": 9_000_000, "db_bytes": 1 << 20,
                       "episodes_logged": int(t), "vector_compactions": 0})
    return SimpleNamespace(start=0.0, monitor=SimpleNamespace(process_samples=process, status_samples=status))


def test_a_flat_run_has_an_interval_that_includes_zero() -> None:
    run = fake_run(900, lambda t: 250.0, lambda t: 120.0)
    figures = scenario_leaks.fit(run, 0.0, 900.0, 0.25)
    low, high = figures["total_rss_mb_per_10k_ops_ci95"]
    assert low <= 0.0 <= high
    assert abs(figures["total_rss_mb_per_10k_ops"]) < 1.0
    assert figures["total_rss_mb_start_end_peak"][2] < 380  # 250 + 120 and the noise
    assert figures["worker_processes"] == 1


def test_a_leak_in_the_index_worker_alone_shows_in_the_total() -> None:
    leak_mb_per_s = 20.0 / 3600  # 20 MB an hour, in the worker only
    run = fake_run(900, lambda t: 250.0, lambda t: 120.0 + leak_mb_per_s * t)
    figures = scenario_leaks.fit(run, 0.0, 900.0, 0.25)
    expected = leak_mb_per_s / OPS_PER_S * 10_000
    assert abs(figures["rss_mb_per_10k_ops"]) < 0.5 * expected          # the daemon alone looks clean
    assert figures["total_rss_mb_per_10k_ops_ci95"][0] > 0.0             # the total does not
    assert abs(figures["total_rss_mb_per_10k_ops"] - expected) < 0.3 * expected
    assert abs(figures["children_rss_mb_per_10k_ops"] - expected) < 0.3 * expected


def test_a_long_run_is_cut_into_windows_fitted_like_runs_of_that_length() -> None:
    # grows for the first 900 s (filling), flat after: the first window shows it, the later ones do not
    run = fake_run(3600, lambda t: 250.0 + min(t, 900.0) * 0.05, lambda t: 120.0)
    figures = scenario_leaks.fit(run, 0.0, 3600.0, 0.25, window_s=900.0)
    rows = figures["windows"]
    assert [row["from_s"] for row in rows] == [0.0, 900.0, 1800.0, 2700.0]
    assert rows[0]["total_rss_mb_per_10k_ops_ci95"][0] > 0.0
    for row in rows[1:]:
        low, high = row["total_rss_mb_per_10k_ops_ci95"]
        assert low <= 0.0 <= high, row
    assert scenario_leaks.fit(run, 0.0, 900.0, 0.25, window_s=900.0).get("windows") == []
