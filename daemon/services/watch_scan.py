"""What one sync of a watched directory must do: from changed paths (or a whole rescan) to files to ingest and
sources to remove, with the rules of ``ingest`` (allowed roots, ``.gitignore``, skip rules).

A changed path is compared with the disk as it is now, not with the event that named it: events arrive late,
merged and out of order (an editor's write-to-temp-then-rename, a ``git checkout``), and the disk is the truth.

- a file that exists and is not ignored is ingested (its content hash decides whether anything is re-embedded);
- a path that is gone, ignored, or no longer a file to ingest loses its source, and every source under it
  (a directory moved away or deleted);
- a directory (one moved in) and the directory of a changed ``.gitignore`` are rescanned: every file under it,
  and the sources under it that are no longer found there are removed, as a full ``ingest`` of it would.

A rescan (start-up, polling fallback, periodic check) does not read a file whose size and modification time match
a complete source (a 10,000-file tree costs only its ``stat`` calls), unless an event named it: a rewrite may keep
both. Pure functions, run on a worker thread.
"""

from __future__ import annotations

import bisect
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pirag.client.protocol.watch import OUTSIDE_ROOTS, PATH_MISSING, PATH_UNREADABLE

from .walk import FoundFile, is_under, walk_under

# source -> (mtime, bytes, complete), as ``store.watches.source_stats`` reads them
Known = dict[str, tuple[float | None, int, bool]]


class RootUnavailable(Exception):
    """The watched directory itself cannot be used now (``code``: a watch error code); nothing is changed."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class SyncPlan:
    files: list[FoundFile] = field(default_factory=list)        # to ingest
    removed: list[str] = field(default_factory=list)            # sources to delete
    skipped: list[tuple[str, str]] = field(default_factory=list)
    dirs_seen: set[tuple[int, int]] = field(default_factory=set)  # directories walked (inotify coverage check)
    unchanged: int = 0                                          # rescanned files not read (size and time match)


def check_root(root: str, allowed_roots: list[Path]) -> None:
    """Raise ``RootUnavailable`` when the watched directory is gone, unreadable or outside the roots."""
    real = Path(os.path.realpath(root))
    if not is_under(real, allowed_roots):
        raise RootUnavailable(OUTSIDE_ROOTS, f"{root} is outside ingest.allowed_roots (after resolving symlinks)")
    try:
        info = os.stat(real)
    except FileNotFoundError:
        raise RootUnavailable(PATH_MISSING, f"{root} does not exist (deleted, moved or unmounted)") from None
    except OSError as exc:
        raise RootUnavailable(PATH_UNREADABLE, f"{root}: {exc.strerror}") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise RootUnavailable(PATH_MISSING, f"{root} is no longer a directory")
    try:
        with os.scandir(real) as entries:
            next(entries, None)
    except OSError as exc:
        raise RootUnavailable(PATH_UNREADABLE, f"{root}: {exc.strerror}") from exc


def plan_sync(root: str, changed: Iterable[str], rescan: bool, known: Known, allowed_roots: list[Path],
              max_file_bytes: int) -> SyncPlan:
    """The plan for one sync of the watch on ``root``: ``changed`` paths, or everything when ``rescan``."""
    check_root(root, allowed_roots)
    root = os.path.abspath(root)
    changed = [os.path.abspath(path) for path in changed]
    forced = set(changed)   # named by an event: read whatever size and time say (a rewrite may keep both)
    if rescan:
        subtrees, files = [root], []
    else:
        subtrees, files = _split(root, changed)
    plan = SyncPlan()
    names = sorted(known)
    for subtree in subtrees:
        result, dirs, absent = walk_under(root, [subtree], allowed_roots, max_file_bytes)
        plan.dirs_seen |= dirs
        plan.skipped.extend(result.skipped)
        found = {item.path for item in result.files}
        for item in result.files:
            stored = known.get(item.path)
            if (stored is not None and stored[2] and stored[1] == item.size and stored[0] == item.mtime
                    and item.path not in forced):
                plan.unchanged += 1
            else:
                plan.files.append(item)
        plan.removed.extend(source for source in _under(names, subtree) if source not in found)
    if files:
        result, _, absent = walk_under(root, files, allowed_roots, max_file_bytes)
        plan.files.extend(result.files)
        plan.skipped.extend(result.skipped)
        found = {item.path for item in result.files}
        for path in files:
            if path not in found:
                if path in known:
                    plan.removed.append(path)
                plan.removed.extend(_under(names, path))   # it may have been a directory
    plan.removed = sorted(set(plan.removed))
    return plan


def _split(root: str, changed: Iterable[str]) -> tuple[list[str], list[str]]:
    """Changed paths -> (directories to rescan, files to look at), nothing inside a rescanned directory twice."""
    subtrees: set[str] = set()
    files: set[str] = set()
    for raw in changed:
        path = os.path.abspath(raw)
        if path != root and not path.startswith(root + "/"):
            continue
        if os.path.basename(path) == ".gitignore":
            subtrees.add(os.path.dirname(path))
        elif path == root or os.path.isdir(path):
            subtrees.add(path)
        else:
            files.add(path)
    kept = sorted(subtrees, key=len)
    outer: list[str] = []
    for subtree in kept:
        if not any(subtree == other or subtree.startswith(other + "/") for other in outer):
            outer.append(subtree)
    inner = sorted(path for path in files
                   if not any(path.startswith(subtree.rstrip("/") + "/") for subtree in outer))
    return outer, inner


def _under(names: list[str], path: str) -> list[str]:
    """The sources (``names`` sorted) strictly under the directory ``path``."""
    prefix = path.rstrip("/") + "/"
    found = []
    for index in range(bisect.bisect_left(names, prefix), len(names)):
        if not names[index].startswith(prefix):
            break
        found.append(names[index])
    return found
