"""Watched folders through the real daemon process and socket (fake embedder: the plumbing, not the model).

Creates, edits, deletes, renames and directory moves on real files; the ingest rules (.gitignore, default
ignores, binary files); bad requests answered with stable codes while the daemon stays up; a vanished watched
directory reported and retried; a project's drop taking its watches along.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pirag.client.errors import Conflict, Forbidden, InvalidArgument, NotFound

from .helpers import sources, the_watch, wait_idle, wait_sources, wait_word, write


def test_add_list_remove_and_the_first_scan(wclient, tree_root: Path) -> None:
    base = tree_root / "basic"
    write(base / "a.md", "# alpha\nthe first note\n")
    write(base / "sub" / "b.txt", "beta note\n")
    added = wclient.watch_add("basic", [str(base)], wait=True)
    assert added.added == 1 and added.watches[0].path == str(base)
    assert sources(wclient, "basic") == {str(base / "a.md"), str(base / "sub" / "b.txt")}
    info = the_watch(wclient, base)
    assert (info.project, info.mode, info.files, info.pending) == ("basic", "inotify", 2, 0)
    assert info.last_sync_at is not None and info.error_code == ""
    again = wclient.watch_add("basic", [str(base) + "/"])     # the same path again: the same watch, not a second
    assert again.added == 0 and [w.id for w in again.watches] == [info.id]
    status = wclient.status().components["watch"]
    assert status["count"] == 1 and status["watches"][0]["path"] == str(base)
    assert wclient.watch_remove([str(base)]).removed == 1
    assert wclient.watch_list().watches == []
    write(base / "c.md", "written after the watch was removed\n")
    with pytest.raises(NotFound):
        wclient.watch_remove([str(base)])
    assert str(base / "c.md") not in sources(wclient, "basic")   # what was ingested stays, nothing new comes


def test_creates_edits_deletes_renames_and_directory_moves(wclient, tree_root: Path) -> None:
    base = tree_root / "live"
    outside_tree = tree_root / "parked"                 # inside the allowed roots, outside the watch
    write(base / "keep.md", "kept\n")
    wclient.watch_add("live", [str(base)], wait=True)

    write(base / "new.md", "a new file with the word zebra\n")
    wait_sources(wclient, "live", {str(base / "keep.md"), str(base / "new.md")})

    (base / "new.md").write_text("edited: the word is now quokka\n")
    assert wait_word(wclient, "live", "quokka") == [str(base / "new.md")]
    assert not [h for h in wclient.search("zebra", "live", k=5, use_cache=False).hits if "zebra" in h.text]

    os.rename(base / "new.md", base / "renamed.md")
    wait_sources(wclient, "live", {str(base / "keep.md"), str(base / "renamed.md")})
    hits = [h for h in wclient.search("quokka", "live", k=5, use_cache=False).hits if "quokka" in h.text]
    assert [h.source for h in hits] == [str(base / "renamed.md")]     # one copy, under the new name

    (base / "renamed.md").unlink()
    wait_sources(wclient, "live", {str(base / "keep.md")})

    write(outside_tree / "docs" / "one.md", "moved in one\n")
    write(outside_tree / "docs" / "deeper" / "two.md", "moved in two\n")
    os.rename(outside_tree / "docs", base / "docs")                 # a directory moved into the watch
    wait_sources(wclient, "live", {str(base / "keep.md"), str(base / "docs" / "one.md"),
                                   str(base / "docs" / "deeper" / "two.md")})
    os.rename(base / "docs", base / "manual")                       # renamed inside
    wait_sources(wclient, "live", {str(base / "keep.md"), str(base / "manual" / "one.md"),
                                   str(base / "manual" / "deeper" / "two.md")})
    write(base / "manual" / "deeper" / "three.md", "written in the renamed directory\n")  # still watched
    wait_sources(wclient, "live", {str(base / "keep.md"), str(base / "manual" / "one.md"),
                                   str(base / "manual" / "deeper" / "two.md"),
                                   str(base / "manual" / "deeper" / "three.md")})
    os.rename(base / "manual", outside_tree / "manual")             # moved out
    wait_sources(wclient, "live", {str(base / "keep.md")})
    info = wait_idle(wclient, base)
    assert (info.files, info.errors, info.mode, info.error_code) == (1, 0, "inotify", ""), info


def test_ignore_rules_are_those_of_ingest(wclient, tree_root: Path) -> None:
    base = tree_root / "rules"
    write(base / ".gitignore", "*.log\nsecret/\n")
    write(base / "a.md", "text\n")
    wclient.watch_add("rules", [str(base)], wait=True)
    write(base / "debug.log", "ignored by .gitignore\n")
    write(base / "secret" / "key.md", "ignored directory\n")
    write(base / "node_modules" / "pkg" / "index.js", "ignored by default\n")
    (base / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    write(base / "b.md", "a file that counts\n")
    expected = {str(base / "a.md"), str(base / "b.md"), str(base / ".gitignore")}   # as `ingest` has it
    wait_sources(wclient, "rules", expected)
    (base / ".gitignore").write_text("secret/\n")                   # *.log is no longer ignored
    wait_sources(wclient, "rules", expected | {str(base / "debug.log")})
    (base / ".gitignore").write_text("secret/\n*.md\n")             # now the notes are
    wait_sources(wclient, "rules", {str(base / "debug.log"), str(base / ".gitignore")})


def test_bad_requests_have_stable_codes_and_the_daemon_stays_up(wclient, tree_root: Path, short_tmp: Path) -> None:
    base = tree_root / "bad"
    write(base / "a.md", "a\n")
    with pytest.raises(NotFound):
        wclient.watch_add("bad", [str(tree_root / "no-such-dir")])
    with pytest.raises(InvalidArgument, match="not a directory"):
        wclient.watch_add("bad", [str(base / "a.md")])
    with pytest.raises(Forbidden):
        wclient.watch_add("bad", [str(short_tmp)])                    # above the allowed root
    (tree_root / "loop1").symlink_to(tree_root / "loop2")
    (tree_root / "loop2").symlink_to(tree_root / "loop1")
    with pytest.raises(InvalidArgument, match="symlink loop") as caught:
        wclient.watch_add("bad", [str(tree_root / "loop1")])
    assert caught.value.details["reason"] == "symlink_loop"
    outside = short_tmp / "outside-target"
    outside.mkdir(exist_ok=True)
    (tree_root / "escape").symlink_to(outside)
    with pytest.raises(Forbidden):
        wclient.watch_add("bad", [str(tree_root / "escape")])           # a symlink leading out is refused
    wclient.watch_add("bad", [str(base)], wait=True)
    (base / "inner").mkdir()
    with pytest.raises(Conflict):
        wclient.watch_add("bad", [str(base / "inner")])                  # nested in a watch of the same project
    with pytest.raises(InvalidArgument):
        wclient.watch_remove()
    with pytest.raises(NotFound):
        wclient.watch_remove(project="never-watched")
    # nothing half-written: the refused calls left exactly the one watch
    assert [w.path for w in wclient.watch_list("bad").watches] == [str(base)]
    assert wclient.ping() is not None
    wclient.watch_remove(project="bad")


def test_symlink_loop_inside_a_watched_tree_is_skipped(wclient, tree_root: Path) -> None:
    base = tree_root / "looped"
    write(base / "a.md", "a\n")
    (base / "sub").mkdir()
    (base / "sub" / "back").symlink_to(base)                          # a loop back to the top
    write(tree_root / "elsewhere" / "e.md", "reached through a symlink\n")
    (base / "linked").symlink_to(tree_root / "elsewhere")             # followed, named under the link
    wclient.watch_add("looped", [str(base)], wait=True)
    assert sources(wclient, "looped") == {str(base / "a.md"), str(base / "linked" / "e.md")}
    write(base / "sub" / "b.md", "b\n")
    write(tree_root / "elsewhere" / "f.md", "a change behind the link\n")
    wait_sources(wclient, "looped", {str(base / "a.md"), str(base / "sub" / "b.md"), str(base / "linked" / "e.md"),
                                     str(base / "linked" / "f.md")})
    info = wait_idle(wclient, base)
    assert (info.state, info.mode, info.error_code) == ("watching", "inotify", ""), info


def test_a_vanished_directory_is_reported_and_retried(wclient, tree_root: Path) -> None:
    base = tree_root / "vanishing"
    write(base / "a.md", "alpha\n")
    wclient.watch_add("vanishing", [str(base)], wait=True)
    shutil.rmtree(base)

    def missing():
        info = the_watch(wclient, base)
        return info if info.state == "missing" else None

    from tests.conftest import wait_until

    info = wait_until(missing, timeout=15)
    assert info.error_code == "path_missing" and str(base) in info.error
    shown = {w["path"]: w for w in wclient.status().components["watch"]["watches"]}
    assert shown[str(base)]["error_code"] == "path_missing", shown
    # its sources stay (an unmounted disk is not a deleted project) and the daemon keeps serving
    assert sources(wclient, "vanishing") == {str(base / "a.md")}
    write(base / "b.md", "beta, after the directory came back\n")
    wait_sources(wclient, "vanishing", {str(base / "b.md")})            # back: a rescan reconciles everything
    info = wait_idle(wclient, base)
    assert info.error_code == "" and info.mode == "inotify"
    write(base / "c.md", "gamma, seen by the new inotify watch\n")
    wait_sources(wclient, "vanishing", {str(base / "b.md"), str(base / "c.md")})
    wclient.watch_remove(project="vanishing")


def test_dropping_a_project_removes_its_watches(wclient, tree_root: Path) -> None:
    base = tree_root / "dropped"
    write(base / "a.md", "alpha\n")
    wclient.watch_add("dropped", [str(base)], wait=True)
    assert wclient.drop_project("dropped").dropped
    assert wclient.watch_list("dropped").watches == []
    write(base / "b.md", "would recreate the project if the watch lived on\n")
    import time

    time.sleep(1.0)
    assert "dropped" not in {p.name for p in wclient.list_projects().projects}


def test_the_async_client(watch_daemon, tree_root: Path) -> None:
    import asyncio

    from pirag.client import AsyncClient

    base = tree_root / "async"
    write(base / "a.md", "alpha\n")

    async def run() -> None:
        async with AsyncClient(watch_daemon.socket) as client:
            added = await client.watch_add("async", str(base), wait=True)
            assert added.added == 1 and added.watches[0].files == 1
            listed = await client.watch_list("async")
            assert [w.path for w in listed.watches] == [str(base)]
            assert (await client.watch_remove(str(base))).removed == 1
            assert (await client.watch_list("async")).watches == []

    asyncio.run(run())


def test_the_daemons_own_files_do_not_feed_the_watch(daemon_factory, short_tmp: Path) -> None:
    """A watched folder holding the daemon's state directory: its database changes with every sync, which
    must not start another one (an endless loop burning a core)."""
    import time

    from .conftest import watch_config

    root = short_tmp / "selfwatch"
    write(root / "note.md", "a note beside the daemon's files\n")
    handle = daemon_factory("selfwatch", {**watch_config(root), "state_dir": str(root / "state")})
    with handle.client() as client:
        client.watch_add("self", [str(root)], wait=True)
        syncs = the_watch(client, root).syncs
        write(root / "other.md", "one change\n")
        wait_sources(client, "self", {str(root / "note.md"), str(root / "other.md")})
        time.sleep(2.0)
        assert the_watch(client, root).syncs - syncs <= 2, "the daemon's own writes keep the watch syncing"
