"""``pirag-stress compare --products``: pirag against the MCP memory products a Pi owner would install instead,
the same workload for each, through each product's own MCP tools (product_peers.py says how each is run).

    pirag-stress compare --products [--quick] [--socket PATH] [--json FILE] [--allow-missing] [--only NAME,...]

For every product, pirag included (``pirag-mcp`` against the live daemon):

1. start-up: spawn -> ``initialize`` answered, and spawn -> first answered recall (a fresh, empty store);
2. RSS of 1 session and of 5 concurrent sessions: every process of the product (the session processes and
   their children; pirag's daemon included);
3. store memories from 1 session, then from 5 concurrent sessions on the same store: throughput and errors,
   with "database is locked" and its kin counted apart;
4. recall p50 / p99 over the stored memories, one session;
5. LoCoMo dev (/work/shared/data/locomo_dev.json or ``--locomo``): every turn stored (``speaker: text``), every
   question asked with k=10, the returned text mapped back to the turns it contains; R@5 / R@10 by evidence turn.

Every call is bounded (a timeout per call, a time budget per phase: a phase cut short says so). The table gives
peer, figure, pirag's figure and pirag/peer; the command exits 1 when a product that should run was SKIPPED,
unless ``--allow-missing``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .ingest_bench import WORDS
from .measure import ms, percentile, print_table
from .product_peers import LOCK_ERRORS, PeerUnavailable, PiragMcp, Product, prepare_model, products

QUICK = {"memories": 40, "queries": 20, "sessions": 5, "locomo_conversations": 1, "locomo_turns": 60,
         "locomo_questions": 20, "phase_seconds": 90.0, "call_timeout": 60.0}
FULL = {"memories": 1000, "queries": 200, "sessions": 5, "locomo_conversations": 3, "locomo_turns": 0,
        "locomo_questions": 0, "phase_seconds": 150.0, "call_timeout": 120.0}
DEFAULT_LOCOMO = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "locomo_dev.json"
DUPLICATE_REFUSALS = re.compile(r"duplicate", re.I)
LOCOMO_CANDIDATES = (Path("/work/shared/data/locomo_dev.json"), DEFAULT_LOCOMO)


# ---------------------------------------------------------------------------------------------- sessions

@dataclass
class Session:
    """One MCP session: one product process over stdio, spoken to by the official SDK client."""

    product: Product
    namespace: str
    session: Any
    spawn_to_initialize_ms: float
    spawned_at: float


async def open_session(stack: AsyncExitStack, product: Product, home: Path, data: Path, namespace: str,
                       log: Any, timeout: float) -> Session:
    import anyio
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    command, args, env = product.command(home, data, namespace)
    params = StdioServerParameters(command=command, args=args, env=env, cwd=str(data))
    spawned = time.perf_counter()
    read_stream, write_stream = await stack.enter_async_context(stdio_client(params, errlog=log))
    session = await stack.enter_async_context(ClientSession(read_stream, write_stream))
    with anyio.fail_after(timeout):
        await session.initialize()
    return Session(product, namespace, session, (time.perf_counter() - spawned) * 1e3, spawned)


def result_text(result: Any) -> str:
    parts = [getattr(part, "text", "") or "" for part in result.content]
    if getattr(result, "structuredContent", None):
        parts.append(json.dumps(result.structuredContent, ensure_ascii=False))
    return "\n".join(parts)


class Calls:
    """Counts and classifies the outcome of tool calls (ok, tool error, exception; lock errors apart)."""

    def __init__(self) -> None:
        self.ok = 0
        self.errors = 0
        self.lock_errors = 0
        self.duplicate_refusals = 0     # a product refusing a memory as a (semantic) duplicate: policy, not failure
        self.samples: list[str] = []

    def failed(self, text: str) -> None:
        self.errors += 1
        if LOCK_ERRORS.search(text):
            self.lock_errors += 1
        if DUPLICATE_REFUSALS.search(text):
            self.duplicate_refusals += 1
        if len(self.samples) < 3:
            self.samples.append(text[:300])

    def figures(self) -> dict[str, Any]:
        return {"ok": self.ok, "errors": self.errors, "lock_errors": self.lock_errors,
                "duplicate_refusals": self.duplicate_refusals, "error_samples": self.samples}


async def call(session: Session, name: str, arguments: dict[str, Any], calls: Calls, timeout: float) -> str | None:
    """The tool's text, or None when it failed (counted in ``calls``)."""
    import anyio

    try:
        with anyio.fail_after(timeout):
            result = await session.session.call_tool(name, arguments)
    except TimeoutError:
        calls.failed(f"{name}: no answer within {timeout:.0f} s")
        return None
    except Exception as exc:  # noqa: BLE001 - an MCP error is a failed call, counted, never a crash
        calls.failed(f"{name}: {type(exc).__name__}: {exc}")
        return None
    text = result_text(result)
    if result.isError:
        calls.failed(f"{name}: {text}")
        return None
    calls.ok += 1
    return text


