"""Reports of a scenario run: per-op latency figures, checks, the JSON report, the Markdown summary, the table.

The JSON report's schema is documented in docs/STRESS_TEST_GUIDE.md ("The JSON report"); ``SCHEMA`` names its
version and changes only when a field changes meaning (new fields may appear at any time).
"""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA = "pirag-stress/1"
MAX_SERIES_SAMPLES = 50_000

Sample = tuple[float, str, float, str]


def op_figures(latencies_ms: Sequence[float], errors: int, elapsed_s: float) -> dict[str, Any]:
    figures: dict[str, Any] = {"count": len(latencies_ms) + errors, "ok": len(latencies_ms), "errors": errors,
                               "rps": round(len(latencies_ms) / elapsed_s, 2) if elapsed_s > 0 else 0.0}
    if latencies_ms:
        array = np.asarray(latencies_ms)
        for name, q in (("p50_ms", 50), ("p95_ms", 95), ("p99_ms", 99)):
            figures[name] = round(float(np.percentile(array, q)), 2)
        figures["max_ms"] = round(float(array.max()), 2)
        figures["mean_ms"] = round(float(array.mean()), 2)
    else:
        figures.update(p50_ms=None, p95_ms=None, p99_ms=None, max_ms=None, mean_ms=None)
    return figures


def latency_table(samples: Sequence[Sample], elapsed_s: float) -> dict[str, dict[str, Any]]:
    """{op: figures} plus "all"; latencies of successful requests only, errors counted apart."""
    by_op: dict[str, list[float]] = defaultdict(list)
    failed: Counter[str] = Counter()
    for _, op, latency, code in samples:
        if code:
            failed[op] += 1
        else:
            by_op[op].append(latency * 1000)
    table = {op: op_figures(by_op.get(op, []), failed.get(op, 0), elapsed_s) for op in sorted(set(by_op) | set(failed))}
    table["all"] = op_figures([x for values in by_op.values() for x in values], sum(failed.values()), elapsed_s)
    return table


def errors_by_code(samples: Sequence[Sample]) -> dict[str, int]:
    return dict(Counter(code for _, _, _, code in samples if code))


@dataclass
class Check:
    name: str
    value: float | int | bool | None
    limit: float | int | bool | None
    op: str               # <= | >= | == | true
    passed: bool = True
    note: str = ""

    def evaluate(self) -> "Check":
        value, limit = self.value, self.limit
        if value is None or (isinstance(value, float) and math.isnan(value)):
            self.passed = False
            self.note = self.note or "no measurement"
        elif self.op == "<=":
            self.passed = value <= limit  # type: ignore[operator]
        elif self.op == ">=":
            self.passed = value >= limit  # type: ignore[operator]
        elif self.op == "==":
            self.passed = value == limit
        elif self.op == "true":
            self.passed = bool(value)
        return self


def checks_passed(checks: Sequence[Check]) -> bool:
    return all(check.passed for check in checks)


def downsample(samples: Sequence[Sample], limit: int = MAX_SERIES_SAMPLES) -> list[Sample]:
    if len(samples) <= limit:
        return list(samples)
    step = len(samples) / limit
    return [samples[int(index * step)] for index in range(limit)]


def host_info() -> dict[str, Any]:
    import os

    return {"platform": platform.platform(), "machine": platform.machine(), "python": sys.version.split()[0],
            "cpus": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()]}


def build_report(*, scenario: str, argv: Sequence[str], params: dict[str, Any], daemon: dict[str, Any],
                 started_wall: float, start: float, end: float, samples: Sequence[Sample],
                 resources: dict[str, Any], figures: dict[str, Any], checks: Sequence[Check],
                 monitor_series: dict[str, list[Any]], extra_series: dict[str, Any] | None = None) -> dict[str, Any]:
    elapsed = max(1e-9, end - start)
    ordered = sorted(samples)
    # rates over the traffic itself (set-up and clean-up excluded)
    traffic_s = (max(t + latency for t, _, latency, _ in ordered) - ordered[0][0]) if ordered else elapsed
    return {
        "schema": SCHEMA,
        "scenario": scenario,
        "command": "pirag-stress " + " ".join([scenario, *argv]),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started_wall)),
        "duration_s": round(elapsed, 2),
        "host": host_info(),
        "daemon": daemon,
        "params": params,
        "totals": {"requests": len(ordered), "errors": sum(1 for s in ordered if s[3]),
                   "traffic_s": round(traffic_s, 2),
                   "throughput_rps": round(sum(1 for s in ordered if not s[3]) / max(traffic_s, 1e-9), 2)},
        "ops": latency_table(ordered, max(traffic_s, 1e-9)),
        "errors_by_code": errors_by_code(ordered),
        "resources": resources,
        "figures": figures,
        "checks": [asdict(check) for check in checks],
        "passed": checks_passed(checks),
        "series": {
            "t0": start,
            "latency": [[round(t - start, 4), op, round(latency * 1000, 3), code]
                        for t, op, latency, code in downsample(ordered)],
            "monitor": _relative_series(monitor_series, start),
            **(extra_series or {}),
        },
        "files": {},
    }


