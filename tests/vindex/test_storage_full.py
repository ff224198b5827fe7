"""A full or read-only state directory, for real: the daemon on a small tmpfs.

The disk-full run of issue 18: long facts are written until the state directory is full. Throughout, ``ping``
answers (a thread pings every 0.1 s); every failed write is ``storage_full`` naming the directory and its free
bytes; ``status`` shows the condition; reads keep working; once space is freed writes work again; after a
restart every acknowledged fact is there and both SQLite files (pirag's and Chroma's) pass integrity_check.
(A live read-only remount cannot be shown on tmpfs: the kernel refuses ``remount,ro`` while SQLite holds its
files open for writing; ``test_storage_errors.py`` covers the read-only mapping with real SQLite errors.)

Needs root (mount); skipped with the reason otherwise.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from pirag.client import Client
from pirag.client.errors import PiragError, StorageError, StorageFull
from tests.conftest import merge

TMPFS_MB = 16
BALLAST_BYTES = 3 << 20
FACT_CHARS = 12_000
WORDS = ("amber basalt cedar delta ember fjord garnet harbor indigo juniper kelp lantern meadow nickel onyx prairie "
         "quartz raven saffron tundra umber violet willow xenon yarrow zephyr anchor beacon canyon dune estuary "
         "falcon glacier heron island jetty knoll lagoon mesa nebula oasis pebble quarry ridge summit tide").split()


def _mount_tmpfs(size_mb: int) -> Path:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    target = Path(tempfile.mkdtemp(prefix="vx-full-", dir="/tmp"))
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(target)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        target.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    return target


@pytest.fixture
def small_disk():
    target = _mount_tmpfs(TMPFS_MB)
    yield target
    subprocess.run(["umount", "-l", str(target)], check=False)
    target.rmdir()


def long_fact(rng: random.Random, i: int) -> str:
    words = [rng.choice(WORDS) for _ in range(FACT_CHARS // 7)]
    return f"Fact {i}: " + " ".join(words)[:FACT_CHARS]


class Pinger(threading.Thread):
    """Pings every 0.1 s on its own connection; records each round trip and each failure."""

    def __init__(self, socket_path: Path):
        super().__init__(daemon=True)
        self.socket_path = socket_path
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        with Client(self.socket_path, timeout=3.0) as client:
            while not self.stopping.is_set():
                started = time.perf_counter()
                try:
                    client.ping()
                    self.latencies.append(time.perf_counter() - started)
                except PiragError as exc:
                    self.failures.append(repr(exc))
                self.stopping.wait(0.1)

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)


def integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def test_disk_full_daemon_keeps_answering_and_loses_nothing(daemon_factory, real_model, small_disk):
    state = small_disk / "state"
    daemon = daemon_factory("full", merge(real_model, {"state_dir": str(state)}))
    ballast = small_disk / "ballast"
    ballast.write_bytes(b"\0" * BALLAST_BYTES)
    pinger = Pinger(daemon.socket)
    pinger.start()
    rng = random.Random(18)
    acknowledged: dict[str, str] = {}
    refusals: list[StorageError] = []
    started = time.monotonic()
    try:
        with daemon.client(timeout=60) as client:
            i = 0
            while len(refusals) < 10 and time.monotonic() - started < 300:
                content = long_fact(rng, i)
                i += 1
                try:
                    acknowledged[client.remember(content, project="full").fact.id] = content
                except StorageError as exc:
                    refusals.append(exc)
            assert refusals, f"the disk never filled: {len(acknowledged)} facts in {time.monotonic() - started:.0f} s"
            assert len(acknowledged) > 20
            full = refusals[-1]
            assert isinstance(full, StorageFull) and full.code == "storage_full", full
            assert full.details["directory"] == str(state)
            assert isinstance(full.details["free_bytes"], int)
            assert str(state) in full.message and "free" in full.message
            storage = client.status().components["db"]["storage"]
            assert storage["state"] == "full" and storage["directory"] == str(state)
            # reads keep working while the disk is full
            some_id, some_content = next(iter(acknowledged.items()))
            assert client.get_fact(some_id).fact.content == some_content
            assert client.recall(some_content[:200], project="full", k=3).facts
            # space freed: writes work again, and status says so
            ballast.unlink()
            again = client.remember("Written after space was freed.", project="full")
            acknowledged[again.fact.id] = "Written after space was freed."
            assert client.status().components["db"]["storage"]["state"] == "ok"
    finally:
        pinger.stop()
    assert not pinger.failures, pinger.failures[:5]
    assert pinger.latencies and max(pinger.latencies) < 2.0, max(pinger.latencies)
    print(f"disk full after {len(acknowledged) - 1} facts; {len(refusals)} refusals; ping max "
          f"{max(pinger.latencies) * 1000:.1f} ms over {len(pinger.latencies)} pings")

    daemon.restart()
    with daemon.client(timeout=60) as client:
        missing = [fact_id for fact_id, content in acknowledged.items()
                   if client.get_fact(fact_id).fact.content != content]
        assert missing == []
    daemon.stop()
    assert integrity(state / "pirag.sqlite3") == "ok"
    assert integrity(state / "chroma" / "chroma.sqlite3") == "ok"


def test_ingestion_job_pauses_on_a_full_disk_and_resumes_once_space_is_freed(daemon_factory, real_model,
                                                                             small_disk, short_tmp):
    tree = short_tmp / "full-tree"
    tree.mkdir(exist_ok=True)
    rng = random.Random(7)
    for i in range(30):
        body = "\n\n".join(f"Section {j} of file {i}: " + " ".join(rng.choice(WORDS) for _ in range(60))
                           for j in range(20))
        (tree / f"file{i:02d}.md").write_text(f"# File {i}\n\n{body}\n")
    state = small_disk / "state"
    daemon = daemon_factory("jobfull", merge(real_model, {"state_dir": str(state),
                                                           "ingest": {"allowed_roots": [str(tree)]}}))
    with daemon.client(timeout=60) as client:
        client.remember("A first fact, so that every table exists.", project="p")
        free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
        ballast = small_disk / "ballast"
        ballast.write_bytes(b"\0" * max(0, free - (200 << 10)))
        job = client.ingest("tree", [str(tree)])
        assert job.job_id is not None
        paused = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not paused:
            paused = client.status().components["documents"]["jobs_paused"]
            client.ping()
            time.sleep(0.2)
        assert paused, "the job never met the full disk"
        assert "no space left" in next(iter(paused.values()))
        assert client.status().components["db"]["storage"]["state"] == "full"
        ballast.unlink()
        deadline = time.monotonic() + 180
        state_now = ""
        while time.monotonic() < deadline and state_now != "done":
            state_now = client.ingest_status(job.job_id).jobs[0].state
            time.sleep(0.5)
        assert state_now == "done"
        sources = client.list_sources("tree").sources
        assert len(sources) == 30
        hits = client.search("Section 19 of file 29", "tree", k=3, use_cache=False).hits
        assert any(hit.source.endswith("file29.md") and hit.vector_rank is not None for hit in hits)
