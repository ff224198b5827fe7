"""What every scenario shares: options, the daemon's identity, the monitor, live progress, reports and checks.

A scenario module defines ``NAME``, ``add_arguments(parser)``, ``QUICK`` (option values for ``--quick``) and
``run(run: Run, args) -> Outcome``; its ``main(argv)`` is ``scenario_main(module, argv)``. ``Run.traffic``
starts worker processes and collects their samples while the live display shows progress; ``Run.finish``
builds the JSON report, the Markdown summary and the plots, prints the final table and returns the exit code
(``--check``: 1 when a check failed).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from pirag.client import Client, default_socket_path
from pirag.client.errors import PiragError

from . import plots, report
from .measure import wait_ready
from .monitor import Monitor, resource_summary
from .report import Check, Sample
from .workers import WorkerSpec, default_workers, run_workers, split_clients

# Reports of the runs made in this process, newest last (``pirag-stress all`` reads them).
REPORTS: list[dict[str, Any]] = []


@dataclass
class Outcome:
    figures: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    extra_series: dict[str, Any] = field(default_factory=dict)
    samples: list[Sample] | None = None      # None: every sample of the run


def common_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("common options")
    group.add_argument("--socket", help="daemon socket (default: $PIRAG_SOCKET or the default path)")
    group.add_argument("--out", default="stress-results", help="directory for reports and plots")
    group.add_argument("--check", action="store_true", help="exit 1 when a threshold check fails")
    group.add_argument("--quick", action="store_true", help="a small run (CI): see the guide for sizes")
    group.add_argument("--workers", type=int, default=0, help="worker processes (0: from the CPU count)")
    group.add_argument("--seed", type=int, default=1)
    group.add_argument("--timeout", type=float, default=60.0, help="client timeout per request, seconds")
    group.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    group.add_argument("--no-live", action="store_true", help="plain progress lines instead of the live display")
    group.add_argument("--tag", default="", help="prefix of projects/sessions this run writes (default: unique)")


def parse(module: ModuleType, argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"pirag-stress {module.NAME}", description=module.__doc__.split("\n\n")[0])
    module.add_arguments(parser)
    common_arguments(parser)
    args = parser.parse_args(list(argv))
    if args.quick:
        for key, value in module.QUICK.items():
            if getattr(args, key) == parser.get_default(key):
                setattr(args, key, value)
    if not args.tag:
        args.tag = f"st{os.getpid()}-{module.NAME.replace('-', '')[:6]}"
    return args


class Live:
    """Live progress: a rich panel on a terminal, a plain line every 5 s otherwise."""

    def __init__(self, run: "Run", enabled: bool):
        self.run = run
        self.enabled = enabled and sys.stdout.isatty()
        self.phase = ""
        self.phase_start = time.monotonic()
        self._live: Any = None
        self._last_line = 0.0

    def __enter__(self) -> "Live":
        if self.enabled:
            from rich.live import Live as RichLive

            self._live = RichLive(self.render(), refresh_per_second=2, transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc_info)

    def figures(self) -> dict[str, Any]:
        now = time.monotonic()
        samples = self.run.samples
        recent = [s for s in samples[-20000:] if s[0] >= now - 5.0]
        latencies = [s[2] * 1000 for s in recent if not s[3]]
        return {
            "phase": self.phase, "elapsed": now - self.phase_start, "requests": len(samples),
            "errors": sum(1 for s in samples if s[3]), "rps_5s": len(latencies) / 5.0,
            "p50": float(np.percentile(latencies, 50)) if latencies else float("nan"),
            "p99": float(np.percentile(latencies, 99)) if latencies else float("nan"),
            **self.run.monitor.latest(),
        }

    def render(self) -> Any:
        from rich.table import Table

        f = self.figures()
        table = Table(title=f"pirag-stress {self.run.scenario}: {f['phase']}", show_header=False)
        table.add_row("elapsed", f"{f['elapsed']:.1f} s", "requests", str(f["requests"]), "errors", str(f["errors"]))
        table.add_row("req/s (5 s)", f"{f['rps_5s']:.1f}", "p50 (5 s)", f"{f['p50']:.1f} ms", "p99 (5 s)",
                      f"{f['p99']:.1f} ms")
        table.add_row("RSS", f"{f.get('rss_mb', 0):.0f} MB", "FDs", str(f.get("fds")), "loop lag p99",
                      f"{f.get('loop_lag_p99_ms', 0):.1f} ms")
        return table

    def tick(self) -> None:
        if self._live is not None:
            self._live.update(self.render())
        elif time.monotonic() - self._last_line >= 5.0:
            self._last_line = time.monotonic()
            f = self.figures()
            print(f"[{self.run.scenario}] {f['phase']} {f['elapsed']:.0f}s: {f['requests']} requests, "
                  f"{f['errors']} errors, {f['rps_5s']:.0f} req/s, p50 {f['p50']:.1f} ms, p99 {f['p99']:.1f} ms, "
                  f"RSS {f.get('rss_mb', 0):.0f} MB", flush=True)


class Run:
    def __init__(self, scenario: str, args: argparse.Namespace, argv: Sequence[str]):
        self.scenario, self.args, self.argv = scenario, args, list(argv)
        self.socket = str(args.socket or default_socket_path())
        self.out_dir = Path(args.out)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.client = Client(self.socket, timeout=max(args.timeout, 30.0))
        wait_ready(self.client)  # a scenario started beside a fresh daemon: its ops answer `unavailable` until then
        status = self.client.status()
        hello = self.client.hello("pirag-stress")
        embed = (status.components or {}).get("embed", {})
        self.daemon = {"pid": status.pid, "version": status.version, "socket": self.socket,
                       "model_id": (embed.get("model") or {}).get("model_id"), "contexts": embed.get("contexts"),
                       "limits": hello.limits, "state_dir": status.state_dir, "uptime_s": status.uptime_s}
        self.monitor = Monitor(self.socket, status.pid)
        self.samples: list[Sample] = []
        self.live = Live(self, enabled=not args.no_live)
        self.started_wall = time.time()
        self.start = time.monotonic()

    def specs(self, clients: int, duration_s: float, mix: dict[str, float], **kwargs: Any) -> list[WorkerSpec]:
        """One spec per worker process, clients spread over them."""
        workers = self.args.workers or default_workers(clients)
        return [WorkerSpec(socket=self.socket, worker=index, clients=count, duration_s=duration_s, mix=mix,
                           timeout_s=self.args.timeout, seed=self.args.seed, tag=self.args.tag, **kwargs)
                for index, count in enumerate(split_clients(clients, workers))]

    def traffic(self, specs: list[WorkerSpec], phase: str,
                until: Any = None) -> tuple[float, float, list[Sample]]:
        """Run the workers to completion (or until ``until()``); (start, end, samples of this phase)."""
        self.live.phase, self.live.phase_start = phase, time.monotonic()
        first = len(self.samples)
        started = time.monotonic()
        run_workers(specs, self.samples.extend, self.live.tick, until=until)
        return started, time.monotonic(), self.samples[first:]

    def finish(self, outcome: Outcome) -> int:
        end = time.monotonic()
        samples = self.samples if outcome.samples is None else outcome.samples
        resources = resource_summary(self.monitor, self.start, end)
        checks = [check.evaluate() for check in outcome.checks]
        params = {key: value for key, value in vars(self.args).items()}
        data = report.build_report(
            scenario=self.scenario, argv=self.argv, params=params, daemon=self.daemon, started_wall=self.started_wall,
            start=self.start, end=end, samples=samples, resources=resources, figures=outcome.figures, checks=checks,
            monitor_series=self.monitor.series(self.start, end), extra_series=outcome.extra_series)
        if self.monitor.errors:
            data["monitor_errors"] = self.monitor.errors[:20]
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(self.started_wall))
        prefix = f"{self.scenario}-{stamp}"
        json_path = self.out_dir / f"{prefix}.json"
        md_path = self.out_dir / f"{prefix}.md"
        if not self.args.no_plots:
            try:
                data["files"]["plots"] = plots.write_plots(data, self.out_dir, prefix)
            except Exception as exc:  # a plot must never hide the figures
                data["files"]["plots_error"] = f"{type(exc).__name__}: {exc}"
        data["files"].update(json=str(json_path), markdown=str(md_path))
        report.write_json(data, json_path)
        md_path.write_text(report.markdown(data))
        report.print_final(data)
        self.report = data
        REPORTS.append(data)
        return 0 if data["passed"] or not self.args.check else 1

    def close(self) -> None:
        self.client.close()


def common_checks(run: Run, samples: Sequence[Sample], max_error_rate: float, max_p99_ms: float | None) -> list[Check]:
    errors = sum(1 for s in samples if s[3])
    checks = [Check("error rate", round(errors / max(1, len(samples)), 5), max_error_rate, "<=")]
    if max_p99_ms is not None:
        latencies = [s[2] * 1000 for s in samples if not s[3]]
        p99 = round(float(np.percentile(latencies, 99)), 2) if latencies else None
        checks.append(Check("p99 ms (all ops)", p99, max_p99_ms, "<="))
    checks.append(Check("daemon alive", run.monitor.process.is_running(), True, "true"))
    return checks


def scenario_main(module: ModuleType, argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(module, argv)
    try:
        run = Run(module.NAME, args, argv)
    except PiragError as exc:
        print(f"pirag-stress: {exc}", file=sys.stderr)
        return 2
    try:
        with run.monitor, run.live:
            outcome = module.run(run, args)
        return run.finish(outcome)
    finally:
        run.close()
