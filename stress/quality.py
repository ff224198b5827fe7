"""``pirag-stress quality``: retrieval quality over the live socket, per task and per mode, with latency.

    pirag-stress quality [--socket PATH] [--data locomo_dev.json] [--tasks ...] [--json out.json]

Without ``--socket`` a temporary daemon is started (``pirag serve`` on a fresh state directory under /tmp, the
default model unless ``--model``) and stopped at the end. Each task loads its records through the ordinary ops
(``import_memory`` for turns, ``ingest`` for files), waits until every record is embedded, then asks every
question in each mode (hybrid, vector, keyword) and reports, per task and mode:

- R@1 / R@5 / R@10: the share of questions with at least one answer among the top 1 / 5 / 10 results;
- MRR: the mean of 1 / rank of the first answer in the top 10 (0 when absent);
- p50 / p99: the client's round trip of the query, milliseconds.

Tasks: ``locomo-episodes`` (turns as episodes, ``recall_episodes``), ``locomo-facts`` (turns as facts,
``recall``), ``code`` (stdlib with docstrings blanked, ``search``; the defining file), ``identifiers`` (planted
identifiers, whole and in part), ``phrase`` (a phrase appended by an edit and re-ingested). See quality_data.py.
This module only uses the client (DESIGN.md: stress never imports daemon code).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pirag.client import Client
from pirag.client.protocol.documents import DocumentIn
from pirag.client.protocol.memory import ExportedEpisode, ExportedFact

from . import quality_data as data
from .measure import percentile
from .techniques import Daemon

MODES = ("hybrid", "vector", "keyword")
TASKS = ("locomo-episodes", "locomo-facts", "code", "identifiers", "phrase")
DEFAULT_DATA = "/work/shared/data/locomo_dev.json"
K = 10

Ask = Callable[[Client, str, str, str], list[str]]   # (client, project, question, mode) -> keys, best first


class ModeUnsupported(Exception):
    """The daemon ignored the mode (an older daemon without one-sided search): not measured, said so."""


def score(ranked: list[list[str]], questions: list[data.Question]) -> dict[str, float]:
    hits = {1: 0, 5: 0, 10: 0}
    reciprocal = 0.0
    for keys, question in zip(ranked, questions):
        first = next((rank for rank, key in enumerate(keys[:K], start=1) if key in question.answers), None)
        if first is None:
            continue
        reciprocal += 1.0 / first
        for k in hits:
            hits[k] += first <= k
    n = max(1, len(questions))
    return {"R@1": round(hits[1] / n, 3), "R@5": round(hits[5] / n, 3), "R@10": round(hits[10] / n, 3),
            "MRR": round(reciprocal / n, 3), "n": len(questions)}


def run_questions(client: Client, questions: list[data.Question], scope: Callable[[data.Question], str],
                  ask: Ask, modes: tuple[str, ...]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for mode in modes:
        ranked: list[list[str]] = []
        latencies: list[float] = []
        try:
            for question in questions:
                started = time.perf_counter()
                keys = ask(client, scope(question), question.text, mode)
                latencies.append(time.perf_counter() - started)
                ranked.append(keys)
        except ModeUnsupported as exc:
            results[mode] = {"unsupported": str(exc)}
            continue
        figures = score(ranked, questions)
        figures["p50_ms"] = round(percentile(latencies, 50) * 1000, 2)
        figures["p99_ms"] = round(percentile(latencies, 99) * 1000, 2)
        results[mode] = figures
    return results


def _check_mode(mode: str, hits: list[Any]) -> None:
    if mode == "vector" and any(hit.keyword_rank is not None for hit in hits) or \
            mode == "keyword" and any(hit.vector_rank is not None for hit in hits):
        raise ModeUnsupported(f"the daemon answered {mode!r} with both sides (it has no one-sided search)")


def wait_embedded(client: Client, what: str, target: int, timeout: float = 1800) -> None:
    """Until the memory component reports ``target`` embedded episodes (facts are embedded on import)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        memory = client.status().components.get("memory", {})
        if int(memory.get(what, 0)) >= target:
            return
        time.sleep(0.5)
    raise RuntimeError(f"{what} did not reach {target} within {timeout:.0f} s")


# -- tasks ------------------------------------------------------------------------------------------------

