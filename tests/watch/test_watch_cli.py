"""``pirag watch add|list|remove`` as a person types it (the real command, the real daemon; fake embedder)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import PIRAG

from .helpers import write


def pirag(daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PIRAG, *args, "--socket", str(daemon.socket)],
                          capture_output=True, text=True, timeout=60)


def test_the_watch_command(watch_daemon, tree_root: Path) -> None:
    base = tree_root / "cli"
    write(base / "a.md", "alpha\n")
    added = pirag(watch_daemon, "watch", "add", str(base), "--project", "cli")
    assert added.returncode == 0, added.stderr
    assert "1 new watches" in added.stdout and "1 files" in added.stdout and "inotify" in added.stdout
    listed = pirag(watch_daemon, "watch", "list", "--json")
    watch = json.loads(listed.stdout)["watches"][0]
    assert (watch["path"], watch["project"], watch["files"], watch["state"]) == (str(base), "cli", 1, "watching")
    assert pirag(watch_daemon, "watch", "add", str(base)).returncode == 2            # no --project
    assert pirag(watch_daemon, "watch", "remove").returncode == 2                    # neither paths nor --project
    refused = pirag(watch_daemon, "watch", "add", "/", "--project", "cli")
    assert refused.returncode == 1 and "forbidden" in refused.stderr
    removed = pirag(watch_daemon, "watch", "remove", "--project", "cli")
    assert removed.returncode == 0 and "removed 1" in removed.stdout
    assert "no watches" in pirag(watch_daemon, "watch", "list", "--project", "cli").stdout


def test_status_shows_each_watch(watch_daemon, tree_root: Path) -> None:
    base = tree_root / "cli-status"
    write(base / "a.md", "alpha\n")
    assert pirag(watch_daemon, "watch", "add", str(base), "-p", "cli-status").returncode == 0
    shown = pirag(watch_daemon, "status")
    assert shown.returncode == 0
    line = next(line for line in shown.stdout.splitlines() if str(base) in line)
    for part in ("cli-status", "watching (inotify)", "1 files", "last sync", "0 pending", "lag"):
        assert part in line, (part, line)
    assert pirag(watch_daemon, "watch", "remove", str(base)).returncode == 0
