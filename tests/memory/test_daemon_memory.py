"""The memory ops through the real daemon and the real client: concurrency, kill -9 durability, CLI, backup."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_until

from pirag.client import Client
from pirag.client.errors import InvalidArgument, NotFound, PiragError

PIRAG = str(Path(sys.executable).with_name("pirag"))


def test_concurrent_writers_and_readers(memory_daemon: Any) -> None:
    writers, readers, per_writer = 12, 12, 25
    errors: list[BaseException] = []
    acked: list[tuple[str, str]] = []
    lock = threading.Lock()
    start = threading.Barrier(writers + readers)

    def writer(index: int) -> None:
        try:
            with Client(memory_daemon.socket) as client:
                start.wait()
                for n in range(per_writer):
                    fact = client.remember(f"writer {index} fact {n} about subject {n % 7}", project="conc").fact
                    episode = client.log_episode(f"writer {index} did step {n}", session=f"s{index}",
                                                 project="conc", kind="action").episode
                    with lock:
                        acked.append((fact.id, episode.id))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def reader(index: int) -> None:
        try:
            with Client(memory_daemon.socket) as client:
                start.wait()
                for n in range(per_writer):
                    client.recall(f"subject {n % 7}", project="conc", k=5)
                    client.timeline(project="conc", limit=20)
                    client.list_facts(project="conc", limit=10)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    threads += [threading.Thread(target=reader, args=(i,)) for i in range(readers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors[:3]
    assert len(acked) == writers * per_writer
    with memory_daemon.client() as client:
        facts, cursor = [], ""
        while True:
            page = client.list_facts(project="conc", limit=1000, cursor=cursor)
            facts += page.facts
            if not page.next_cursor:
                break
            cursor = page.next_cursor
        assert {f.id for f in facts} == {fact_id for fact_id, _ in acked}
        episodes = client.timeline(project="conc", limit=1000).episodes
        assert {e.id for e in episodes} == {episode_id for _, episode_id in acked}
        sessions = client.list_sessions(project="conc").sessions
        assert len(sessions) == writers and all(s.episodes == per_writer for s in sessions)
        db = client.status().components["db"]
        assert db["errors"] == 0
    assert "database is locked" not in memory_daemon.log_text()


def test_acknowledged_writes_survive_kill_9(memory_daemon_factory: Any) -> None:
    daemon = memory_daemon_factory("kill")
    acked: list[tuple[str, str]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(index: int) -> None:
        try:
            with Client(daemon.socket, timeout=10) as client:
                n = 0
                while not stop.is_set():
                    if n % 2:
                        result_id = client.remember(f"durable fact {index}-{n}", project="dur").fact.id
                        kind = "fact"
                    else:
                        result_id = client.log_episode(f"durable episode {index}-{n}", project="dur").episode.id
                        kind = "episode"
                    with lock:
                        acked.append((kind, result_id))
                    n += 1
        except PiragError:
            pass  # the daemon died under us: expected

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    daemon.kill9()  # while the writers are in full flight: some replies were just sent
    stop.set()
    for thread in threads:
        thread.join(30)
    assert len(acked) > 50
    daemon.restart()
    with daemon.client() as client:
        for kind, result_id in acked:
            if kind == "fact":
                assert client.get_fact(result_id).fact.id == result_id
        episodes = {e.id for e in client.timeline(project="dur", limit=1000).episodes}
        cursor = client.timeline(project="dur", limit=1000).next_cursor
        while cursor:
            page = client.timeline(project="dur", limit=1000, cursor=cursor)
            episodes |= {e.id for e in page.episodes}
            cursor = page.next_cursor
        missing = [i for kind, i in acked if kind == "episode" and i not in episodes]
        assert not missing, f"{len(missing)} acknowledged episodes lost"


def test_bad_inputs_and_unknown_ids(memory_daemon: Any) -> None:
    with memory_daemon.client() as client:
        with pytest.raises(InvalidArgument, match="at most"):
            client.remember("x" * 20_000)
        with pytest.raises(InvalidArgument, match="bad tag"):
            client.remember("fine", tags=["no spaces please"])
        with pytest.raises(InvalidArgument, match="time range"):
            client.timeline(when="the day after the heat death")
        with pytest.raises(InvalidArgument, match="kind"):
            client.log_episode("x", kind="Not A Kind!")
        with pytest.raises(InvalidArgument):
            client.log_episode("x", timestamp=-5)
        with pytest.raises(NotFound):
            client.get_fact("f_doesnotexist")
        with pytest.raises(NotFound):
            client.forget("f_doesnotexist")
        with pytest.raises(NotFound):
            client.update_fact("f_doesnotexist", content="y")
        with pytest.raises(PiragError):  # a protocol-level cap: k <= 100
            client.recall("x", k=1000)
        assert client.ping()


def test_time_ranges_and_timeline_order(memory_daemon: Any) -> None:
    now = time.time()
    with memory_daemon.client() as client:
        for days in (0, 2, 10, 40):
            client.log_episode(f"event {days} days ago", session="tr", project="tr", timestamp=now - days * 86400)
        def contents(**kwargs: Any) -> list[str]:
            return [e.content for e in client.timeline(project="tr", **kwargs).episodes]

        assert contents(when="past 3 days") == ["event 0 days ago", "event 2 days ago"]
        assert contents(when="past 3 days", order="oldest") == ["event 2 days ago", "event 0 days ago"]
        assert contents(when="today") == ["event 0 days ago"] or time.gmtime(now).tm_hour == 0
        assert len(contents()) == 4
        first = client.timeline(project="tr", limit=3)
        rest = client.timeline(project="tr", limit=3, cursor=first.next_cursor)
        assert [e.content for e in first.episodes + rest.episodes] == contents()
        # Episodes are embedded in the background after log_episode is acknowledged (docs/MEMORY.md).
        def embedded() -> bool:
            memory = client.status().components["memory"]
            return memory["episodes_embedded"] >= memory["episodes_logged"]

        wait_until(embedded, timeout=30)
        hits = client.recall_episodes("event 10 days", project="tr", k=2)
        assert hits.episodes and hits.episodes[0].episode.content == "event 10 days ago"


def test_export_import_round_trip_and_backup(memory_daemon_factory: Any, tmp_path: Path) -> None:
    source = memory_daemon_factory("exp")
    env = dict(os.environ, PIRAG_SOCKET=str(source.socket))
    with source.client() as client:
        fact = client.remember("exported fact one", project="x", tags=["a", "b"], metadata={"k": 1}).fact
        client.update_fact(fact.id, content="exported fact one, revised", reason="fix")
        client.remember("exported global fact")
        for n in range(1200):
            client.log_episode(f"exported episode {n}", session="exp", project="x", kind="observation")
    dump = tmp_path / "memory.jsonl"
    subprocess.run([PIRAG, "export", "-o", str(dump)], env=env, check=True, capture_output=True)
    lines = [json.loads(line) for line in dump.read_text().splitlines()]
    assert sum(1 for r in lines if r["type"] == "fact") == 2
    assert sum(1 for r in lines if r["type"] == "episode") == 1200
    revised = next(r for r in lines if r["id"] == fact.id)
    assert revised["history"][0]["content"] == "exported fact one" and revised["metadata"] == {"k": 1}

    backup = tmp_path / "backup.sqlite3"
    out = subprocess.run([PIRAG, "backup", str(backup)], env=env, check=True, capture_output=True, text=True)
    assert "backup written" in out.stdout
    conn = sqlite3.connect(backup)
    assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT count(*) FROM episode").fetchone()[0] == 1200
    conn.close()

    target = memory_daemon_factory("imp")
    env_target = dict(os.environ, PIRAG_SOCKET=str(target.socket))
    out = subprocess.run([PIRAG, "import", str(dump), "--json"], env=env_target, check=True, capture_output=True,
                         text=True)
    assert json.loads(out.stdout) == {"facts": 2, "episodes": 1200, "skipped": 0}
    again = subprocess.run([PIRAG, "import", str(dump), "--json"], env=env_target, check=True, capture_output=True,
                           text=True)
    assert json.loads(again.stdout) == {"facts": 0, "episodes": 0, "skipped": 1202}
    second = tmp_path / "second.jsonl"
    subprocess.run([PIRAG, "export", "-o", str(second)], env=env_target, check=True, capture_output=True)
    assert sorted(dump.read_text().splitlines()) == sorted(second.read_text().splitlines())
    with target.client() as client:
        got = client.get_fact(fact.id, history=True)
        assert got.fact.content == "exported fact one, revised" and got.history[0].reason == "fix"
        assert client.recall("revised exported", project="x").facts[0].fact.id == fact.id


def test_cli_remember_recall_forget(memory_daemon: Any) -> None:
    env = dict(os.environ, PIRAG_SOCKET=str(memory_daemon.socket))

    def pirag(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PIRAG, *args], env=env, capture_output=True, text=True, timeout=60)

    made = json.loads(pirag("remember", "the cli fact about kiwis", "--tag", "fruit", "--json").stdout)
    fact_id = made["fact"]["id"]
    assert "already known" in pirag("remember", "The CLI fact about kiwis").stdout
    assert fact_id in pirag("recall", "kiwis").stdout
    assert fact_id in pirag("facts", "--tag", "fruit").stdout
    assert pirag("log", "cli episode", "--kind", "decision", "--session", "cli").returncode == 0
    assert "cli episode" in pirag("timeline", "--session", "cli").stdout
    assert "forgot 1" in pirag("forget", fact_id).stdout
    failed = pirag("forget", fact_id)
    assert failed.returncode == 1 and "not_found" in failed.stderr
    bad = pirag("timeline", "--when", "someday")
    assert bad.returncode == 1 and "invalid_argument" in bad.stderr
