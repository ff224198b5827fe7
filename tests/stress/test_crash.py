"""``pirag-stress crash --quick``: a few SIGKILLs of a real daemon (real model, real SQLite and Chroma) during an
ingestion job and concurrent remember / log_episode / forget; every check of the scenario must pass
(acknowledged writes all there, forgets not undone, integrity_check ok, document rows equal to an uninterrupted
ingest, the vector index holding exactly SQLite's ids). The full run (20 kills) is ``pirag-stress crash``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pirag.stress import scenario_crash


@pytest.mark.slow
def test_quick_crash_run_loses_nothing(real_daemon: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    models = sorted(real_daemon.state_dir.glob("models/*.gguf"))
    assert models, "the real daemon imported no model"
    code = scenario_crash.main(["--quick", "--check", "--model", str(models[0]), "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    reports = sorted(tmp_path.glob("crash-*.json"))
    assert reports, printed
    report = json.loads(reports[-1].read_text())
    failed = [check for check in report["checks"] if not check["passed"]]
    assert not failed and code == 0, f"{failed}\n{printed[-3000:]}"
    figures = report["figures"]
    assert figures["kills"] == scenario_crash.QUICK["kills"]
    assert figures["facts_acknowledged"] > 0 and figures["episodes_acknowledged"] > 0
    assert figures["chunks"] > 0 and figures["chunks"] == figures["reference_chunks"]