def process_tree_rss(extra_pids: tuple[int, ...] = ()) -> dict[str, Any]:
    """RSS of every process this benchmark started (the product's sessions and their children) plus
    ``extra_pids`` (pirag's daemon)."""
    import psutil

    processes = psutil.Process().children(recursive=True)
    processes += [psutil.Process(pid) for pid in extra_pids if psutil.pid_exists(pid)]
    total = 0
    counted = 0
    for process in processes:
        try:
            total += process.memory_info().rss
            counted += 1
        except psutil.Error:
            continue
    return {"rss_mb": round(total / 1e6, 1), "processes": counted}


# ---------------------------------------------------------------------------------------------- workload

def memory_texts(count: int, nonce: str, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"Note {nonce}-{seed}-{i}: the {' '.join(rng.sample(WORDS, 3))} setting of service "
            f"{rng.choice(WORDS)}{i % 97} is {rng.choice(WORDS)} {rng.randint(1, 9999)}, decided on day {i % 365}."
            for i in range(count)]


async def timed_calls(session: Session, requests: list[tuple[str, dict[str, Any]]], calls: Calls, timeout: float,
                      deadline: float, latencies: list[float]) -> int:
    """The tool calls in order until the deadline; latencies of the answered ones; returns how many were made."""
    made = 0
    for name, arguments in requests:
        if time.monotonic() > deadline:
            break
        t0 = time.perf_counter()
        if await call(session, name, arguments, calls, timeout) is not None:
            latencies.append(time.perf_counter() - t0)
        made += 1
    return made


async def store_many(sessions: list[Session], texts: list[str], start_index: int, calls: Calls, timeout: float,
                     budget_s: float) -> dict[str, Any]:
    """``texts`` stored through ``sessions`` concurrently, round-robin; throughput, errors."""
    import anyio

    deadline = time.monotonic() + budget_s
    latencies: list[float] = []
    made: list[int] = []

    async def drive(session: Session, share: list[tuple[int, str]]) -> None:
        requests = [session.product.store_call(text, index, session.namespace) for index, text in share]
        made.append(await timed_calls(session, requests, calls, timeout, deadline, latencies))

    items = list(enumerate(texts, start=start_index))
    started = time.perf_counter()
    async with anyio.create_task_group() as group:
        for position, session in enumerate(sessions):
            group.start_soon(drive, session, items[position::len(sessions)])
    elapsed = time.perf_counter() - started
    return {"sessions": len(sessions), "attempted": sum(made), "requested": len(texts), "seconds": round(elapsed, 2),
            "stored_per_s": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
            "p50_ms": ms(percentile(latencies, 50)), "p99_ms": ms(percentile(latencies, 99)),
            "cut_short": sum(made) < len(texts)} | calls.figures()


async def recall_many(session: Session, queries: list[str], k: int, timeout: float, budget_s: float) -> dict[str, Any]:
    calls = Calls()
    latencies: list[float] = []
    requests = [session.product.recall_call(query, k, session.namespace) for query in queries]
    made = await timed_calls(session, requests, calls, timeout, time.monotonic() + budget_s, latencies)
    return {"queries": len(latencies), "p50_ms": ms(percentile(latencies, 50)),
            "p99_ms": ms(percentile(latencies, 99)), "cut_short": made < len(queries)} | calls.figures()


# ------------------------------------------------------------------------------------------------ LoCoMo

def load_locomo(path: Path | None) -> dict[str, Any]:
    for candidate in ([path] if path else list(LOCOMO_CANDIDATES)):
        if candidate and candidate.exists():
            return json.loads(candidate.read_text()) | {"path": str(candidate)}
    raise FileNotFoundError("LoCoMo dev set not found (pass --locomo FILE)")


