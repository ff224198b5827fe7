"""``pirag watch add|list|remove``: watched folders (client calls only).

``add`` sends absolute paths: the daemon resolves them on its side (they must be under its
``ingest.allowed_roots``), so a relative path means the same as it does for ``ingest``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from pirag.client.errors import RequestTimeout

from .common import EXIT_USAGE, client_from, emit


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "watch", parents=[common], help="keep projects in step with directories (add, list, remove)",
        description="add PATH... --project P: watch directories (their first scan is waited for unless --no-wait); "
                    "list [--project P]: the watches with files, last sync, pending changes, lag, errors; "
                    "remove PATH... | --project P: stop watching (what was ingested stays).")
    p.add_argument("action", choices=("add", "list", "remove"))
    p.add_argument("paths", nargs="*", metavar="PATH")
    p.add_argument("--project", "-p", default="", help="project (required by add)")
    p.add_argument("--no-wait", action="store_true", help="add: return before the first scan is done")
    p.set_defaults(func=_watch)


def _watch(args: argparse.Namespace) -> int | None:
    if args.action == "add" and (not args.paths or not args.project):
        print("pirag watch add: give PATH... and --project", file=sys.stderr)
        return EXIT_USAGE
    if args.action == "remove" and not args.paths and not args.project:
        print("pirag watch remove: give PATH... or --project", file=sys.stderr)
        return EXIT_USAGE
    if args.action == "list" and args.paths:
        print("pirag watch list: takes no PATH (filter with --project)", file=sys.stderr)
        return EXIT_USAGE
    paths = [os.path.abspath(os.path.expanduser(path)) for path in args.paths]
    with client_from(args) as client:
        if args.action == "add":
            try:
                result = client.watch_add(args.project, paths, wait=not args.no_wait)
            except RequestTimeout:  # the watches exist (written before the wait): only the first scan goes on
                print(f"pirag watch add: the first scan is still running after {args.timeout:.0f} s; "
                      "`pirag watch list` follows it", file=sys.stderr)
                return None
            emit(args, result, lambda r: f"{r.added} new watches\n" + watch_table(r.watches))
        elif args.action == "list":
            result = client.watch_list(args.project)
            emit(args, result, lambda r: watch_table(r.watches) if r.watches else "no watches")
        else:
            result = client.watch_remove(paths, project=args.project)
            emit(args, result, lambda r: f"removed {r.removed} watches (the projects keep their contents)")
    return None


def watch_table(watches: list[Any]) -> str:
    """One line per watch (``WatchInfo``, or its dict as ``status`` carries it), and one per error."""
    import msgspec

    from pirag.client.protocol.watch import WatchInfo

    lines = []
    now = time.time()
    for watch in (msgspec.convert(item, WatchInfo) if isinstance(item, dict) else item for item in watches):
        synced = f"{now - watch.last_sync_at:.0f} s ago" if watch.last_sync_at else "never"
        line = (f"{watch.path} -> {watch.project}: {watch.state} ({watch.mode}), {watch.files} files, "
                f"last sync {synced}, {watch.pending} pending, lag {watch.lag_s:.1f} s")
        if watch.last_lag_s is not None:
            line += f" (last sync {watch.last_lag_s:.2f} s after the change)"
        if watch.errors:
            line += f", {watch.errors} errors"
        if watch.error_code or watch.error:
            line += f"\n    {watch.error_code or 'error'}: {watch.error}"
        lines.append(line)
    return "\n".join(lines)
