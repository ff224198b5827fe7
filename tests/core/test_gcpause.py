"""The garbage collector's pauses are measured, and start-up's objects are frozen out of its walks."""

from __future__ import annotations

import gc
from typing import Any

from pirag.daemon.gcpause import GcMonitor


def test_monitor_times_collections_per_generation() -> None:
    monitor = GcMonitor()
    monitor.install()
    try:
        gc.collect(0)
        gc.collect(2)
        gc.collect(2)
    finally:
        monitor.uninstall()
    figures = monitor.stats()
    assert figures["gen2"]["collections"] >= 2
    assert figures["gen2"]["max_ms"] > 0
    assert figures["gen2"]["recent_p50_ms"] <= figures["gen2"]["max_ms"]
    assert 0 < figures["gen2"]["last_ms"] <= figures["gen2"]["max_ms"]
    assert figures["gen0"]["collections"] >= 1
    gc.collect(2)   # uninstalled: no longer counted
    assert monitor.stats()["gen2"]["collections"] == figures["gen2"]["collections"]


def test_freeze_moves_live_objects_out_of_collections() -> None:
    monitor = GcMonitor()
    try:
        frozen = monitor.freeze()
        assert frozen > 1000 and gc.get_freeze_count() == frozen
        assert monitor.stats()["frozen_objects"] == frozen
    finally:
        gc.unfreeze()


def test_daemon_freezes_start_up_and_reports_pauses(daemon_factory: Any) -> None:
    frozen = daemon_factory("gc-frozen", {"embed": {"model": "fake"}})
    plain = daemon_factory("gc-plain", {"embed": {"model": "fake"}, "server": {"gc_freeze": False}})
    with frozen.client() as client:
        figures = client.status().components["gc"]
    assert figures["frozen_objects"] > 10_000, figures    # numpy, msgspec, the config, the services...
    assert figures["gen2"]["collections"] >= 1             # the one that precedes the freeze
    with plain.client() as client:
        assert client.status().components["gc"]["frozen_objects"] == 0
