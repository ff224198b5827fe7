"""``pirag-stress latency --quick`` against a real daemon (real model): both client counts idle and during the
ingestion, the floor measured, the one-file ingest timed while the big ingestion runs, a report with every
figure the scenario promises, and its checks passed (loose limits in --quick: the CI machine is shared)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pirag.stress import scenario_latency


@pytest.fixture(scope="module")
def latency_daemon(daemon_factory: Any) -> Any:
    return daemon_factory("latencyreal", {})


@pytest.mark.slow
def test_latency_quick_against_the_real_daemon(latency_daemon: Any, tmp_path: Path) -> None:
    out = tmp_path / "results"
    code = scenario_latency.main(["--socket", str(latency_daemon.socket), "--quick", "--no-live", "--no-plots",
                                  "--out", str(out), "--check"])
    report = json.loads(next(out.glob("latency-*.json")).read_text())
    figures = report["figures"]
    phases = {(phase["phase"], phase["clients"]): phase for phase in figures["phases"]}
    assert set(phases) == {("idle", 1), ("idle", 5), ("during ingestion", 1), ("during ingestion", 5)}
    for phase in phases.values():
        assert set(phase["ops"]) == set(scenario_latency.OPS), phase["ops"]
        assert all(op["count"] > 0 and op["p99_ms"] >= op["p50_ms"] > 0 for op in phase["ops"].values())
        assert phase["ping"]["count"] > 0 and phase["loop_lag"]["samples"] > 0
        lag = phase["loop_lag"]                  # the phase's own samples, from two histogram readings
        assert lag["max_bucket_ms"] >= lag["p99_ms"] >= lag["p50_ms"] > 0, lag
    assert figures["ingest"]["chunks"] > 0 and figures["ingest"]["vs_pure_embedding"] > 0
    assert figures["one_file_ingest"]["error"] == "" and figures["one_file_ingest"]["while_ingesting"]
    floor = figures["floor"]
    assert floor["best_p50_ms"] > 0, floor                      # measured, not skipped
    assert set(figures["idle_p50_vs_floor"]) == {"search_nocache", "recall", "remember"}
    assert Path(report["files"]["markdown"]).read_text().startswith("# pirag-stress")
    failed = [check for check in report["checks"] if not check["passed"]]
    assert code == 0 and not failed, failed


def test_each_phase_has_texts_of_its_own() -> None:
    """The phase during ingestion must not replay the idle phase's queries and facts (the embedding cache and
    the exact-duplicate check would answer them, flattering the phase compared); phase 0 keeps the old texts.
    (A fact's paragraph may recur: it is stored as a new fact all the same, near-duplicates are only reported.)"""
    from pirag.stress.workers import Content, WorkerSpec

    paragraphs = [f"paragraph {n} " + "word " * 30 for n in range(500)]

    def texts(phase: int) -> tuple[list[str], list[str]]:
        spec = WorkerSpec(socket="s", worker=0, clients=1, duration_s=1, max_ops=10, mix={}, tag="t", phase=phase,
                          cache_fraction=0.0)
        content = Content(spec, 0, paragraphs)
        return [content.query()[0] for _ in range(20)], [content.fact() for _ in range(20)]

    idle, during = texts(1), texts(2)
    assert not set(idle[0]) & set(during[0])
    assert not set(idle[1]) & set(during[1])
    assert texts(1) == idle                                        # reproducible
    assert texts(0)[1][0].endswith("[t-w0c0 fact 1]")                # unchanged where phases are shared