def locomo(client: Client, conversations: list[data.Conversation], tag: str, as_facts: bool,
           modes: tuple[str, ...]) -> dict[str, Any]:
    prefix = "f" if as_facts else "e"
    records: list[Any] = []
    key_of: dict[str, str] = {}
    for conversation in conversations:
        project = f"{tag}-locomo-{conversation.id}"
        for dia_id, speaker, text, stamp, session in conversation.turns:
            record = data.record_id(prefix, conversation.id, dia_id)
            key_of[record] = dia_id
            content = f"{speaker}: {text}"
            if as_facts:
                records.append(ExportedFact(id=record, project=project, content=content, created_at=stamp,
                                            updated_at=stamp))
            else:
                records.append(ExportedEpisode(id=record, session=f"{project}-s{session}", project=project,
                                               kind="message", role=speaker, content=content, timestamp=stamp))
    before = int(client.status().components.get("memory", {}).get("episodes_embedded", 0))
    loaded = 0
    started = time.perf_counter()
    for start in range(0, len(records), 1000):
        result = client.import_memory(records[start:start + 1000])
        loaded += result.facts if as_facts else result.episodes
    if not as_facts:
        wait_embedded(client, "episodes_embedded", before + loaded)
    load_s = time.perf_counter() - started
    questions = [(conversation.id, question) for conversation in conversations for question in conversation.questions]
    project_of = {id(question): f"{tag}-locomo-{cid}" for cid, question in questions}

    def ask(client: Client, project: str, query: str, mode: str) -> list[str]:
        if as_facts:
            facts = client.recall(query, project=project, k=K, mode=mode).facts
            _check_mode(mode, facts)
            return [key_of.get(hit.fact.id, "") for hit in facts]
        episodes = client.recall_episodes(query, project=project, k=K, mode=mode).episodes
        _check_mode(mode, episodes)
        return [key_of.get(hit.episode.id, "") for hit in episodes]

    results = run_questions(client, [q for _, q in questions], lambda q: project_of[id(q)], ask, modes)
    return {"records": loaded, "load_s": round(load_s, 1), "modes": results}


def ingest_files(client: Client, project: str, files: dict[str, str]) -> dict[str, int]:
    totals = {"chunks_total": 0, "chunks_embedded": 0}
    names = list(files)
    for start in range(0, len(names), 40):
        result = client.ingest(project, documents=[DocumentIn(source=name, text=files[name])
                                                   for name in names[start:start + 40]], wait=True)
        totals["chunks_total"] += result.chunks_total
        totals["chunks_embedded"] += result.chunks_embedded
    return totals


def search_asker(per_file: int | None) -> Ask:
    """Asks ``search`` for the top K hits (``per_file``: chunks of one file per result; None: the daemon's
    ``search.per_file``) and returns their sources as the daemon ranked them: a file counts where its first
    chunk ranks."""
    def ask(client: Client, project: str, query: str, mode: str) -> list[str]:
        hits = client.search(query, project, k=K, use_cache=False, mode=mode, per_file=per_file).hits
        _check_mode(mode, hits)
        return [hit.source for hit in hits]
    return ask


def code(client: Client, tag: str, limit: int, modes: tuple[str, ...], search_ask: Ask) -> dict[str, Any]:
    files, questions = data.code_search_task(limit)
    project = f"{tag}-code"
    started = time.perf_counter()
    ingested = ingest_files(client, project, files)
    load_s = time.perf_counter() - started
    results = run_questions(client, questions, lambda q: project, search_ask, modes)
    return {"files": len(files), **ingested, "load_s": round(load_s, 1), "modes": results}


def exact(client: Client, tag: str, modes: tuple[str, ...], search_ask: Ask) -> tuple[dict[str, Any], dict[str, Any]]:
    files, questions = data.exact_task()
    project = f"{tag}-exact"
    ingest_files(client, project, files)
    identifiers: dict[str, Any] = {"files": len(files)}
    for form in ("whole", "part"):
        asked = [q for q in questions if q.category == form]
        identifiers[form] = run_questions(client, asked, lambda q: project, search_ask, modes)
    identifiers["modes"] = identifiers["whole"]
    edit = ingest_files(client, project, data.edited(files))
    question = data.Question(data.PHRASE_QUESTION, {data.PHRASE_FILE})
    phrase = {"re_embedded_chunks": edit["chunks_embedded"],
              "modes": run_questions(client, [question], lambda q: project, search_ask, modes)}
    return identifiers, phrase


