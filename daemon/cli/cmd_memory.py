"""``pirag remember``, ``recall``, ``forget``, ``facts``, ``log``, ``timeline``, ``export``, ``import``, ``backup``.

Client calls only (``pirag.client``); ``--json`` prints the raw results. Time filters (``--when``) take ranges
in words: "today", "last week", "past 3 days", "since monday", "2026-11-01..2026-11-20".
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from typing import Any

import msgspec

from pirag.client.errors import InvalidArgument
from pirag.client.protocol.memory import ExportRecord

from .common import client_from, emit

_record_decoder = msgspec.json.Decoder(ExportRecord)
_json = msgspec.json.Encoder()
_IMPORT_BATCH = 500


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("remember", parents=[common], help="keep a fact")
    p.add_argument("content", help="the fact ('-' reads it from stdin)")
    p.add_argument("--project", default="", help="project (default: the global project)")
    p.add_argument("--tag", action="append", default=[], dest="tags", help="a tag (repeatable)")
    p.add_argument("--source", default="", help="where the fact comes from")
    p.add_argument("--importance", type=float, default=0.5, help="0..1 (default 0.5)")
    p.add_argument("--replace", metavar="ID", help="update fact ID with this content instead (keeps history)")
    p.set_defaults(func=_remember)

    p = subparsers.add_parser("recall", parents=[common], help="search facts (vector + keywords)")
    p.add_argument("query")
    p.add_argument("-k", type=int, default=8, help="how many (default 8)")
    p.add_argument("--project", default="")
    p.add_argument("--global", dest="include_global", action="store_true", help="also search the global project")
    p.add_argument("--tag", action="append", default=[], dest="tags")
    p.add_argument("--all-tags", action="store_true", help="facts must carry every --tag (default: any)")
    p.add_argument("--when", default="", help="time range in words, e.g. 'last week'")
    p.add_argument("--mode", choices=["hybrid", "vector", "keyword"], default="hybrid")
    p.set_defaults(func=_recall)

    p = subparsers.add_parser("forget", parents=[common], help="delete facts for real")
    p.add_argument("ids", nargs="+", metavar="ID")
    p.set_defaults(func=_forget)

    p = subparsers.add_parser("facts", parents=[common], help="list facts, or show one with its history")
    p.add_argument("id", nargs="?", help="show this fact")
    p.add_argument("--history", action="store_true", help="with ID: show the superseded versions")
    p.add_argument("--project", default=None, help="only this project ('' for the global one)")
    p.add_argument("--tag", action="append", default=[], dest="tags")
    p.add_argument("--all-tags", action="store_true")
    p.add_argument("--when", default="")
    p.add_argument("--oldest", action="store_true", help="oldest first")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=_facts)

    p = subparsers.add_parser("log", parents=[common], help="append an episode to the timeline")
    p.add_argument("content", help="what happened ('-' reads stdin)")
    p.add_argument("--session", default="default")
    p.add_argument("--kind", default="message", help="message, action, decision, error, observation, ...")
    p.add_argument("--role", default="")
    p.add_argument("--project", default="")
    p.add_argument("--at", type=float, default=None, help="Unix time of the event (default: now)")
    p.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_log)

    p = subparsers.add_parser("timeline", parents=[common], help="show episodes (or search them with --query)")
    p.add_argument("--session")
    p.add_argument("--project", default=None)
    p.add_argument("--kind", action="append", default=[], dest="kinds")
    p.add_argument("--when", default="")
    p.add_argument("--oldest", action="store_true")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--query", help="search the episodes (vector + keywords) instead of listing them")
    p.add_argument("--sessions", action="store_true", help="list sessions instead of episodes")
    p.set_defaults(func=_timeline)

    p = subparsers.add_parser("export", parents=[common], help="write facts and episodes as JSON Lines")
    p.add_argument("-o", "--output", default="-", help="file (default: stdout)")
    p.add_argument("--project", default=None)
    p.add_argument("--only", choices=["facts", "episodes"])
    p.set_defaults(func=_export)

    p = subparsers.add_parser("import", parents=[common], help="load JSON Lines written by `pirag export`")
    p.add_argument("input", help="file ('-' for stdin)")
    p.set_defaults(func=_import)

    p = subparsers.add_parser("backup", parents=[common], help="online backup of the daemon's SQLite database")
    p.add_argument("path", help="backup file, on the daemon's machine (relative: <state_dir>/backups/PATH)")
    p.set_defaults(func=_backup)


def _text(value: str) -> str:
    return sys.stdin.read() if value == "-" else value


def _day(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


def _fact_line(fact: Any) -> str:
    tags = f" [{', '.join(fact.tags)}]" if fact.tags else ""
    project = f" ({fact.project})" if fact.project else ""
    return f"{fact.id}  {_day(fact.created_at)}{project}{tags}  {fact.content}"


def _remember(args: argparse.Namespace) -> None:
    with client_from(args) as client:
        if args.replace:
            result = client.update_fact(args.replace, content=_text(args.content),
                                        tags=args.tags or None, source=args.source or None)
            emit(args, result, lambda r: f"updated {r.fact.id} (version {r.fact.version})")
            return
        result = client.remember(_text(args.content), project=args.project, tags=args.tags, source=args.source,
                                 importance=args.importance)

    def human(r: Any) -> str:
        if r.duplicate == "exact":
            return f"already known: {r.fact.id}"
        lines = [f"{'merged into' if r.merged else 'remembered'} {r.fact.id}"]
        lines += [f"  near-duplicate {h.fact.id} ({h.similarity:.2f}): {h.fact.content[:80]}"
                  for h in r.near_duplicates]
        return "\n".join(lines)

    emit(args, result, human)


def _recall(args: argparse.Namespace) -> None:
    with client_from(args) as client:
        result = client.recall(args.query, project=args.project, include_global=args.include_global,
                               tags=args.tags, tag_mode="all" if args.all_tags else "any", when=args.when, k=args.k,
                               mode=args.mode)
    emit(args, result, lambda r: "\n".join(f"{h.score:.4f}  {_fact_line(h.fact)}" for h in r.facts) or "(nothing)")


def _forget(args: argparse.Namespace) -> None:
    with client_from(args) as client:
        result = client.forget(*args.ids)
    emit(args, result, lambda r: f"forgot {r.forgotten} fact(s)")


def _facts(args: argparse.Namespace) -> None:
    with client_from(args) as client:
        if args.id:
            result = client.get_fact(args.id, history=args.history)

            def show(r: Any) -> str:
                lines = [_fact_line(r.fact), f"  version {r.fact.version}, source {r.fact.source or '-'}, "
                         f"importance {r.fact.importance}"]
                lines += [f"  v{v.version} until {_day(v.valid_to)}: {v.content}"
                          + (f"  ({v.reason})" if v.reason else "") for v in r.history]
                return "\n".join(lines)

            emit(args, result, show)
            return
        result = client.list_facts(project=args.project, tags=args.tags, tag_mode="all" if args.all_tags else "any",
                                   when=args.when, order="oldest" if args.oldest else "newest", limit=args.limit)
    emit(args, result, lambda r: "\n".join(_fact_line(f) for f in r.facts) or "(no facts)")


def _log(args: argparse.Namespace) -> None:
    metadata: dict[str, Any] = {}
    for item in args.meta:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidArgument(f"--meta wants KEY=VALUE, not {item!r}")
        metadata[key] = value
    with client_from(args) as client:
        result = client.log_episode(_text(args.content), session=args.session, kind=args.kind, role=args.role,
                                    project=args.project, timestamp=args.at, metadata=metadata)
    emit(args, result, lambda r: f"logged {r.episode.id}")


def _episode_line(e: Any) -> str:
    role = f" {e.role}" if e.role else ""
    return f"{_day(e.timestamp)}  {e.session}  {e.kind}{role}: {e.content}"


def _timeline(args: argparse.Namespace) -> None:
    with client_from(args) as client:
        if args.sessions:
            result = client.list_sessions(project=args.project, when=args.when, limit=args.limit)
            emit(args, result, lambda r: "\n".join(
                f"{s.session}  {s.project or '-'}  {s.episodes} episodes  {_day(s.first_at)} .. {_day(s.last_at)}"
                for s in r.sessions) or "(no sessions)")
        elif args.query:
            result = client.recall_episodes(args.query, session=args.session, project=args.project or "",
                                            kinds=args.kinds, when=args.when, k=args.limit)
            emit(args, result, lambda r: "\n".join(f"{h.score:.4f}  {_episode_line(h.episode)}"
                                                   for h in r.episodes) or "(nothing)")
        else:
            result = client.timeline(session=args.session, project=args.project, kinds=args.kinds, when=args.when,
                                     order="oldest" if args.oldest else "newest", limit=args.limit)
            emit(args, result, lambda r: "\n".join(_episode_line(e) for e in r.episodes) or "(no episodes)")


def _export(args: argparse.Namespace) -> None:
    out = sys.stdout.buffer if args.output == "-" else open(args.output, "wb")  # noqa: SIM115
    counts = {"facts": 0, "episodes": 0}
    try:
        with client_from(args) as client:
            for what in ("facts", "episodes"):
                if args.only and args.only != what:
                    continue
                cursor = ""
                while True:
                    page = client.export_memory(what=what, project=args.project, cursor=cursor)
                    for record in page.records:
                        out.write(_json.encode(record) + b"\n")
                    counts[what] += len(page.records)
                    if not page.next_cursor:
                        break
                    cursor = page.next_cursor
    finally:
        if out is not sys.stdout.buffer:
            out.close()
        else:
            out.flush()
    print(f"exported {counts['facts']} facts, {counts['episodes']} episodes", file=sys.stderr)


def _import(args: argparse.Namespace) -> None:
    source = sys.stdin.buffer if args.input == "-" else open(args.input, "rb")  # noqa: SIM115
    totals = {"facts": 0, "episodes": 0, "skipped": 0}
    started = time.monotonic()
    try:
        with client_from(args) as client:
            batch: list[Any] = []
            for number, line in enumerate(source, start=1):
                if not line.strip():
                    continue
                try:
                    batch.append(_record_decoder.decode(line))
                except msgspec.DecodeError as exc:
                    raise InvalidArgument(f"{args.input}:{number}: not an export record: {exc}") from exc
                if len(batch) >= _IMPORT_BATCH:
                    _send(client, batch, totals)
                    batch = []
            if batch:
                _send(client, batch, totals)
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    emit(args, totals, lambda t: f"imported {t['facts']} facts, {t['episodes']} episodes, skipped {t['skipped']} "
                                 f"in {time.monotonic() - started:.1f} s")


def _send(client: Any, batch: list[Any], totals: dict[str, int]) -> None:
    result = client.import_memory(batch)
    totals["facts"] += result.facts
    totals["episodes"] += result.episodes
    totals["skipped"] += result.skipped


def _backup(args: argparse.Namespace) -> None:
    with client_from(args) as client:
        result = client.backup(args.path)
    emit(args, result, lambda r: f"backup written to {r.path} ({r.bytes / 1e6:.1f} MB in {r.seconds:.2f} s)")
