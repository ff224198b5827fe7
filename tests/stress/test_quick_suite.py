"""``pirag-stress quick`` against a real daemon (real model): all six scenarios run, write their JSON reports,
Markdown summaries and plots, and pass their checks. The anomaly scenario injects its own faults (garbage,
slowloris, vanishing clients, SIGSTOP of the daemon, which this test's user owns) and must catch every one of
them and flag nothing in its clean run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pirag.stress import scenario_all

# Checks that fail because of a known daemon defect, not because of the harness: (scenario, check) -> why.
KNOWN_DAEMON_DEFECTS: dict[tuple[str, str], str] = {}


@pytest.fixture(scope="module")
def stress_daemon(daemon_factory: Any) -> Any:
    """Its own daemon with the real model: the churn and the faults must not disturb other tests' daemon."""
    return daemon_factory("stressreal", {})


@pytest.mark.slow
def test_quick_suite_against_the_real_daemon(stress_daemon: Any, tmp_path: Path) -> None:
    out = tmp_path / "results"
    code = scenario_all.run_all("", str(out), ["--socket", str(stress_daemon.socket), "--no-live"], quick=True)
    summary = json.loads((out / "summary.json").read_text())
    assert [row["scenario"] for row in summary["scenarios"]] == scenario_all.SCENARIOS
    known: list[str] = []
    for row in summary["scenarios"]:
        assert row["report"], f"{row['scenario']} wrote no report: {row}"
        report = json.loads(Path(row["report"]).read_text())
        assert report["schema"] == "pirag-stress/1" and report["scenario"] == row["scenario"]
        assert report["totals"]["requests"] > 0 and report["daemon"]["pid"] > 0
        assert report["series"]["monitor"]["rss_mb"], "the monitor sampled nothing"
        assert Path(report["files"]["markdown"]).read_text().startswith("# pirag-stress")
        plots = report["files"].get("plots", [])
        assert len(plots) >= 3 and all(Path(p).stat().st_size > 1000 for p in plots), report["files"]
        for check in report["checks"]:
            if check["passed"]:
                continue
            why = KNOWN_DAEMON_DEFECTS.get((row["scenario"], check["name"]))
            assert why, f"{row['scenario']}: check {check['name']} failed: {check}"
            known.append(f"{row['scenario']}: {check['name']} ({why})")
    anomaly_report = json.loads(Path(summary["scenarios"][-1]["report"]).read_text())
    verdict = anomaly_report["figures"]["verdict"]
    assert verdict["clean_quiet"] and verdict["all_caught"] and verdict["faults_injected"] == 4, verdict
    if known:
        pytest.xfail("known daemon defects: " + "; ".join(known))
    assert code == 0