# -- report -----------------------------------------------------------------------------------------------

def table(report: dict[str, Any]) -> str:
    lines = ["| task | mode | R@1 | R@5 | R@10 | MRR | p50 ms | n |", "|---|---|---|---|---|---|---|---|"]
    rows: list[tuple[str, dict[str, Any]]] = []
    for task, figures in report["tasks"].items():
        if task == "identifiers":
            rows += [("identifiers (whole)", figures["whole"]), ("identifiers (part)", figures["part"])]
        else:
            rows.append((task, figures["modes"]))
    for name, modes in rows:
        for mode, f in modes.items():
            if "unsupported" in f:
                lines.append(f"| {name} | {mode} | n/a: {f['unsupported']} | | | | | |")
                continue
            lines.append(f"| {name} | {mode} | {f['R@1']:.3f} | {f['R@5']:.3f} | {f['R@10']:.3f} | "
                         f"{f['MRR']:.3f} | {f['p50_ms']} | {f['n']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pirag-stress quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--socket", help="a running daemon (default: start a temporary one)")
    parser.add_argument("--model", default="", help="GGUF model of the temporary daemon (default: the embedded one)")
    parser.add_argument("--data", default=DEFAULT_DATA, help="LoCoMo-format conversations (locomo_dev.json's format)")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)}")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--code-queries", type=int, default=400, help="code-search questions (spread over all)")
    parser.add_argument("--per-file", type=int, help="chunks of one file per search result (default: the daemon's)")
    parser.add_argument("--tag", default=f"q{os.getpid()}", help="prefix of the benchmark's projects")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark's projects afterwards")
    parser.add_argument("--json", help="write the report here")
    args = parser.parse_args(argv)
    tasks = [task for task in args.tasks.split(",") if task]
    unknown = set(tasks) - set(TASKS)
    if unknown:
        parser.error(f"unknown tasks {sorted(unknown)}")
    modes = tuple(mode for mode in args.modes.split(",") if mode)
    search_ask = search_asker(args.per_file)
    daemon = None
    root = None
    socket = args.socket
    if socket is None:
        root = Path(tempfile.mkdtemp(prefix="pq-", dir="/tmp"))
        daemon = Daemon("quality", root / "d", args.model, {})
        socket = daemon.socket
    report: dict[str, Any] = {"time": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "load_avg": os.getloadavg(),
                              "data": args.data, "tasks": {}}
    try:
        if daemon is not None:
            daemon.wait_ready(600)
        with Client(socket, timeout=1800) as client:
            status = client.status()
            report["daemon_version"] = client.hello().server_version
            report["model"] = status.components.get("embed", {}).get("model", {}).get("model_id", "")
            conversations = data.load_locomo(Path(args.data)) if any(t.startswith("locomo") for t in tasks) else []
            for task in tasks:
                started = time.perf_counter()
                if task == "locomo-episodes":
                    report["tasks"][task] = locomo(client, conversations, args.tag, False, modes)
                elif task == "locomo-facts":
                    report["tasks"][task] = locomo(client, conversations, args.tag, True, modes)
                elif task == "code":
                    report["tasks"][task] = code(client, args.tag, args.code_queries, modes, search_ask)
                elif task == "identifiers" or (task == "phrase" and "identifiers" not in tasks):
                    report["tasks"]["identifiers"], report["tasks"]["phrase"] = exact(client, args.tag, modes,
                                                                                      search_ask)
                print(f"# {task}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
                if task in report["tasks"]:
                    print(table({"tasks": {task: report["tasks"][task]}}), file=sys.stderr, flush=True)
            if not args.keep:
                projects = {project.name for project in client.list_projects().projects}
                projects |= {f"{args.tag}-locomo-{conversation.id}" for conversation in conversations}
                for project in sorted(projects):
                    if project.startswith(f"{args.tag}-"):
                        client.drop_project(project)
    finally:
        if daemon is not None:
            daemon.stop()
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)
    report["load_avg_end"] = os.getloadavg()
    print(table(report))
    print(f"load average at start {report['load_avg'][0]:.2f}, at end {report['load_avg_end'][0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=list))
    return 0


if __name__ == "__main__":
    sys.exit(main())
