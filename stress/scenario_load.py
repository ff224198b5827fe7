"""``load``: step the offered request rate up until latency bends (the knee); report the sustainable rate, the
highest step whose p99 stays within ``--target-p99-ms`` with the offered rate achieved and no errors.

Each step runs up to ``--clients`` open-loop clients (at least ~1 req/s each) for ``--step-s`` seconds at (rate / clients) requests/s each.
Latency is measured from each request's scheduled start, so once the daemon falls behind the queueing delay
shows up in p99 (no coordinated omission). Rates go ``--start-rate`` x ``--factor`` ... up to ``--max-rate``;
the run stops at the first step past the knee (p99 over target, achieved < 90 % of offered, or errors > 1 %).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np

from .report import Check
from .scenario_base import Outcome, Run, scenario_main
from .scenario_concurrent import cleanup, parse_mix, seed_project

NAME = "load"
QUICK = {"start_rate": 4.0, "max_rate": 16.0, "step_s": 3.0, "clients": 4, "target_p99_ms": 2000.0, "min_sustainable_rps": 0.0,
         "mix": "search=40,recall=20,timeline=20,remember=10,log_episode=10"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=int, default=16, help="connections sharing the offered rate")
    parser.add_argument("--start-rate", type=float, default=2.0, help="first step, requests/s (default 2)")
    parser.add_argument("--factor", type=float, default=1.5, help="rate multiplier per step (default 1.5)")
    parser.add_argument("--max-rate", type=float, default=2000.0, help="last step at most, requests/s")
    parser.add_argument("--step-s", type=float, default=10.0, help="seconds per step (default 10)")
    parser.add_argument("--target-p99-ms", type=float, default=500.0, help="p99 the sustainable rate must meet")
    parser.add_argument("--mix", default="", help="op weights (default: the realistic mix of `concurrent`)")
    parser.add_argument("--min-sustainable-rps", type=float, default=1.0, help="check: sustainable rate at least")


def step_figures(samples: list[Any], offered: float, seconds: float, clients: int) -> dict[str, Any]:
    ok = [s[2] * 1000 for s in samples if not s[3]]
    errors = sum(1 for s in samples if s[3])
    return {"offered_rps": round(offered, 2), "clients": clients, "achieved_rps": round(len(ok) / seconds, 2), "requests": len(samples),
            "errors": errors, "p50_ms": round(float(np.percentile(ok, 50)), 2) if ok else None,
            "p99_ms": round(float(np.percentile(ok, 99)), 2) if ok else None}


def run(run: Run, args: argparse.Namespace) -> Outcome:
    project = f"{args.tag}-docs"
    seed_project(run, project)
    mix = parse_mix(args.mix)
    steps: list[dict[str, Any]] = []
    rate = args.start_rate
    knee = None
    while rate <= args.max_rate * 1.0001:
        # at least ~1 req/s per client: a handful of requests per client and step would make the achieved
        # rate depend on each client's random phase more than on the daemon
        clients = max(1, min(args.clients, int(rate)))
        per_client = rate / clients
        # phase: each step its own texts (a step replaying the last one's would be served by its caches)
        specs = run.specs(clients, args.step_s, mix, projects=[project], rate=per_client,
                          max_ops=int(per_client * args.step_s) + 2, phase=len(steps) + 1)
        _, _, samples = run.traffic(specs, f"{rate:.1f} req/s offered")
        step = step_figures(samples, rate, args.step_s, clients)
        within = (step["p99_ms"] is not None and step["p99_ms"] <= args.target_p99_ms
                  and step["achieved_rps"] >= 0.9 * rate and step["errors"] <= 0.01 * max(1, step["requests"]))
        step["within_target"] = within
        steps.append(step)
        print(f"[load] offered {rate:.1f} req/s: achieved {step['achieved_rps']}, p50 {step['p50_ms']} ms, "
              f"p99 {step['p99_ms']} ms, errors {step['errors']} -> {'ok' if within else 'past the knee'}", flush=True)
        if not within:
            knee = rate
            break
        rate *= args.factor
        time.sleep(0.5)
    sustainable = max((s["offered_rps"] for s in steps if s["within_target"]), default=0.0)
    figures = {"steps": steps, "sustainable_rps": sustainable, "knee_rps": knee,
               "target_p99_ms": args.target_p99_ms,
               "note": "no knee below --max-rate" if knee is None else "knee: first step past the target"}
    figures["cleanup"] = cleanup(run, [project])
    checks = [Check("sustainable rate (req/s) at p99 <= target", sustainable, args.min_sustainable_rps, ">="),
              Check("daemon alive", run.monitor.process.is_running(), True, "true")]
    return Outcome(figures=figures, checks=checks)


def main(argv: list[str] | None = None) -> int:
    return scenario_main(sys.modules[__name__], argv)
