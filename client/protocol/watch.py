"""Operations of watched folders (declared with define_op; see base.py).

A watch keeps one project in step with one directory on the daemon's machine: changes found there (inotify, or
periodic rescans where inotify cannot be had) go through the same incremental ingestion as ``ingest``. Watches
are kept by the daemon and come back when it restarts. Times are Unix seconds.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from .base import MAX_NAME, Args, Name, Result, define_op
from .documents import PathText

# Stable codes of a watch's ``error_code`` (the watch goes on; these say what holds it back). Add, never rename.
INOTIFY_LIMIT = "inotify_limit"        # the kernel's inotify watch/instance limit: the tree is rescanned instead
PATH_MISSING = "path_missing"          # the watched directory is gone (unmounted, deleted): retried
PATH_UNREADABLE = "path_unreadable"    # it cannot be read (permissions): retried
OUTSIDE_ROOTS = "outside_roots"        # it is no longer under ingest.allowed_roots (config changed): retried
SYNC_FAILED = "sync_failed"            # the last sync failed (storage, ...): its changes stay pending, retried

WATCH_ERROR_CODES = (INOTIFY_LIMIT, PATH_MISSING, PATH_UNREADABLE, OUTSIDE_ROOTS, SYNC_FAILED)


class WatchInfo(msgspec.Struct, kw_only=True):
    id: int
    project: str
    path: str
    mode: str = "inotify"             # inotify | polling (periodic rescans: watch.rescan_interval_s)
    state: str = "starting"           # starting | watching | syncing | missing | error
    files: int = 0                    # sources of the project under this path
    pending: int = 0                  # changed paths waiting for the next sync
    lag_s: float = 0.0                # age of the oldest pending change (0: nothing pending)
    last_sync_at: float | None = None
    last_lag_s: float | None = None   # the last sync: oldest change seen -> searchable
    syncs: int = 0                    # syncs since the daemon started (a burst of changes is one sync)
    errors: int = 0                   # files that failed to ingest, and failed syncs, since the daemon started
    error_code: str = ""              # one of WATCH_ERROR_CODES, or empty
    error: str = ""                   # what is wrong now, for people
    created_at: float = 0.0


class WatchAddArgs(Args):
    project: Name
    paths: Annotated[list[PathText], msgspec.Meta(min_length=1, max_length=256)]
    # Wait until each new watch finished its first scan (its files are searchable) before answering.
    wait: bool = False


class WatchAddResult(Result):
    watches: list[WatchInfo]
    added: int = 0                    # new watches (a path already watched for this project is returned as is)


class WatchListArgs(Args):
    project: Annotated[str, msgspec.Meta(max_length=MAX_NAME)] = ""   # empty: every project


class WatchListResult(Result):
    watches: list[WatchInfo]


class WatchRemoveArgs(Args):
    paths: Annotated[list[PathText], msgspec.Meta(max_length=256)] = []
    project: Annotated[str, msgspec.Meta(max_length=MAX_NAME)] = ""   # with no paths: every watch of the project


class WatchRemoveResult(Result):
    removed: int


WATCH_ADD = define_op("watch_add", WatchAddArgs, WatchAddResult, idempotent=True,
                      summary="Watch directories (daemon-side paths): keep a project in step with them.")
WATCH_LIST = define_op("watch_list", WatchListArgs, WatchListResult, idempotent=True,
                       summary="Watched directories: files, last sync, pending changes, lag, errors.")
WATCH_REMOVE = define_op("watch_remove", WatchRemoveArgs, WatchRemoveResult, idempotent=True,
                         summary="Stop watching directories (by path, or every watch of a project); "
                                 "the project's contents stay.")