def rank_turns(text: str, needles: list[tuple[str, list[str]]], per_spelling: int = 20) -> list[str]:
    """Turn ids in the order their text first appears in ``text`` (several spellings per turn: plain and
    JSON-escaped). At one position only the longest match counts, so "A: Yes" inside "A: Yes, I did" is not
    a hit for "A: Yes" (a later standalone "A: Yes" is)."""
    occurrences: list[tuple[int, int, str]] = []
    for turn_id, spellings in needles:
        for spelling in spellings:
            position = text.find(spelling) if spelling else -1
            for _ in range(per_spelling):
                if position < 0:
                    break
                occurrences.append((position, -len(spelling), turn_id))
                position = text.find(spelling, position + 1)
    occurrences.sort()
    first: dict[str, int] = {}
    taken: set[int] = set()
    for position, _, turn_id in occurrences:
        if position not in taken:
            taken.add(position)
            first.setdefault(turn_id, position)
    return sorted(first, key=first.__getitem__)


async def locomo_run(product: Product, home: Path, data: Path, locomo: dict[str, Any],
                     sizes: dict[str, Any], nonce: str, log: Any) -> dict[str, Any]:
    hits5 = hits10 = asked = 0
    stored = 0
    calls = Calls()
    timeout = sizes["call_timeout"]
    started = time.perf_counter()
    cut_short = False
    unstored = 0
    per_question: dict[str, list[int]] = {}     # "conversation:question" -> [hit@5, hit@10], to compare on common sets
    for conversation in locomo["conversations"][:sizes["locomo_conversations"]]:
        turns = [(turn_id, f"{speaker}: {text}") for session in conversation["sessions"]
                 for turn_id, speaker, text in session["turns"]]
        if sizes["locomo_turns"]:
            turns = turns[:sizes["locomo_turns"]]
        known = {turn_id for turn_id, _ in turns}
        questions = [(number, *qa) for number, qa in enumerate(conversation["qa"]) if qa[1] and set(qa[1]) <= known]
        if sizes["locomo_questions"]:
            questions = questions[:sizes["locomo_questions"]]
        namespace = f"locomo{conversation['id']}x{nonce}"
        async with AsyncExitStack() as stack:
            session = await open_session(stack, product, home, data, namespace, log, timeout)
            await product.setup(session.session, namespace)
            index_of = {turn_id: index for index, (turn_id, _) in enumerate(turns)}
            batch = max(1, product.locomo_batch)
            deadline = time.monotonic() + sizes["phase_seconds"]     # per conversation: ingest, then questions
            done: set[str] = set()
            for start in range(0, len(turns), batch):
                if time.monotonic() > deadline:
                    cut_short = True
                    break
                contents = [content for _, content in turns[start:start + batch]]
                name, arguments = (product.store_call(contents[0], start, namespace) if batch == 1
                                   else product.store_batch_call(contents, start, namespace))
                if await call(session, name, arguments, calls, timeout) is not None:
                    stored += len(contents)
                done.update(turn_id for turn_id, _ in turns[start:start + batch])
            if len(done) < len(turns):
                # ingest cut short: ask only what the stored turns can answer (said in the figures)
                kept = [qa for qa in questions if set(qa[2]) <= done]
                unstored += len(questions) - len(kept)
                questions = kept
            deadline = time.monotonic() + sizes["phase_seconds"]
            needles = [(turn_id, product.result_keys(content, index_of[turn_id], namespace))
                       for turn_id, content in turns]
            for number, question, evidence, _category in questions:
                if time.monotonic() > deadline:
                    cut_short = True
                    break
                name, arguments = product.recall_call(question, 10, namespace)
                text = await call(session, name, arguments, calls, timeout)
                asked += 1
                ranked = rank_turns(text or "", needles)
                hit5, hit10 = bool(set(ranked[:5]) & set(evidence)), bool(set(ranked[:10]) & set(evidence))
                hits5 += hit5
                hits10 += hit10
                per_question[f"{conversation['id']}:{number}"] = [int(hit5), int(hit10)]
    return {"conversations": min(len(locomo["conversations"]), sizes["locomo_conversations"]), "turns_stored": stored,
            "questions": asked, "recall_at_5": round(hits5 / asked, 3) if asked else None,
            "recall_at_10": round(hits10 / asked, 3) if asked else None, "seconds": round(time.perf_counter() - started, 1),
            "cut_short": cut_short, "questions_dropped_evidence_not_stored": unstored,
            "per_question": per_question} | calls.figures()


# ------------------------------------------------------------------------------------------- per product