def _relative_series(series: dict[str, list[Any]], start: float) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for key, values in series.items():
        if key in ("t", "status_t"):
            out[key] = [round(v - start, 3) for v in values]
        else:
            out[key] = [round(v, 3) if isinstance(v, float) else v for v in values]
    return out


def write_json(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(report, indent=1, default=_default) + "\n")


def _default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# pirag-stress {report['scenario']}: {'PASS' if report['passed'] else 'FAIL'}", "",
             f"`{report['command']}`, started {report['started_at']}, {report['duration_s']} s; daemon pid "
             f"{report['daemon'].get('pid')} ({report['daemon'].get('model_id', '?')}); host "
             f"{report['host']['machine']}, {report['host']['cpus']} CPUs, load {report['host']['load_avg']}.", "",
             f"Requests {report['totals']['requests']}, errors {report['totals']['errors']}, throughput "
             f"{report['totals']['throughput_rps']} req/s.", "",
             "| op | count | errors | req/s | p50 ms | p95 ms | p99 ms | max ms |", "|---|---|---|---|---|---|---|---|"]
    for op, f in report["ops"].items():
        lines.append(f"| {op} | {f['count']} | {f['errors']} | {_fmt(f['rps'])} | {_fmt(f['p50_ms'])} | "
                     f"{_fmt(f['p95_ms'])} | {_fmt(f['p99_ms'])} | {_fmt(f['max_ms'])} |")
    if report["errors_by_code"]:
        lines += ["", "Errors by code: " + ", ".join(f"{k} {v}" for k, v in report["errors_by_code"].items())]
    resources = report["resources"]
    lines += ["", "## Daemon resources", "", "| figure | value |", "|---|---|"]
    lines += [f"| {key} | {_fmt(value)} |" for key, value in resources.items()]
    if report["figures"]:
        lines += ["", "## Scenario figures", "", "```", json.dumps(report["figures"], indent=1, default=str)[:6000],
                  "```"]
    lines += ["", "## Checks", "", "| check | value | limit | result |", "|---|---|---|---|"]
    for check in report["checks"]:
        lines.append(f"| {check['name']} | {_fmt(check['value'])} | {check['op']} {_fmt(check['limit'])} | "
                     f"{'pass' if check['passed'] else 'FAIL'}{' (' + check['note'] + ')' if check['note'] else ''} |")
    if report["files"].get("plots"):
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in report["files"]["plots"]]
    return "\n".join(lines) + "\n"


def print_final(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"pirag-stress {report['scenario']} ({report['duration_s']} s)")
    for column in ("op", "count", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms"):
        table.add_column(column, justify="right" if column != "op" else "left")
    for op, f in report["ops"].items():
        table.add_row(op, str(f["count"]), str(f["errors"]), _fmt(f["rps"]), _fmt(f["p50_ms"]), _fmt(f["p95_ms"]),
                      _fmt(f["p99_ms"]), _fmt(f["max_ms"]))
    console.print(table)
    resources = report["resources"]
    console.print("daemon: " + ", ".join(f"{key} {_fmt(resources[key])}" for key in (
        "rss_mb_start", "rss_mb_end", "rss_mb_peak", "fds_start", "fds_end", "threads_peak", "cpu_mean_pct",
        "loop_lag_p99_ms_max") if key in resources))
    if report["errors_by_code"]:
        console.print(f"errors by code: {report['errors_by_code']}")
    for key, value in report["figures"].items():
        if not isinstance(value, (list, dict)) or key in ("verdict",):
            console.print(f"  {key}: {value}")
    for check in report["checks"]:
        mark = "[green]pass[/green]" if check["passed"] else "[red]FAIL[/red]"
        console.print(f"  check {check['name']}: {_fmt(check['value'])} {check['op']} {_fmt(check['limit'])} {mark}"
                      + (f" ({check['note']})" if check["note"] else ""))
    console.print(f"[bold]{'PASS' if report['passed'] else 'FAIL'}[/bold]  report: {report['files'].get('json')}")
