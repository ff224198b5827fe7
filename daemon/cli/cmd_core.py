"""``pirag serve``, ``ping``, ``status``, ``version``."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from pirag.client import Client

from .common import EXIT_ERROR, EXIT_OK, EXIT_UNREACHABLE, client_from, emit


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    serve = subparsers.add_parser("serve", parents=[common], help="run the daemon in the foreground")
    serve.add_argument("--config", help="TOML config file (default: built-in defaults; see configs/pirag.toml)")
    serve.add_argument("--state-dir", help="where the databases, indexes and models live")
    serve.set_defaults(func=_serve)

    ping = subparsers.add_parser("ping", parents=[common], help="check that the daemon answers")
    ping.set_defaults(func=_ping)

    status = subparsers.add_parser("status", parents=[common], help="the daemon's figures")
    status.add_argument("--wait", action="store_true",
                        help="wait (up to --timeout seconds) until the daemon is ready; exit 0 then, 1 if it "
                        "answers but is not ready in time, 3 if it never answered")
    status.set_defaults(func=_status)

    version = subparsers.add_parser("version", parents=[common], help="client and daemon versions")
    version.set_defaults(func=_version)


def _serve(args: argparse.Namespace) -> int:
    from pirag.daemon.serve import serve

    return serve(args.config, args.socket, args.state_dir)


def _ping(args: argparse.Namespace) -> None:
    with client_from(args) as client:
        started = time.perf_counter()
        client.ping()
        elapsed_ms = (time.perf_counter() - started) * 1000
    emit(args, {"ok": True, "socket": str(client.socket_path), "round_trip_ms": round(elapsed_ms, 3)},
         lambda value: f"pong from {value['socket']} in {value['round_trip_ms']:.3f} ms")


def _status(args: argparse.Namespace) -> int | None:
    if args.wait:
        return _wait_ready(args)
    with client_from(args) as client:
        status = client.status()
    emit(args, status, _human_status)
    return None


def _wait_ready(args: argparse.Namespace) -> int:
    """Poll ``status`` until ``state`` is ready: the daemon may not even listen yet (a unit starting it)."""
    from pirag.client.errors import ConnectionFailed, RequestTimeout

    deadline = time.monotonic() + args.timeout
    last: Any = None
    reason = "never answered"
    while True:
        left = deadline - time.monotonic()
        try:
            with Client(args.socket, timeout=max(0.5, min(5.0, left))) as client:
                last = client.status()
            if last.state == "ready":
                emit(args, last, _human_status)
                return EXIT_OK
            reason = f"{last.state}" + (f" ({last.state_detail})" if last.state_detail else "")
        except (ConnectionFailed, RequestTimeout) as exc:
            reason = f"not answering ({exc.message})" if last is None else f"stopped answering ({exc.message})"
        if time.monotonic() + 0.2 > deadline:
            print(f"pirag: the daemon is not ready after {args.timeout:g} s: {reason}", file=sys.stderr)
            return EXIT_ERROR if last is not None else EXIT_UNREACHABLE
        time.sleep(0.2)


def _version(args: argparse.Namespace) -> None:
    from pirag.client import __version__
    from pirag.client.errors import ConnectionFailed

    value: dict[str, Any] = {"client": __version__}
    try:
        with client_from(args) as client:
            hello = client.hello()
        value.update(daemon=hello.server_version, protocol=hello.protocol)
    except ConnectionFailed:
        value["daemon"] = None
    emit(args, value, lambda v: f"pirag {v['client']} (daemon: {v['daemon'] or 'not reachable'})")


def _human_status(status: Any) -> str:
    def mib(value: int) -> str:
        return f"{value / (1 << 20):.1f} MiB"

    lines = [
        f"pirag {status.version} (protocol {status.protocol}), pid {status.pid}, up {_duration(status.uptime_s)}",
        f"state       {status.state or '?'}" + (f": {status.state_detail}" if status.state_detail else ""),
        f"socket      {status.socket}",
        f"state dir   {status.state_dir}",
        f"memory      RSS {mib(status.rss_bytes)}",
        f"connections {status.connections} open, {status.connections_total} since start; "
        f"{status.inflight} requests in flight",
        f"loop lag    p50 {status.loop_lag.p50_ms:.2f} ms, p99 {status.loop_lag.p99_ms:.2f} ms",
        "requests    " + (", ".join(f"{op} {n}" for op, n in sorted(status.requests_by_op.items())) or "none"),
        "errors      " + (", ".join(f"{code} {n}" for code, n in sorted(status.errors_by_code.items())) or "none"),
    ]
    for name, figures in sorted(status.components.items()):
        shown = ", ".join(f"{key} {value}" for key, value in figures.items()
                          if not isinstance(value, (dict, list)) and key != "status_line")
        lines.append(f"{name:<11} {shown}")
    watches = status.components.get("watch", {}).get("watches")
    if watches:
        from .cmd_watch import watch_table

        lines.extend("  " + line for line in watch_table(watches).splitlines())
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return (f"{days}d " if days else "") + f"{hours:02d}:{minutes:02d}:{secs:02d}"
