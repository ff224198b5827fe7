"""``crash``: SIGKILL the daemon at random moments during a large ingestion and concurrent memory writes,
restart it each time, then prove that nothing acknowledged was lost and nothing is half-written.

Unlike the other scenarios this one starts its own daemon (``pirag serve`` as a child process, on a fresh
state directory and socket under /tmp), because it has to kill and restart it. The run:

1. A tree of files (copied from the standard library on this machine, sorted, so every run sees the same
   bytes) is ingested as one background job into project ``crash``.
2. ``--clients`` writer threads loop on ``remember`` / ``log_episode`` / ``forget`` (of their own
   acknowledged facts) through their own connections, reconnecting whenever the daemon is gone. Every
   acknowledged reply is recorded; a request whose reply never arrived is "unknown" and not checked either way.
3. ``--kills`` times: SIGKILL at a random moment, then restart. One kill in five lands during start-up
   (0.05-1.5 s after the process started: stores opening, the index check, the job resuming), the others a
   random 0.2 .. ``--max-interval`` s after the daemon is ready, while the job and the writers run. The
   ingestion job resumes at every start by itself.
4. Last start: wait for the job to finish, stop the writers, ingest the same tree uninterrupted into project
   ``crash-ref``, stop the daemon with SIGTERM.
5. With the daemon stopped, read the files directly: ``PRAGMA integrity_check`` is ``ok``; every acknowledged
   fact and episode is there, no acknowledged-forgotten fact is back; the document rows (sources with their
   hashes and sizes, chunks with their texts, hashes, positions and token counts, one vector per chunk) of
   ``crash`` equal those of ``crash-ref``; the Chroma index holds exactly the ids SQLite has vectors for.

The stress package measures the daemon from outside and imports no daemon code: it runs the ``pirag``
command, reads SQLite with the standard library and Chroma with chromadb, the daemon's own dependency.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pirag.client import Client
from pirag.client.errors import PiragError

from .report import Check

NAME = "crash"
QUICK = {"kills": 3, "files": 10, "clients": 2, "max_interval": 3.0}
PROJECT, REFERENCE = "crash", "crash-ref"
# Failures after which the outcome of a write is unknown (the connection broke, or no reply in time);
# an answered error (busy, unavailable while starting, invalid_argument) means it was not applied.
STARTUP_KILLS = 0.2
UNKNOWN_CODES = {"connection_failed", "request_timeout", "timeout", "protocol_error"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs (default 20)")
    parser.add_argument("--files", type=int, default=60, help="files in the ingested tree (default 60)")
    parser.add_argument("--clients", type=int, default=4, help="writer connections (default 4)")
    parser.add_argument("--max-interval", type=float, default=6.0,
                        help="longest wait from a start to its kill, seconds (default 6)")
    parser.add_argument("--model", default="", help="a GGUF model file (default: the daemon's embedded default, "
                        "imported once into the run's state directory)")
    parser.add_argument("--keep", action="store_true", help="keep the run's directory (state, logs)")
    parser.add_argument("--start-timeout", type=float, default=300.0, help="seconds a start may take")
    parser.add_argument("--out", default="stress-results", help="directory for the JSON report")
    parser.add_argument("--check", action="store_true", help="exit 1 when a check fails")
    parser.add_argument("--quick", action="store_true", help="a small run (a few kills): " + json.dumps(QUICK))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pirag", default=str(Path(sys.executable).with_name("pirag")), help="the pirag command")


# --------------------------------------------------------------------------------------------------------------
# the daemon under test


class Daemon:
    """``pirag serve`` as a child process on its own state directory; killed and restarted at will."""

    def __init__(self, root: Path, pirag: str, tree: Path, model: str, start_timeout: float):
        self.root, self.pirag, self.start_timeout = root, pirag, start_timeout
        self.socket = root / "s.sock"
        self.state_dir = root / "state"
        self.config = root / "pirag.toml"
        embed = f'model = "{model}"\n' if model else ""
        self.config.write_text(
            f'state_dir = "{self.state_dir}"\n[server]\nsocket = "{self.socket}"\n[log]\nrequests = false\n'
            f'metrics_interval_s = 0.0\n[ingest]\nallowed_roots = ["{tree}"]\n[embed]\n{embed}')
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.starts = 0
        self.log = open(root / "daemon.log", "ab")

    def start(self) -> None:
        self.log.write(f"\n===== start {self.starts} =====\n".encode())
        self.log.flush()
        self.process = subprocess.Popen([self.pirag, "serve", "--config", str(self.config)], stdout=self.log,
                                        stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.started_at = time.monotonic()
        self.starts += 1

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"the daemon exited with {self.process.returncode} while starting; "
                                   f"see {self.root / 'daemon.log'}")
            try:
                with Client(self.socket, timeout=5) as client:
                    if client.status().components.get("server", {}).get("ready"):
                        return
            except (PiragError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the daemon was not ready within {self.start_timeout:.0f} s")

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            return -9

    def client(self, timeout: float = 60) -> Client:
        return Client(self.socket, timeout=timeout)


def make_tree(root: Path, files: int) -> Path:
    """``files`` standard-library modules of 4-40 KB, the same ones on every run of this Python."""
    tree = root / "tree"
    tree.mkdir()
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    chosen = sorted(p for p in stdlib.glob("*.py") if 4_000 <= p.stat().st_size <= 40_000)[:files]
    for path in chosen:
        shutil.copyfile(path, tree / path.name)
    return tree


# --------------------------------------------------------------------------------------------------------------
# writers


@dataclass
class Ledger:
    """What the daemon acknowledged, as seen by the clients."""

    facts: set[str] = field(default_factory=set)          # remembered and acknowledged
    forgotten: set[str] = field(default_factory=set)      # forget acknowledged
    episodes: set[str] = field(default_factory=set)
    unknown: int = 0                                      # requests whose reply never came
    refused: dict[str, int] = field(default_factory=dict)  # error codes of answered-but-failed requests
    lock: threading.Lock = field(default_factory=threading.Lock)


def writer(daemon: Daemon, index: int, ledger: Ledger, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed * 100 + index)
    mine: list[str] = []
    number = 0
    client: Client | None = None
    while not stop.is_set():
        if client is None:
            try:
                client = daemon.client(timeout=20).connect()
            except (PiragError, OSError):
                client = None
                time.sleep(0.05)
                continue
        number += 1
        roll = rng.random()
        victim = ""
        try:
            if roll < 0.2 and mine:
                victim = mine.pop(rng.randrange(len(mine)))
                client.forget(victim)
                with ledger.lock:
                    ledger.forgotten.add(victim)
            elif roll < 0.6:
                fact = client.remember(f"crash writer {index} fact {number}: {rng.random():.12f}",
                                       project=PROJECT, tags=[f"w{index}"]).fact
                mine.append(fact.id)
                with ledger.lock:
                    ledger.facts.add(fact.id)
            else:
                episode = client.log_episode(f"crash writer {index} step {number}", session=f"crash-{index}",
                                             project=PROJECT, kind="action").episode
                with ledger.lock:
                    ledger.episodes.add(episode.id)
        except (PiragError, OSError) as exc:
            code = exc.code if isinstance(exc, PiragError) else f"os:{type(exc).__name__}"
            with ledger.lock:
                if code in UNKNOWN_CODES or code.startswith("os:"):
                    ledger.unknown += 1       # the reply never came: the write may or may not have happened
                    if victim:
                        ledger.facts.discard(victim)  # gone or not: checked neither way
                else:
                    ledger.refused[code] = ledger.refused.get(code, 0) + 1
            if code in UNKNOWN_CODES or code.startswith("os:"):
                client.close()
                client = None
                time.sleep(0.05)
    if client is not None:
        client.close()


# --------------------------------------------------------------------------------------------------------------
# the verdict, read from the files with the daemon stopped


def document_rows(db: sqlite3.Connection, project: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], int]:
    """(sources, chunks, chunks without a vector) of one project, without ids or times."""
    sources = db.execute(
        "SELECT s.source, s.file_type, s.content_hash, s.bytes, s.chunks FROM doc_source s "
        "JOIN doc_project p ON p.id = s.project_id WHERE p.name = ? ORDER BY s.source", (project,)).fetchall()
    chunks = db.execute(
        "SELECT s.source, c.ordinal, c.chunk_hash, c.text, c.heading, c.line_start, c.line_end, c.tokens "
        "FROM doc_chunk c JOIN doc_source s ON s.id = c.source_id JOIN doc_project p ON p.id = s.project_id "
        "WHERE p.name = ? ORDER BY s.source, c.ordinal", (project,)).fetchall()
    missing = db.execute(
        "SELECT count(*) FROM doc_chunk c JOIN doc_project p ON p.id = c.project_id "
        "LEFT JOIN doc_vector v ON v.chunk_id = c.id WHERE p.name = ? AND v.chunk_id IS NULL", (project,)).fetchone()[0]
    return sources, chunks, missing


def sqlite_vector_ids(db: sqlite3.Connection) -> set[str]:
    ids = {str(row[0]) for row in db.execute("SELECT chunk_id FROM doc_vector")}
    ids |= {row[0] for row in db.execute("SELECT id FROM fact WHERE vector IS NOT NULL")}
    ids |= {row[0] for row in db.execute("SELECT id FROM episode WHERE vector IS NOT NULL")}
    return ids


def chroma_ids(path: Path) -> set[str] | str:
    """Every id in every collection of the embedded index, or why they could not be read."""
    if not path.is_dir():
        return f"no index directory at {path}"
    import chromadb
    from chromadb.config import Settings

    client = chromadb.PersistentClient(path=str(path), settings=Settings(anonymized_telemetry=False))
    ids: set[str] = set()
    for collection in client.list_collections():
        collection = client.get_collection(collection.name) if isinstance(collection, str) else collection
        ids.update(collection.get(include=[])["ids"])
    return ids


def index_agreement(daemon: Daemon, expected: set[str]) -> tuple[str, bool, list[str]]:
    """(summary, ids equal, a few ids Chroma has that SQLite has no vector for)."""
    index = chroma_ids(daemon.state_dir / "chroma")
    if not isinstance(index, set):
        return index, False, []
    summary = (f"{len(index)} ids, SQLite {len(expected)}; missing {len(expected - index)}, "
               f"extra {len(index - expected)}")
    return summary, index == expected, sorted(index - expected)[:10]


def sqlite_expected_vectors(daemon: Daemon) -> set[str]:
    db = sqlite3.connect(f"file:{daemon.state_dir / 'pirag.sqlite3'}?mode=ro", uri=True)
    try:
        return sqlite_vector_ids(db)
    finally:
        db.close()


def recheck_after_restart(daemon: Daemon) -> tuple[str, bool]:
    """The promise allows an index that disagrees if the daemon rebuilds it itself: start once more (no
    writers), let its start-up index check run, stop cleanly, compare again."""
    daemon.start()
    daemon.wait_ready()
    time.sleep(5.0)  # the start-up index checks run in the background right after ready
    daemon.stop()
    summary, equal, _ = index_agreement(daemon, sqlite_expected_vectors(daemon))
    return summary, equal


def verify(daemon: Daemon, ledger: Ledger) -> tuple[dict[str, Any], list[Check]]:
    path = daemon.state_dir / "pirag.sqlite3"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        facts = {row[0] for row in db.execute("SELECT id FROM fact")}
        episodes = {row[0] for row in db.execute("SELECT id FROM episode")}
        crashed = document_rows(db, PROJECT)
        reference = document_rows(db, REFERENCE)
        expected_vectors = sqlite_vector_ids(db)
    finally:
        db.close()
    kept = ledger.facts - ledger.forgotten
    lost_facts = sorted(kept - facts)
    back = sorted(ledger.forgotten & facts)
    lost_episodes = sorted(ledger.episodes - episodes)
    index, index_ok, extra = index_agreement(daemon, expected_vectors)
    figures = {
        "integrity_check": integrity, "facts_acknowledged": len(ledger.facts),
        "forgets_acknowledged": len(ledger.forgotten), "episodes_acknowledged": len(ledger.episodes),
        "unknown_outcomes": ledger.unknown, "refused_by_code": ledger.refused,
        "facts_lost": lost_facts[:20], "forgotten_back": back[:20], "episodes_lost": lost_episodes[:20],
        "sources": len(crashed[0]), "chunks": len(crashed[1]), "reference_sources": len(reference[0]),
        "reference_chunks": len(reference[1]), "chunks_without_vector": crashed[2] + reference[2],
        "index": index, "index_extra_ids": extra,
    }
    checks = [
        Check("SQLite integrity_check", integrity, "ok", "=="),
        Check("acknowledged facts lost", len(lost_facts), 0, "=="),
        Check("acknowledged forgets undone", len(back), 0, "=="),
        Check("acknowledged episodes lost", len(lost_episodes), 0, "=="),
        Check("document sources equal an uninterrupted ingest", crashed[0] == reference[0], True, "true"),
        Check("document chunks equal an uninterrupted ingest", crashed[1] == reference[1], True, "true"),
        Check("chunks without a vector", crashed[2] + reference[2], 0, "=="),
        Check("vector index ids equal SQLite's (after the run)", index_ok, True, "true"),
        Check("writes acknowledged", len(ledger.facts) + len(ledger.episodes), 1, ">="),
        Check("tree ingested", len(reference[1]), 1, ">="),
    ]
    return figures, checks


# --------------------------------------------------------------------------------------------------------------
# the run


def job_progress(daemon: Daemon, job_id: int) -> str:
    """The job's state just before a kill, with the current attempt's figures ("running 32/282": chunks
    embedded and written by this attempt / chunks it has prepared so far): shows the kills hit mid-ingest."""
    try:
        with daemon.client(timeout=2) as client:
            jobs = client.ingest_status(job_id).jobs
    except PiragError as exc:
        return exc.code
    return f"{jobs[0].state} {jobs[0].chunks_done}/{jobs[0].chunks_total}" if jobs else "?"


def wait_job(daemon: Daemon, job_id: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    with daemon.client() as client:
        while time.monotonic() < deadline:
            jobs = client.ingest_status(job_id).jobs
            if jobs and jobs[0].state in ("done", "failed", "cancelled"):
                return jobs[0].state
            time.sleep(0.5)
    return "timeout"


def run_crash(args: argparse.Namespace) -> tuple[dict[str, Any], list[Check], Path]:
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="pcr-", dir="/tmp"))
    tree = make_tree(root, args.files)
    daemon = Daemon(root, args.pirag, tree, args.model, args.start_timeout)
    ledger = Ledger()
    stop = threading.Event()
    kills: list[dict[str, Any]] = []
    started = time.monotonic()
    try:
        daemon.start()
        daemon.wait_ready()  # the first start may import the model: not a moment to kill at
        with daemon.client() as client:
            job_id = client.ingest(PROJECT, [str(tree)]).job_id
        assert job_id is not None, "a path ingestion runs as a job"
        writers = [threading.Thread(target=writer, args=(daemon, i, ledger, stop, args.seed), daemon=True)
                   for i in range(args.clients)]
        for thread in writers:
            thread.start()
        for number in range(args.kills):
            # one kill in five lands during start-up (stores opening, the job resuming), the rest while serving
            if number and rng.random() < STARTUP_KILLS:
                moment = "starting"
                time.sleep(rng.uniform(0.05, 1.5))
            else:
                moment = "serving"
                daemon.wait_ready()
                time.sleep(rng.uniform(0.2, args.max_interval))
            job = job_progress(daemon, job_id) if moment == "serving" else "-"
            with ledger.lock:
                acknowledged = len(ledger.facts) + len(ledger.episodes) + len(ledger.forgotten)
            after = time.monotonic() - daemon.started_at
            daemon.kill9()
            kills.append({"kill": number + 1, "moment": moment, "after_start_s": round(after, 2),
                          "acknowledged_so_far": acknowledged, "job": job})
            print(f"[crash] kill {number + 1}/{args.kills} ({moment}) {after:.2f} s after start; job {job}; "
                  f"{acknowledged} writes acknowledged so far", flush=True)
            daemon.start()
        daemon.wait_ready()
        job_state = wait_job(daemon, job_id, 1800)
        stop.set()
        for thread in writers:
            thread.join(60)
        with daemon.client(timeout=1800) as client:
            reference = client.ingest(REFERENCE, [str(tree)], wait=True)
            status = client.status()
        exit_code = daemon.stop()
        figures, checks = verify(daemon, ledger)
        index_check = next(check for check in checks if check.name.startswith("vector index ids"))
        if not index_check.value:
            summary, equal = recheck_after_restart(daemon)
            figures["index_after_restart"] = summary
            index_check.name = "vector index ids equal SQLite's (after the run, or after one restart)"
            index_check.value = equal
            index_check.note = f"after the run: {figures['index']}; after one restart: {summary}"
        figures.update(kills=len(kills), starts=daemon.starts,
                       kills_mid_ingest=sum(1 for kill in kills if str(kill["job"]).startswith("running")), job_state=job_state, final_exit_code=exit_code,
                       reference_state=reference.state, run_s=round(time.monotonic() - started, 1),
                       files=args.files, clients=args.clients, kill_log=kills,
                       vectors=(status.components or {}).get("vectors"))
        checks.insert(0, Check("SIGKILLs survived", len(kills), args.kills, ">="))
        checks.insert(1, Check("ingestion job finished", job_state, "done", "=="))
        checks.append(Check("clean final stop", exit_code, 0, "=="))
        return figures, checks, root
    finally:
        stop.set()
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait(10)
        daemon.log.close()
        if not args.keep:
            shutil.copyfile(root / "daemon.log", Path(tempfile.gettempdir()) / f"{root.name}.log")
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pirag-stress crash", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            if getattr(args, key) == parser.get_default(key):
                setattr(args, key, value)
    figures, checks, root = run_crash(args)
    evaluated = [check.evaluate() for check in checks]
    passed = all(check.passed for check in evaluated)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"crash-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"schema": "pirag-stress/1", "scenario": NAME, "argv": argv or sys.argv[1:],
                                "figures": figures, "passed": passed,
                                "checks": [vars(check) for check in evaluated]}, indent=2, default=str))
    for check in evaluated:
        print(f"  {'PASS' if check.passed else 'FAIL'}  {check.name}: {check.value!r} (want {check.op} "
              f"{check.limit!r})")
    print(f"crash: {figures['kills']} kills, {figures['facts_acknowledged']} facts / "
          f"{figures['episodes_acknowledged']} episodes / {figures['forgets_acknowledged']} forgets acknowledged, "
          f"{figures['chunks']} chunks; {'PASS' if passed else 'FAIL'}; report {path}"
          + (f"; run directory {root}" if args.keep else f"; daemon log /tmp/{root.name}.log"))
    return 0 if passed or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
