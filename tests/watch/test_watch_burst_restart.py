"""Bursts and restarts through the real daemon (fake embedder: plumbing).

- a 500-file burst (edits, deletes, creates in new directories) is one sync, and ends in the same rows as one
  full ``ingest`` of the same directory;
- a daemon killed (SIGKILL) while changes are pending loses none of them: neither those inotify reported (one is
  a rewrite that keeps the file's size and time, which no rescan could see) nor those made while it was down.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.conftest import wait_until

from .conftest import watch_config
from .helpers import sources, the_watch, wait_idle, wait_sources, wait_word, write


def rows_of(client: Any, project: str) -> set[tuple[str, int, int, bool]]:
    return {(s.source, s.bytes, s.chunks, s.complete) for s in client.list_sources(project, limit=100_000).sources}


def test_a_500_file_burst_is_one_sync_with_the_rows_of_a_full_ingest(wclient, tree_root: Path) -> None:
    base = tree_root / "burst"
    for index in range(200):
        write(base / f"old{index // 50}" / f"f{index}.md", f"# file {index}\noriginal text number {index}\n")
    wclient.watch_add("burst", [str(base)], wait=True)
    before = wait_idle(wclient, base)
    assert before.files == 200

    # a `git checkout`: 150 edits, 50 deletions, 300 new files in new directories, as fast as the disk goes
    for index in range(150):
        (base / f"old{index // 50}" / f"f{index}.md").write_text(f"# file {index}\nedited text number {index}\n")
    for index in range(150, 200):
        (base / f"old{index // 50}" / f"f{index}.md").unlink()
    for index in range(300):
        write(base / f"new{index // 60}" / "deep" / f"n{index}.txt", f"new file {index}\n")
    expected = {str(base / f"old{i // 50}" / f"f{i}.md") for i in range(150)} | {
        str(base / f"new{i // 60}" / "deep" / f"n{i}.txt") for i in range(300)}
    wait_sources(wclient, "burst", expected, timeout=60)
    after = wait_idle(wclient, base)
    assert after.syncs - before.syncs == 1, f"{after.syncs - before.syncs} syncs for one burst"
    assert after.files == 450 and after.errors == 0
    jobs_before = {job.job_id for job in wclient.ingest_status(limit=1000).jobs}

    full = wclient.ingest("burst-full", [str(base)], wait=True)
    assert full.state == "done" and full.sources_added == 450
    assert rows_of(wclient, "burst") == rows_of(wclient, "burst-full")
    # the watch ran no ingestion jobs of its own: only the full ingest above made one
    assert len({job.job_id for job in wclient.ingest_status(limit=1000).jobs} - jobs_before) == 1
    wclient.watch_remove(project="burst")


def test_a_restart_with_pending_changes_loses_none(daemon_factory: Any, short_tmp: Path) -> None:
    root = short_tmp / "restart-tree"
    base = root / "notes"
    write(base / "edited.md", "before the edit: walrus\n")
    write(base / "deleted.md", "this one goes away\n")
    same = write(base / "same-size.md", "AAAA kestrel\n")
    # a long quiet time keeps the changes pending long enough to kill the daemon under them
    handle = daemon_factory("restart", watch_config(root, quiet_ms=30_000, max_delay_s=60.0))
    with handle.client() as client:
        client.watch_add("restart", [str(base)], wait=True)
        assert sources(client, "restart") == {str(base / "edited.md"), str(base / "deleted.md"), str(same)}
        stamp = same.stat()
        (base / "edited.md").write_text("after the edit: narwhal\n")
        write(base / "created.md", "created while pending: ocelot\n")
        same.write_text("BBBB pelican\n")                     # same size ...
        os.utime(same, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))   # ... and the same time: no rescan sees it
        wait_until(lambda: the_watch(client, base).pending >= 3, timeout=10)
        wait_until(lambda: len(handle_pending(handle)) >= 3, timeout=10)     # journaled
    handle.kill9()
    (base / "deleted.md").unlink()                            # while the daemon is down
    write(base / "offline.md", "written while the daemon was down: tapir\n")
    handle.restart()
    with handle.client() as client:
        expected = {str(base / name) for name in ("edited.md", "same-size.md", "created.md", "offline.md")}
        wait_sources(client, "restart", expected, timeout=60)
        for word, name in (("narwhal", "edited.md"), ("pelican", "same-size.md"), ("ocelot", "created.md"),
                           ("tapir", "offline.md")):
            assert wait_word(client, "restart", word, timeout=60) == [str(base / name)], word
        for gone in ("walrus", "kestrel"):
            assert not [h for h in client.search(gone, "restart", use_cache=False).hits if gone in h.text]
        info = wait_idle(client, base, timeout=60)
        assert info.pending == 0 and info.error_code == ""
    assert handle_pending(handle) == []


def handle_pending(handle: Any) -> list[tuple[str]]:
    """The journal rows, read from the daemon's SQLite file (WAL: a reader sees what was committed)."""
    import sqlite3

    conn = sqlite3.connect(f"file:{handle.state_dir / 'pirag.sqlite3'}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT path FROM watch_pending").fetchall()
    finally:
        conn.close()
