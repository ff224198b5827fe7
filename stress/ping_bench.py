"""``pirag-stress ping``: pirag's ping round trip beside a bare uvloop + msgspec echo server, in one run.

Both servers are driven by the same raw client (one request at a time per connection), for 1 and for 20
concurrent connections. The echo server is started here on a temporary socket; pirag is the live daemon.
Rounds alternate between the two so machine noise hits both alike; the best round of each is reported.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pirag.client import Client
from pirag.client.paths import default_socket_path

from .measure import print_table, round_trips


def _start_echo(directory: Path) -> tuple[subprocess.Popen[str], str]:
    path = str(directory / "echo.sock")
    process = subprocess.Popen([sys.executable, "-m", "pirag.stress.echo", path], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        process.kill()
        raise RuntimeError("the echo server did not start")
    return process, path


def echo_vs_pirag(socket_path: str, requests: int, rounds: int) -> dict[str, dict[str, dict[str, float]]]:
    """Ping round trips of pirag and of a bare echo server, for 1 and 20 clients, rounds alternating between the
    two so that machine noise hits both alike; the best (lowest p50) round of each."""
    import uvloop

    results: dict[str, dict[str, dict[str, float]]] = {"pirag": {}, "echo": {}}
    with tempfile.TemporaryDirectory(prefix="pe-", dir="/tmp") as directory:
        echo, echo_path = _start_echo(Path(directory))
        try:
            for clients in (1, 20):
                per_client = max(50, requests // clients)
                for _ in range(rounds):
                    for name, path in (("echo", echo_path), ("pirag", socket_path)):
                        figures = uvloop.run(round_trips(path, clients, per_client))
                        best = results[name].get(str(clients))
                        if best is None or figures["p50_us"] < best["p50_us"]:
                            results[name][str(clients)] = figures
        finally:
            echo.terminate()
            echo.wait(10)
    return results


def run(socket_path: str, requests: int, rounds: int) -> dict[str, object]:
    with Client(socket_path) as client:
        daemon_pid = client.status().pid
    results = echo_vs_pirag(socket_path, requests, rounds)
    ratios = {clients: round(results["pirag"][clients]["p50_us"] / results["echo"][clients]["p50_us"], 2)
              for clients in results["pirag"]}
    return {"daemon_pid": daemon_pid, "requests_per_round": requests, "rounds": rounds, "results": results,
            "p50_ratio_pirag_over_echo": ratios, "target_ratio": 1.5,
            "time": time.strftime("%Y-%m-%d %H:%M:%S")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pirag-stress ping", description=__doc__)
    parser.add_argument("--socket", default=str(default_socket_path()))
    parser.add_argument("--requests", type=int, default=20_000, help="round trips per round (split over clients)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    report = run(args.socket, args.requests, args.rounds)
    rows = []
    for clients in ("1", "20"):
        for name in ("echo", "pirag"):
            figures = report["results"][name][clients]  # type: ignore[index]
            rows.append([clients, name, figures["p50_us"], figures["p99_us"], figures["rps"]])
    print_table("ping round trip over the Unix socket (best of rounds)",
                ["clients", "server", "p50 us", "p99 us", "req/s"], rows)
    for clients, ratio in report["p50_ratio_pirag_over_echo"].items():  # type: ignore[union-attr]
        verdict = "meets" if ratio <= 1.5 else "MISSES"
        print(f"pirag/echo p50 with {clients} client(s): {ratio}x ({verdict} the 1.5x target)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0