async def measure(product: Product, sizes: dict[str, Any], nonce: str, extra_pids: tuple[int, ...],
                  locomo: dict[str, Any] | None, workdir: Path) -> dict[str, Any]:
    home, data = workdir / "home", workdir / "data"
    home.mkdir(parents=True, exist_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    timeout = sizes["call_timeout"]
    figures: dict[str, Any] = {}
    namespace = f"bench{nonce}"
    with open(workdir / "sessions.log", "w") as log:
        async with AsyncExitStack() as stack:
            first = await open_session(stack, product, home, data, namespace, log, timeout)
            await product.setup(first.session, namespace)
            calls = Calls()
            name, arguments = product.recall_call("what was decided about the socket timeout", 5, namespace)
            answered = await call(first, name, arguments, calls, timeout)
            if answered is None:
                raise RuntimeError(f"the first recall failed: {calls.samples[0] if calls.samples else '?'}")
            figures["startup"] = {"spawn_to_initialize_ms": round(first.spawn_to_initialize_ms, 1),
                                  "spawn_to_first_recall_ms": ms(time.perf_counter() - first.spawned_at)}
            figures["rss_1_session"] = process_tree_rss(extra_pids)
            texts = memory_texts(sizes["memories"], nonce, 1)
            figures["store_1_session"] = await store_many([first], texts, 0, Calls(), timeout, sizes["phase_seconds"])
            queries = [f"{' '.join(random.Random(i).sample(WORDS, 3))} setting decided" for i in range(sizes["queries"])]
            figures["recall"] = await recall_many(first, queries, 5, timeout, sizes["phase_seconds"])
            others = []
            init_ms = [first.spawn_to_initialize_ms]
            for _ in range(sizes["sessions"] - 1):
                other = await open_session(stack, product, home, data, namespace, log, timeout)
                init_ms.append(other.spawn_to_initialize_ms)
                others.append(other)
            warm = Calls()
            for other in others:     # each session answers once (loads its model) before RSS is read
                await call(other, *product.recall_call("socket timeout", 5, namespace), warm, timeout)
            figures["rss_5_sessions"] = process_tree_rss(extra_pids) | {"sessions": len(others) + 1,
                                                                         "warm_recall_errors": warm.errors}
            figures["startup"]["spawn_to_initialize_ms_p50_of_5"] = round(percentile(init_ms, 50), 1)
            more = memory_texts(sizes["memories"], nonce, 5)
            figures["store_5_sessions"] = await store_many([first, *others], more, len(texts), Calls(), timeout,
                                                           sizes["phase_seconds"])
    if locomo is not None:
        with open(workdir / "locomo.log", "w") as log:
            figures["locomo"] = await locomo_run(product, home, data, locomo, sizes, nonce, log)
    return figures


def log_tail(workdir: Path) -> str:
    lines: list[str] = []
    for name in ("sessions.log", "locomo.log"):
        try:
            lines += [line for line in (workdir / name).read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            continue
    return " | ".join(lines[-3:])[-400:]


def run_product(product: Product, sizes: dict[str, Any], nonce: str, extra_pids: tuple[int, ...],
                locomo: dict[str, Any] | None, model_dir: Path | None, keep: bool) -> dict[str, Any]:
    import anyio

    entry: dict[str, Any] = {"label": product.label or product.name, "requirement": product.requirement}
    try:
        entry["install_s"] = round(product.install(), 1)
    except PeerUnavailable as exc:
        return entry | {"status": "skipped", "reason": str(exc), "figures": {}}
    workdir = Path(tempfile.mkdtemp(prefix=f"prod-{product.name[:8]}-", dir="/tmp"))
    try:
        if not isinstance(product, PiragMcp):
            if model_dir is None:
                return entry | {"status": "skipped", "reason": "no ONNX model for the product", "figures": {}}
            product.prepare_home(workdir / "home", model_dir)
        started = time.perf_counter()
        figures = anyio.run(measure, product, sizes, nonce, extra_pids, locomo, workdir)
        entry["seconds"] = round(time.perf_counter() - started, 1)
        return entry | {"status": "ok", "reason": None, "figures": figures}
    except Exception as exc:  # noqa: BLE001 - a product that fails to run is SKIPPED with the reason
        return entry | {"status": "skipped", "reason": f"{type(exc).__name__}: {exc}; log: {log_tail(workdir)}",
                        "figures": {}}
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- report

FIGURES = (  # (label, path into figures, lower is better)
    ("spawn -> initialize ms", ("startup", "spawn_to_initialize_ms"), True),
    ("spawn -> first recall ms", ("startup", "spawn_to_first_recall_ms"), True),
    ("RSS MB, 1 session", ("rss_1_session", "rss_mb"), True),
    ("RSS MB, 5 sessions", ("rss_5_sessions", "rss_mb"), True),
    ("store/s, 1 session", ("store_1_session", "stored_per_s"), False),
    ("store/s, 5 sessions", ("store_5_sessions", "stored_per_s"), False),
    ("store errors, 5 sessions", ("store_5_sessions", "errors"), True),
    ("'database is locked' errors, 5 sessions", ("store_5_sessions", "lock_errors"), True),
    ("refused as duplicates, 5 sessions", ("store_5_sessions", "duplicate_refusals"), True),
    ("recall p50 ms", ("recall", "p50_ms"), True),
    ("recall p99 ms", ("recall", "p99_ms"), True),
    ("LoCoMo dev R@5", ("locomo", "recall_at_5"), False),
    ("LoCoMo dev R@10", ("locomo", "recall_at_10"), False),
)


def pick(figures: dict[str, Any], path: tuple[str, str]) -> Any:
    return figures.get(path[0], {}).get(path[1])


def locomo_common(peer: dict[str, Any], pirag: dict[str, Any]) -> dict[str, Any] | None:
    """R@5/R@10 of both on the questions both were asked, when the peer was asked fewer (a cut-short ingest)."""
    theirs, ours = peer.get("locomo", {}).get("per_question", {}), pirag.get("locomo", {}).get("per_question", {})
    shared = sorted(set(theirs) & set(ours))
    if not shared or len(shared) == len(ours):
        return None
    result: dict[str, Any] = {"questions": len(shared)}
    for position, key in ((0, "recall_at_5"), (1, "recall_at_10")):
        result[key] = (round(sum(theirs[q][position] for q in shared) / len(shared), 3),
                       round(sum(ours[q][position] for q in shared) / len(shared), 3))
    return result


def rows(report: dict[str, Any]) -> list[list[object]]:
    pirag = report["products"].get("pirag", {}).get("figures", {})
    table: list[list[object]] = []
    for name, entry in report["products"].items():
        if name == "pirag":
            continue
        if entry["status"] != "ok":
            table.append([entry["label"], "SKIPPED", "", "", entry["reason"][:160]])
            continue
        common = locomo_common(entry["figures"], pirag)
        for label, path, _ in FIGURES:
            peer, ours = pick(entry["figures"], path), pick(pirag, path)
            if path[0] == "locomo" and common is not None:      # the peer answered fewer questions: same set
                peer, ours = common[path[1]]
                label += f" (the {common['questions']} questions both answered)"
            ratio = f"{ours / peer:.2f}x" if isinstance(peer, (int, float)) and isinstance(ours, (int, float)) \
                and peer else "-"
            table.append([entry["label"], label, "-" if peer is None else peer, "-" if ours is None else ours, ratio])
    return table


TARGETS = (  # (name, figure path, best-peer direction, bound, comparison)
    ("recall p50 <= 0.5x the best product's", ("recall", "p50_ms"), min, 0.5, "le"),
    ("5-session RSS <= 0.5x the best product's", ("rss_5_sessions", "rss_mb"), min, 0.5, "le"),
    ("LoCoMo dev R@5 >= the best product's", ("locomo", "recall_at_5"), max, 1.0, "ge"),
)


def targets(report: dict[str, Any]) -> dict[str, Any]:
    pirag = report["products"].get("pirag", {})
    out: dict[str, Any] = {}
    peers = [entry for name, entry in report["products"].items() if name != "pirag" and entry["status"] == "ok"]
    for name, path, best_of, bound, how in TARGETS:
        values = [(pick(entry["figures"], path), entry["label"]) for entry in peers]
        values = [(value, label) for value, label in values if isinstance(value, (int, float))]
        ours = pick(pirag.get("figures", {}), path)
        if not values or not isinstance(ours, (int, float)):
            out[name] = {"measured": None, "met": None, "reason": "pirag or every product lacks the figure"}
            continue
        best, label = best_of(values)
        ratio = round(ours / best, 3) if best else None
        met = ratio is not None and (ratio <= bound if how == "le" else ratio >= bound)
        out[name] = {"pirag": ours, "best_product": label, "best_value": best, "ratio": ratio, "met": met}
    errors = pick(pirag.get("figures", {}), ("store_5_sessions", "errors"))
    out["0 errors from 5 concurrent writing sessions"] = {"pirag": errors, "met": errors == 0 if errors is not None
                                                          else None}
    return out


def print_products(report: dict[str, Any]) -> None:
    pirag = report["products"].get("pirag", {})
    print(f"\n{report['time']}  {report['machine']['cpu']}, {report['machine']['cpus']} CPUs  load {report['load_average_start']} -> "
          f"{report['load_average_end']}")
    if pirag.get("status") != "ok":
        print(f"pirag itself did not run: {pirag.get('reason')}")
    print_table(f"pirag vs MCP memory products ({report['command']}; ratio = pirag / product)",
                ["product", "figure", "product", "pirag", "ratio"], rows(report))
    print()
    for name, target in report["targets"].items():
        verdict = {True: "MET", False: "MISSED", None: "NOT MEASURED"}[target["met"]]
        print(f"target {name}: {verdict} {json.dumps({k: v for k, v in target.items() if k != 'met'})}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from pirag.client import Client

    from .compare import machine

    sizes = dict(QUICK if args.quick else FULL)
    for key in ("memories", "queries", "locomo_turns", "locomo_questions"):
        if getattr(args, key, None):
            sizes[key] = getattr(args, key)
    nonce = f"{os.getpid() % 10000}{int(time.time()) % 10000}"
    report: dict[str, Any] = {"time": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine(),
                              "command": "pirag-stress compare --products" + (" --quick" if args.quick else ""),
                              "sizes": sizes, "load_average_start": [round(x, 2) for x in os.getloadavg()],
                              "products": {}}
    with Client(args.socket, timeout=120) as client:
        status = client.status()
    report["pirag_version"] = status.version
    chosen = [product for product in products() if not args.only or product.name in args.only]
    locomo = None
    try:
        locomo = load_locomo(Path(args.locomo) if args.locomo else None)
        report["locomo"] = {"path": locomo["path"], "name": locomo.get("name")}
    except (OSError, ValueError) as exc:
        report["locomo"] = {"error": str(exc)}
    model_dir = None
    model_error = ""
    try:
        model_dir = prepare_model()
    except PeerUnavailable as exc:
        model_error = str(exc)
    print(f"pirag {status.version} (daemon pid {status.pid}) and {len(chosen)} product(s); sizes {sizes}", flush=True)
    for product in [PiragMcp(args.socket), *chosen]:
        print(f"[{product.label or product.name}] installing / starting ...", flush=True)
        if model_dir is None and not isinstance(product, PiragMcp):
            entry = {"label": product.label, "requirement": product.requirement, "status": "skipped",
                     "reason": model_error, "figures": {}}
        else:
            extra = (status.pid,) if isinstance(product, PiragMcp) else ()
            entry = run_product(product, sizes, nonce, extra, locomo, model_dir, args.keep)
        report["products"][product.name] = entry
        if entry["status"] == "ok":
            print(f"  done in {entry.get('seconds')} s: " + json.dumps(
                {label: pick(entry["figures"], path) for label, path, _ in FIGURES}), flush=True)
        else:
            print(f"  SKIPPED: {entry['reason']}", flush=True)
    if model_dir is not None:
        report["onnx_model"] = str(model_dir)
    report["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    report["targets"] = targets(report)
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow-missing", action="store_true",
                        help="exit 0 even when a product that should run was skipped")
    parser.add_argument("--only", type=lambda text: [name for name in text.split(",") if name],
                        help="only these products (comma-separated: mcp-memory-service-lite,chroma-mcp,basic-memory)")
    parser.add_argument("--memories", type=int, help="memories stored per phase (1 session, then 5 sessions)")
    parser.add_argument("--locomo-turns", type=int, help="LoCoMo: only the first N turns of each conversation")
    parser.add_argument("--locomo-questions", type=int, help="LoCoMo: at most N questions per conversation")
    parser.add_argument("--locomo", help="the LoCoMo dev JSON (default: shared/data/locomo_dev.json)")
    parser.add_argument("--keep", action="store_true", help="keep each product's temporary home and data")


def main(args: argparse.Namespace) -> int:
    report = run(args)
    print_products(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"figures written to {args.json}")
    skipped = [name for name, entry in report["products"].items() if entry["status"] != "ok"]
    if skipped and not args.allow_missing:
        print(f"SKIPPED: {', '.join(skipped)} (pass --allow-missing to accept)", file=sys.stderr)
        return 1
    return 0
