"""The inotify limit, for real: the daemon runs in a user namespace of its own whose
``/proc/sys/user/max_inotify_watches`` is set low (the limit is counted per user namespace, so the machine's own
limit and the other processes on it are untouched). Fake embedder: plumbing.

- a tree with more directories than the limit: the watch falls back to periodic rescans at once
  (``mode="polling"``, ``error_code="inotify_limit"`` in ``watch_list`` and ``status``), and changes still arrive;
- a tree that fits, then grows past the limit: the silently unwatched directories are noticed and the watch
  falls back the same way;
- ``watch.force_polling`` (network filesystems) works the same way without inotify at all.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_until

from .conftest import start_wrapped, watch_config
from .helpers import the_watch, wait_sources, write

LIMIT = 6


def userns_works() -> bool:
    probe = subprocess.run(["unshare", "-U", "-r", "sh", "-c", "echo 5 > /proc/sys/user/max_inotify_watches"],
                           capture_output=True, timeout=10)
    return probe.returncode == 0


@pytest.fixture(scope="module")
def limited(xprocess: Any, short_tmp: Path) -> Any:
    if shutil.which("unshare") is None or not userns_works():
        pytest.skip("needs unshare(1) and user namespaces (to lower the inotify limit for one process)")
    root = short_tmp / "limited"
    tree = root / "tree"
    tree.mkdir(parents=True)
    handle = start_wrapped(xprocess, f"pirag-{short_tmp.name}-limited", root, tree,
                           f"exec unshare -U -r sh -c 'echo {LIMIT} > /proc/sys/user/max_inotify_watches && "
                           "exec {pirag}'")
    yield handle, tree
    handle.stop()
    handle.assert_clean_log()


def wait_polling(client: Any, path: Path) -> Any:
    return wait_until(lambda: (lambda w: w if w.mode == "polling" else None)(the_watch(client, path)), timeout=20)


def test_a_tree_over_the_limit_is_rescanned_instead(limited: Any) -> None:
    handle, tree = limited
    base = tree / "big"
    for index in range(LIMIT + 4):
        write(base / f"d{index}" / "note.md", f"note {index}\n")
    with handle.client() as client:
        client.watch_add("big", [str(base)], wait=True)
        info = wait_polling(client, base)
        assert info.error_code == "inotify_limit" and "max_user_watches" in info.error
        shown = {w["path"]: w for w in client.status().components["watch"]["watches"]}
        assert shown[str(base)]["mode"] == "polling" and shown[str(base)]["error_code"] == "inotify_limit"
        expected = {str(base / f"d{index}" / "note.md") for index in range(LIMIT + 4)}
        wait_sources(client, "big", expected)
        write(base / "d0" / "later.md", "found by a rescan\n")
        wait_sources(client, "big", expected | {str(base / "d0" / "later.md")})
        (base / "d1" / "note.md").unlink()
        wait_sources(client, "big", expected - {str(base / "d1" / "note.md")} | {str(base / "d0" / "later.md")})
        client.watch_remove(project="big")


def test_a_tree_that_grows_past_the_limit_falls_back(limited: Any) -> None:
    handle, tree = limited
    base = tree / "growing"
    write(base / "a" / "note.md", "fits\n")
    with handle.client() as client:
        client.watch_add("growing", [str(base)], wait=True)
        assert the_watch(client, base).mode == "inotify"
        for index in range(LIMIT + 2):                  # more new directories than the limit leaves room for
            write(base / f"new{index}" / "note.md", f"new {index}\n")
        info = wait_polling(client, base)
        assert info.error_code == "inotify_limit"
        expected = {str(base / "a" / "note.md")} | {str(base / f"new{i}" / "note.md") for i in range(LIMIT + 2)}
        wait_sources(client, "growing", expected)
        write(base / f"new{LIMIT + 1}" / "after.md", "in a directory inotify never watched\n")
        wait_sources(client, "growing", expected | {str(base / f"new{LIMIT + 1}" / "after.md")})
        assert client.ping() is not None
        client.watch_remove(project="growing")


def test_force_polling(daemon_factory: Any, short_tmp: Path) -> None:
    tree = short_tmp / "polled"
    base = tree / "share"
    write(base / "a.md", "alpha\n")
    handle = daemon_factory("polled", watch_config(tree, force_polling=True))
    with handle.client() as client:
        client.watch_add("polled", [str(base)], wait=True)
        info = the_watch(client, base)
        assert (info.mode, info.error_code) == ("polling", "")
        write(base / "b.md", "beta\n")
        wait_sources(client, "polled", {str(base / "a.md"), str(base / "b.md")})
