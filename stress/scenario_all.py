"""``quick`` and ``all``: the six scenarios one after another, then one summary (table, summary.json/.md).

``pirag-stress quick`` runs each with ``--quick --check`` (the CI suite: all six well under 2 minutes on a quiet
machine) and exits 1 if any check failed. ``pirag-stress all`` runs them at default size (about 20 minutes
plus the large-file ingestion; ``--quick`` makes it the same as ``quick``; ``--check`` sets the exit code).
Options after the command are passed to every scenario (``--socket``, ``--out``, ``--no-plots``, ...).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from . import scenario_base

SCENARIOS = ["concurrent", "large-files", "load", "project-churn", "memory-leaks", "anomaly-detection"]
MODULES = {"concurrent": "scenario_concurrent", "large-files": "scenario_large_files", "load": "scenario_load",
           "project-churn": "scenario_churn", "memory-leaks": "scenario_leaks",
           "anomaly-detection": "scenario_anomaly"}


def headline(report: dict[str, Any]) -> str:
    figures, everything = report["figures"], report["ops"]["all"]
    name = report["scenario"]
    if name == "concurrent":
        return (f"p50 {everything['p50_ms']} ms, p99 {everything['p99_ms']} ms, {report['totals']['throughput_rps']} "
                f"req/s, {report['totals']['errors']} errors")
    if name == "large-files":
        return "; ".join(f"{i['size_mb']:g} MB in {i['seconds']} s ({i.get('chunks_per_s', '-')} chunks/s)"
                         for i in figures.get("ingests", [])) + f"; peak RSS {figures.get('peak_rss_mb')} MB"
    if name == "load":
        return f"sustainable {figures.get('sustainable_rps')} req/s at p99 <= {figures.get('target_p99_ms')} ms"
    if name == "project-churn":
        return (f"{figures.get('projects_churned')} projects; leftovers {figures.get('leftovers')}; FD delta "
                f"{figures.get('fd_delta')}; RSS delta {figures.get('rss_delta_mb')} MB")
    if name == "memory-leaks":
        return (f"RSS daemon + index worker {figures.get('total_rss_mb_per_10k_ops')} MB/10k ops "
                f"(daemon {figures.get('rss_mb_per_10k_ops')}, USS {figures.get('uss_mb_per_10k_ops')}), "
                f"FDs {figures.get('fds_per_10k_ops')}/10k ops over {figures.get('ops_fitted')} ops")
    if name == "anomaly-detection":
        verdict = figures.get("verdict", {})
        return (f"{verdict.get('faults_caught')}/{verdict.get('faults_injected')} faults caught, clean run "
                f"{'quiet' if verdict.get('clean_quiet') else 'NOT quiet'}")
    return ""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="pirag-stress quick|all", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated scenarios (default: all six)")
    parser.add_argument("--out", default="stress-results")
    known, rest = parser.parse_known_args(argv)
    return run_all(known.only, known.out, rest, quick="--quick" in rest)


def run_all(only: str, out: str, rest: list[str], quick: bool) -> int:
    import importlib

    names = [name for name in (only.split(",") if only else SCENARIOS) if name]
    extra = [arg for arg in rest if arg not in ("--quick", "--check")]
    check = quick or "--check" in rest
    rows = []
    started = time.monotonic()
    for name in names:
        module = importlib.import_module(f"{__package__}.{MODULES[name]}")
        scenario_argv = [*extra, "--out", out] + (["--quick"] if quick else []) + (["--check"] if check else [])
        print(f"\n=== pirag-stress {name} {' '.join(scenario_argv)}", flush=True)
        before = len(scenario_base.REPORTS)
        scenario_started = time.monotonic()
        try:
            code = module.main(scenario_argv)
        except Exception as exc:  # one scenario's crash must not hide the others' results
            print(f"pirag-stress {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            code = 3
        report = scenario_base.REPORTS[-1] if len(scenario_base.REPORTS) > before else None
        rows.append({"scenario": name, "exit_code": code, "passed": bool(report and report["passed"]) and code == 0,
                     "seconds": round(time.monotonic() - scenario_started, 1),
                     "headline": headline(report) if report else "no report",
                     "failed_checks": [c["name"] for c in report["checks"] if not c["passed"]] if report else [],
                     "report": report["files"].get("json") if report else None})
    total = round(time.monotonic() - started, 1)
    summary = {"schema": "pirag-stress-summary/1", "quick": quick, "seconds": total, "scenarios": rows,
               "passed": all(row["passed"] for row in rows)}
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = [f"# pirag-stress {'quick' if quick else 'all'}: {'PASS' if summary['passed'] else 'FAIL'} ({total} s)", "",
             "| scenario | result | seconds | figures | failed checks |", "|---|---|---|---|---|"]
    lines += [f"| {r['scenario']} | {'pass' if r['passed'] else 'FAIL'} | {r['seconds']} | {r['headline']} | "
              f"{', '.join(r['failed_checks'])} |" for r in rows]
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n")

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"pirag-stress {'quick' if quick else 'all'} ({total} s)")
    for column in ("scenario", "result", "s", "figures", "failed checks"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["scenario"], "[green]pass[/green]" if r["passed"] else "[red]FAIL[/red]", str(r["seconds"]),
                      r["headline"], ", ".join(r["failed_checks"]))
    Console().print(table)
    return 0 if summary["passed"] or not check else 1
