"""``anomaly-detection``: a clean run, then the same traffic with injected faults; robust statistics over the
latency and resource series must flag every fault and nothing in the clean run.

Traffic: ``--clients`` open-loop clients at ``--rate`` requests/s each, on cheap ops (cached searches, recall,
timeline, ping) so that the normal range is narrow. Faults, injected by the harness itself at known times:

- ``garbage``: connections that send frames that are not msgpack (the daemon answers malformed_frame, closes);
- ``slowloris``: connections that announce a frame and dribble its bytes one at a time, then give up;
- ``vanish``: connections that send requests (uncached searches) and reset the socket before the replies;
- ``sigstop``: the daemon paused with SIGSTOP for ``--stop-s`` seconds, then SIGCONT (pid from ``status``; needs
  the daemon's uid or root; skipped and reported otherwise).

The detector (``anomaly.detect``) is not told when: it sees per-window latency p90 and client errors, and the
monitor's series (daemon error and new-connection counts per poll, open connections, FDs, event-loop lag p99,
the status round trip). A fault is caught when a detected interval overlaps it (1 s before to 3 s after).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import struct
import sys
import threading
import time
from typing import Any

import msgspec

from . import anomaly
from .anomaly import Signal
from .report import Check
from .scenario_base import Outcome, Run, scenario_main

NAME = "anomaly-detection"
QUICK = {"clean": 10.0, "faulty": 22.0, "gap": 3.0, "clients": 4, "rate": 5.0}
MIX = {"search": 40, "recall": 20, "timeline": 20, "ping": 20}
HEADER = struct.Struct(">I")
FAULTS = ("garbage", "slowloris", "vanish", "sigstop")

SIGNALS = [
    Signal("latency_p90_ms", z=8, abs_min=800.0, rel_min=3.0),
    Signal("client_errors", z=8, abs_min=2.0),
    Signal("daemon_errors", z=8, abs_min=2.0),
    Signal("new_connections", z=8, abs_min=4.0),
    Signal("connections", z=8, abs_min=5.0, level=True),
    Signal("fds", z=8, abs_min=6.0, level=True),
    Signal("loop_lag_p99_ms", z=8, abs_min=800.0, rel_min=3.0),
    Signal("status_rtt_ms", z=8, abs_min=1000.0, rel_min=5.0),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--rate", type=float, default=5.0, help="requests/s per client (open loop)")
    parser.add_argument("--clean", type=float, default=30.0, help="seconds of the clean run")
    parser.add_argument("--faulty", type=float, default=48.0, help="seconds of the run with faults")
    parser.add_argument("--gap", type=float, default=8.0, help="seconds between faults")
    parser.add_argument("--faults", default=",".join(FAULTS), help="which faults to inject")
    parser.add_argument("--stop-s", type=float, default=2.0, help="SIGSTOP length, seconds")
    parser.add_argument("--fault-connections", type=int, default=8, help="connections per socket fault")


# ------------------------------------------------------------------------------------------------------------
# faults


def _connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(2.0)
    sock.connect(path)
    return sock


def garbage(path: str, connections: int, _: Any) -> str:
    sent = 0
    for number in range(connections):
        try:
            with _connect(path) as sock:
                body = b"\xc1" * 16 if number % 2 else os.urandom(64).replace(b"\x80", b"\xc1")
                sock.sendall(HEADER.pack(len(body)) + body)
                try:
                    sock.recv(4096)  # the error frame, then the daemon closes
                except OSError:
                    pass
                sent += 1
        except OSError:
            pass
    return f"{sent} connections sent non-msgpack frames"


def slowloris(path: str, connections: int, hold_s: float) -> str:
    socks = []
    for _ in range(connections):
        try:
            sock = _connect(path)
            sock.sendall(HEADER.pack(200))
            socks.append(sock)
        except OSError:
            pass
    deadline = time.monotonic() + hold_s
    while time.monotonic() < deadline:
        for sock in socks:
            try:
                sock.sendall(b"\x82")
            except OSError:
                pass
        time.sleep(0.5)
    for sock in socks:
        sock.close()
    return f"{len(socks)} connections dribbled a frame for {hold_s:.1f} s"


def vanish(path: str, connections: int, project: str) -> str:
    encode = msgspec.msgpack.Encoder().encode
    vanished = 0
    for number in range(connections):
        try:
            sock = _connect(path)
            for request in range(4):
                body = encode({"id": request + 1, "op": "search", "args": {
                    "query": f"vanishing client {number} request {request} {time.monotonic()}",
                    "projects": [project], "use_cache": False}})
                sock.sendall(HEADER.pack(len(body)) + body)
            # reset, not a polite close: the replies have nowhere to go
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            vanished += 1
        except OSError:
            pass
    return f"{vanished} connections reset with 4 searches in flight"


def sigstop(pid: int, seconds: float) -> str:
    try:
        os.kill(pid, signal.SIGSTOP)
    except PermissionError:
        return "skipped: no permission to signal the daemon (run as its user or root)"
    try:
        time.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)
    return f"daemon stopped for {seconds:.1f} s"


def inject(run: Run, args: argparse.Namespace, phase_start: float, project: str,
           faults: list[dict[str, Any]], stop: threading.Event) -> None:
    kinds = [kind for kind in args.faults.split(",") if kind]
    at = phase_start + 4.0
    for kind in kinds:
        if stop.wait(max(0.0, at - time.monotonic())):
            return
        started = time.monotonic()
        if kind == "garbage":
            note = garbage(run.socket, args.fault_connections, None)
        elif kind == "slowloris":
            note = slowloris(run.socket, args.fault_connections, min(4.0, args.gap - 1))
        elif kind == "vanish":
            note = vanish(run.socket, args.fault_connections, project)
        elif kind == "sigstop":
            note = sigstop(run.daemon["pid"], args.stop_s)
        else:
            note = "unknown fault"
        faults.append({"kind": kind, "start": started, "end": time.monotonic(), "note": note,
                       "skipped": note.startswith("skipped") or note == "unknown fault"})
        at = time.monotonic() + args.gap


# ------------------------------------------------------------------------------------------------------------
# detection


def series_for(run: Run, samples: list[Any], start: float, end: float) -> dict[str, tuple[list[float], list[Any]]]:
    windows = anomaly.latency_windows(samples, start, end)
    monitor = run.monitor.series(start, end)
    status_t = monitor["status_t"]
    return {
        "latency_p90_ms": (windows["t"], windows["p90_ms"]),
        "client_errors": (windows["t"], windows["errors"]),
        "daemon_errors": (status_t, anomaly.deltas(monitor["status_errors"])),
        "new_connections": (status_t, anomaly.deltas(monitor["status_connections_total"])),
        "connections": (status_t, monitor["status_connections"]),
        "fds": (monitor["t"], monitor["fds"]),
        "loop_lag_p99_ms": (status_t, monitor["status_loop_lag_p99_ms"]),
        "status_rtt_ms": (status_t, monitor["status_took_ms"]),
    }


def analyse(run: Run, samples: list[Any], start: float, end: float) -> tuple[anomaly.Detection, dict[str, Any]]:
    series = series_for(run, samples, start, end)
    # The first 2 s hold connection set-up and cold caches: baselines include them, flags do not.
    detection = anomaly.detect(series, SIGNALS, ignore_before=start + 2.0)
    windows = anomaly.latency_windows(samples, start, end)
    return detection, {"t": [round(t - run.start, 2) for t in windows["t"]],
                       "p90_ms": [None if x != x else round(x, 2) for x in windows["p90_ms"]]}


def event_dict(event: anomaly.Event, origin: float) -> dict[str, Any]:
    return {"signal": event.signal, "kind": event.kind, "start": round(event.start, 3), "end": round(event.end, 3),
            "at_s": round(event.start - origin, 2), "peak": round(event.peak, 2), "baseline": round(event.baseline, 2),
            "score": event.score}


def run(run: Run, args: argparse.Namespace) -> Outcome:
    project = f"{args.tag}-docs"
    from .scenario_concurrent import cleanup, seed_project

    seed_project(run, project, documents=6)
    common = dict(projects=[project], rate=args.rate, max_ops=int((args.clean + args.faulty) * args.rate) + 10,
                  bounded=True, cache_fraction=1.0)
    clean_start, clean_end, clean = run.traffic(run.specs(args.clients, args.clean, MIX, **common), "clean run")
    time.sleep(1.0)

    faults: list[dict[str, Any]] = []
    stop = threading.Event()
    phase_start = time.monotonic()
    injector = threading.Thread(target=inject, args=(run, args, phase_start + 1.5, project, faults, stop), daemon=True)
    injector.start()
    faulty_start, faulty_end, faulty = run.traffic(run.specs(args.clients, args.faulty, MIX, **common), "with faults")
    stop.set()
    injector.join(timeout=30)

    clean_detection, clean_windows = analyse(run, clean, clean_start, clean_end)
    faulty_detection, faulty_windows = analyse(run, faulty, faulty_start, faulty_end)
    injected = [fault for fault in faults if not fault["skipped"]]
    matched, unexplained = anomaly.match_faults(faulty_detection.events, injected)
    all_events = clean_detection.events + faulty_detection.events
    figures = {
        "faults": [{**f, "at_s": round(f["start"] - run.start, 2), "length_s": round(f["end"] - f["start"], 2)}
                   for f in faults],
        "caught": {f["kind"]: {"caught": f["caught"], "signals": f["signals"]} for f in matched},
        "skipped_faults": [f["kind"] for f in faults if f["skipped"]],
        "clean_events": [event_dict(e, run.start) for e in clean_detection.events],
        "unexplained_events": [event_dict(e, run.start) for e in unexplained],
        "events": [event_dict(e, run.start) for e in all_events],
        "baselines_clean": clean_detection.baselines,
        "signals": [vars(s) for s in SIGNALS],
        "verdict": {"clean_quiet": not clean_detection.events, "all_caught": all(f["caught"] for f in matched),
                    "faults_caught": sum(f["caught"] for f in matched), "faults_injected": len(matched)},
    }
    figures["cleanup"] = cleanup(run, [project])
    checks = [Check("clean run: anomalies flagged", len(clean_detection.events), 0, "=="),
              Check("faults injected", len(injected), len([k for k in args.faults.split(",") if k]), "==",
                    note=", ".join(f"{f['kind']} skipped" for f in faults if f["skipped"]))]
    checks += [Check(f"fault caught: {f['kind']}", f["caught"], True, "true", note=", ".join(f["signals"]))
               for f in matched]
    checks.append(Check("daemon alive", run.monitor.process.is_running(), True, "true"))
    return Outcome(figures=figures, checks=checks,
                   extra_series={"windows": {"t": clean_windows["t"] + faulty_windows["t"],
                                             "p90_ms": clean_windows["p90_ms"] + faulty_windows["p90_ms"]}})


def main(argv: list[str] | None = None) -> int:
    return scenario_main(sys.modules[__name__], argv)
