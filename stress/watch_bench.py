"""Watched folders, measured through the socket (client library only; never daemon code).

    python -m pirag.stress.watch_bench [--edits 100] [--deletes 20] [--burst 500] [--idle-files 10000]
                                       [--idle-s 60] [--workdir /tmp/pwb] [--force-polling]

Starts its own daemon (``pirag serve``, the real embedded default model, default ``[watch]`` settings) allowed to
read ``--workdir``, and prints:

1. **edit -> searchable**: a file of a watched tree is rewritten with a new unique word, and the bench polls
   ``search`` (no cache) until a hit holds it; p50/p99/max over ``--edits`` edits (targets: p50 <= 2 s,
   p99 <= 5 s). The time includes the event, the burst's quiet time, reading, chunking, embedding with the real
   model and the commit.
2. **delete -> gone**: a file is deleted; time until no hit holds its word.
3. **rename**: a file renamed; once its new name is a source, its word is found in exactly one copy.
4. **burst**: ``--burst`` files written as fast as the disk goes (edits and new files in new directories): how
   many syncs ("jobs") it took, the time to searchable, and whether the rows equal those of one full ``ingest``
   of the same tree into another project (and that the watch made no ingestion job of its own).
5. **idle CPU**: the daemon's CPU time over ``--idle-s`` seconds with nothing watched (the baseline), then with a
   ``--idle-files`` tree watched, both in this run (target < 1% of one core).
6. **restart**: changes made, the daemon SIGKILLed before they are synced, more changes while it is down; after
   a restart every change is found.

A count of 0 skips its section; ``--force-polling`` measures the fallback without inotify (rescans every
``watch.rescan_interval_s``), e.g. ``--edits 0 --burst 0 --force-polling`` for its idle cost alone.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pirag.client import Client

from .measure import percentile
from .techniques import Daemon

POLL_S = 0.02


class WatchDaemon(Daemon):
    """A ``techniques.Daemon`` that can be killed (SIGKILL) and started again on the same state."""

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def start_again(self) -> None:
        pirag = str(Path(sys.executable).with_name("pirag"))
        self.process = subprocess.Popen([pirag, "serve", "--config", str(self.root / "pirag.toml"), "--socket",
                                         self.socket, "--state-dir", str(self.root / "state")],
                                        stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def load() -> str:
    return "load %.2f %.2f %.2f" % os.getloadavg()


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def holders(client: Client, project: str, word: str) -> list[str]:
    return [hit.source for hit in client.search(word, project, k=5, use_cache=False).hits if word in hit.text]


def until(predicate: Any, timeout: float) -> float:
    """Seconds until ``predicate()`` is true (polled every POLL_S); raises TimeoutError."""
    started = time.perf_counter()
    while not predicate():
        if time.perf_counter() - started > timeout:
            raise TimeoutError("not reached within %.0f s" % timeout)
        time.sleep(POLL_S)
    return time.perf_counter() - started


def watch_info(client: Client, path: Path) -> Any:
    return next(w for w in client.watch_list().watches if w.path == str(path))


def wait_idle(client: Client, path: Path, timeout: float = 600) -> Any:
    until(lambda: (lambda w: w.pending == 0 and w.state == "watching")(watch_info(client, path)), timeout)
    return watch_info(client, path)


def figures(values: list[float]) -> str:
    return (f"p50 {percentile(values, 50):.2f} s, p99 {percentile(values, 99):.2f} s, "
            f"max {max(values):.2f} s (n={len(values)})")


def sentence(index: int) -> str:
    topics = ("backups", "the garden", "the build server", "a recipe", "the network", "travel plans")
    return f"Note {index} is about {topics[index % len(topics)]}; it changed on edit {index}."


def bench_edits(client: Client, tree: Path, edits: int, deletes: int) -> None:
    base = tree / "notes"
    files = [base / f"topic{index % 5}" / f"note{index}.md" for index in range(30)]
    for index, path in enumerate(files):
        write(path, f"# Note {index}\n{sentence(index)}\n")
    client.watch_add("wb-notes", [str(base)], wait=True)
    latencies = []
    for edit in range(edits):
        path = files[edit % len(files)]
        word = f"wbedit{edit}x"
        started = time.perf_counter()
        path.write_text(f"# Note\n{sentence(edit)} Its marker is {word}.\n")
        until(lambda w=word, p=str(path): holders(client, "wb-notes", w) == [p], 60)
        latencies.append(time.perf_counter() - started)
    print(f"edit -> searchable (real model):   {figures(latencies)}   [{load()}]")

    gone = []
    for index in range(min(deletes, len(files) - 2)):
        path = files[index]
        word = f"wbdel{index}x"
        path.write_text(f"# Doomed\n{sentence(index)} Its marker is {word}.\n")
        until(lambda w=word: holders(client, "wb-notes", w), 60)
        started = time.perf_counter()
        path.unlink()
        until(lambda w=word: not holders(client, "wb-notes", w), 60)
        gone.append(time.perf_counter() - started)
    print(f"delete -> gone:                    {figures(gone)}   [{load()}]")

    source, target = files[-1], base / "renamed" / "moved-note.md"
    word = "wbrenamex"
    source.write_text(f"# Kept\nA note that moves. Its marker is {word}.\n")
    until(lambda: holders(client, "wb-notes", word) == [str(source)], 60)
    started = time.perf_counter()
    target.parent.mkdir(exist_ok=True)
    os.rename(source, target)
    until(lambda: holders(client, "wb-notes", word) == [str(target)], 60)
    took = time.perf_counter() - started
    names = {s.source for s in client.list_sources("wb-notes").sources}
    one_copy = holders(client, "wb-notes", word) == [str(target)] and str(source) not in names
    print(f"rename: one copy under the new name: {'yes' if one_copy else 'NO'} after {took:.2f} s   [{load()}]")
    client.watch_remove(project="wb-notes")


def rows(client: Client, project: str) -> set[tuple[str, int, int, bool]]:
    return {(s.source, s.bytes, s.chunks, s.complete) for s in client.list_sources(project, limit=100_000).sources}


def bench_burst(client: Client, tree: Path, count: int) -> None:
    base = tree / "burst"
    for index in range(count // 5):
        write(base / "old" / f"f{index}.md", f"# Old {index}\n{sentence(index)}\n")
    client.watch_add("wb-burst", [str(base)], wait=True)
    before = wait_idle(client, base)
    jobs_before = {job.job_id for job in client.ingest_status(limit=1000).jobs}
    started = time.perf_counter()
    for index in range(count // 5):                          # edits
        (base / "old" / f"f{index}.md").write_text(f"# Old {index}, edited\n{sentence(index + 7)}\n")
    for index in range(count - count // 5):                  # new files in new directories
        write(base / f"new{index // 100}" / f"n{index}.md", f"# New {index}\n{sentence(index + 3)}\n")
    written = time.perf_counter() - started
    until(lambda: len(rows(client, "wb-burst")) == count, 600)
    after = wait_idle(client, base)
    took = time.perf_counter() - started
    watch_jobs = len({job.job_id for job in client.ingest_status(limit=1000).jobs} - jobs_before)
    full = client.ingest("wb-burst-full", [str(base)], wait=True)
    same = rows(client, "wb-burst") == rows(client, "wb-burst-full")
    print(f"burst of {count} files (written in {written:.2f} s): {after.syncs - before.syncs} sync(s), "
          f"{watch_jobs} ingestion jobs made by the watch, searchable {took:.1f} s after the first write; "
          f"rows equal to one full ingest ({full.sources_added} sources): {'yes' if same else 'NO'}   [{load()}]")
    client.watch_remove(project="wb-burst")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu(pid: int, seconds: float) -> float:
    """The daemon's CPU use over ``seconds``, in % of one core."""
    start, started = cpu_seconds(pid), time.perf_counter()
    time.sleep(seconds)
    return 100 * (cpu_seconds(pid) - start) / (time.perf_counter() - started)


def bench_idle(client: Client, daemon: WatchDaemon, tree: Path, files: int, seconds: float) -> None:
    base = tree / "idle"
    directories = max(1, files // 20)
    for index in range(files):
        # 40 distinct texts: the 10,000 sources are real rows, but the model embeds only 40 chunks
        write(base / f"d{index % directories}" / f"f{index}.md", f"# Idle\n{sentence(index % 40)}\n")
    baseline = idle_cpu(daemon.process.pid, seconds)
    started = time.perf_counter()
    client.watch_add("wb-idle", [str(base)], wait=True)
    info = wait_idle(client, base)
    scanned = time.perf_counter() - started
    time.sleep(2)
    watched = idle_cpu(daemon.process.pid, seconds)
    print(f"idle CPU over {seconds:.0f} s: nothing watched {baseline:.2f}% of one core; {info.files} files in "
          f"{directories} directories watched ({info.mode}) {watched:.2f}% (target < 1%); first scan "
          f"{scanned:.1f} s   [{load()}]")


def bench_restart(client_factory: Any, daemon: WatchDaemon, tree: Path) -> None:
    base = tree / "restart"
    for index in range(10):
        write(base / f"r{index}.md", f"# Restart {index}\n{sentence(index)}\n")
    with client_factory() as client:
        client.watch_add("wb-restart", [str(base)], wait=True)
        for index in range(5):                                 # changes the daemon sees but cannot sync in time
            (base / f"r{index}.md").write_text(f"# Restart {index}\nmarker wbpend{index}x\n")
        # killed as soon as the daemon has them (journaled), before the burst's quiet time lets a sync start
        until(lambda: watch_info(client, base).pending >= 5, 30)
        pending = watch_info(client, base).pending
    daemon.kill()
    for index in range(5, 8):                                  # changes while it is down
        (base / f"r{index}.md").write_text(f"# Restart {index}\nmarker wbpend{index}x\n")
    (base / "r9.md").unlink()
    started = time.perf_counter()
    daemon.start_again()
    daemon.wait_ready()
    with client_factory() as client:
        def caught_up() -> bool:
            return (all(holders(client, "wb-restart", f"wbpend{index}x") for index in range(8))
                    and str(base / "r9.md") not in {s.source for s in client.list_sources("wb-restart").sources})

        try:
            until(caught_up, 300)
            verdict = f"all 9 changes found {time.perf_counter() - started:.1f} s after the restart began"
        except TimeoutError:
            verdict = "SOME CHANGES LOST"
    print(f"restart: SIGKILL with {pending} changes pending (+4 while down): {verdict}   [{load()}]")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pirag.stress.watch_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--edits", type=int, default=100)
    parser.add_argument("--deletes", type=int, default=20)
    parser.add_argument("--burst", type=int, default=500)
    parser.add_argument("--idle-files", type=int, default=10_000)
    parser.add_argument("--idle-s", type=float, default=60.0)
    parser.add_argument("--workdir", default="/tmp/pwb")
    parser.add_argument("--force-polling", action="store_true",
                        help="the daemon rescans instead of using inotify (watch.force_polling): its idle cost")
    args = parser.parse_args(argv)
    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    tree = work / "trees"
    tree.mkdir(parents=True)
    overrides: dict[str, dict[str, Any]] = {"ingest": {"allowed_roots": [str(tree)]}}
    if args.force_polling:
        overrides["watch"] = {"force_polling": True}
    daemon = WatchDaemon("watch-bench", work / "daemon", "", overrides)
    try:
        daemon.wait_ready()
        print(f"pirag watch bench: daemon pid {daemon.process.pid}, real default model   [{load()}]")
        with Client(daemon.socket, timeout=600) as client:
            if args.edits:
                bench_edits(client, tree, args.edits, args.deletes)
            if args.burst:
                bench_burst(client, tree, args.burst)
            if args.idle_files:
                bench_idle(client, daemon, tree, args.idle_files, args.idle_s)
        if not args.force_polling:
            bench_restart(lambda: Client(daemon.socket, timeout=600), daemon, tree)
    finally:
        daemon.stop()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
