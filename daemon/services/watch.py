"""The ``watch`` component: watched folders, kept in SQLite, synced through the documents' ingestion.

Each watch (one project, one directory) has a task of its own on the event loop:

1. **start**: an inotify notifier (``watch_notify.py``) on a worker thread, or, where inotify cannot be had
   (its limits, ``watch.force_polling``), periodic rescans; then a rescan of the whole tree, which catches
   what changed while the daemon was down (and the changes left in ``watch_pending`` by a crash).
2. **collect**: changed paths arrive from the notifier, are journaled in ``watch_pending`` and wait until the
   burst is over (``watch.quiet_ms`` without a change, at most ``watch.max_delay_s``): a ``git checkout`` of
   500 files is one sync, not 500.
3. **sync**: ``watch_scan.plan_sync`` turns the changed paths into files to ingest and sources to remove with
   ``ingest``'s rules; ``DocumentService.sync_sources`` applies them under the project's lock (content hashes:
   an unchanged file costs no embedding); only then are the pending rows deleted.

Nothing here raises out of a watch's task: a vanished or unreadable directory, a full inotify table or a failed
sync becomes the watch's ``state`` / ``error_code`` (shown by ``status`` and ``watch_list``) and is retried
every ``watch.retry_interval_s``; pending changes stay pending until a sync commits them.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from pirag.client.errors import Conflict, Forbidden, InvalidArgument, NotFound
from pirag.client.protocol.watch import (
    INOTIFY_LIMIT, OUTSIDE_ROOTS, PATH_MISSING, PATH_UNREADABLE, SYNC_FAILED, WatchAddArgs, WatchAddResult, WatchInfo, WatchListArgs, WatchListResult,
    WatchRemoveArgs, WatchRemoveResult,
)

from ..config import Config
from ..store import watches as rows
from .ingest import IngestRun
from .walk import is_under, resolve_roots
from .watch_notify import NotifyUnavailable, TreeWatcher, read_limit
from .watch_scan import RootUnavailable, plan_sync

log = logging.getLogger("pirag.watch")


@dataclass
class Watch:
    """The live state of one watch (its row is ``store.watches.WatchRow``)."""

    id: int
    project: str
    path: str
    created_at: float
    last_sync_at: float | None = None
    mode: str = "inotify"
    state: str = "starting"
    error_code: str = ""
    error: str = ""
    files: int = 0
    syncs: int = 0
    errors: int = 0
    last_lag_s: float | None = None
    pending: dict[str, tuple[float, int]] = field(default_factory=dict)   # path -> (first seen, seq)
    last_change: float = 0.0
    rescan: bool = True               # the next sync rescans the whole tree (start-up, polling, verify, retry)
    fresh: bool = False               # the notifier was just started: the next rescan checks the kernel's coverage
    notifier: TreeWatcher | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    first_sync: asyncio.Future[None] | None = None
    task: asyncio.Task[None] | None = None

    def info(self) -> WatchInfo:
        oldest = min((seen for seen, _ in self.pending.values()), default=None)
        return WatchInfo(
            id=self.id, project=self.project, path=self.path, mode=self.mode, state=self.state, files=self.files,
            pending=len(self.pending), lag_s=round(time.time() - oldest, 3) if oldest is not None else 0.0,
            last_sync_at=self.last_sync_at, last_lag_s=self.last_lag_s, syncs=self.syncs, errors=self.errors,
            error_code=self.error_code, error=self.error, created_at=self.created_at)


class WatchService:
    name = "watch"

    def __init__(self, config: Config, db: Any, documents: Any):
        self.config = config
        self.db = db
        self.documents = documents
        self.watches: dict[int, Watch] = {}
        self._seq = 0
        self._notifier_lock = asyncio.Lock()   # one notifier created at a time (their inotify fds are told apart)
        self._writes: set[asyncio.Task[Any]] = set()

    # -- lifecycle ----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        migrated = self.db.register_migrations("watch", rows.WATCH_MIGRATIONS)
        if migrated is not None:
            await migrated
        for row in await self.db.read(rows.all_watches):
            watch = self._track(row)
            for path, seen_at, seq in await self.db.read(lambda conn, w=row.id: rows.pending(conn, w)):
                watch.pending[path] = (seen_at, seq)
                self._seq = max(self._seq, seq)
            log.info("watch: restoring %s -> %s (%d changes pending)", watch.path, watch.project, len(watch.pending))
        for watch in self.watches.values():
            self._launch(watch)

    async def close(self) -> None:
        for watch in list(self.watches.values()):
            await self._stop(watch)
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    def stats(self) -> dict[str, Any]:
        infos = [self._builtins(watch.info()) for watch in self.watches.values()]
        return {"watches": infos, "count": len(infos),
                "polling": sum(1 for watch in self.watches.values() if watch.mode == "polling"),
                "pending": sum(len(watch.pending) for watch in self.watches.values()),
                "max_lag_s": max((info["lag_s"] for info in infos), default=0.0),
                "inotify_max_user_watches": read_limit("max_user_watches"),
                "inotify_max_user_instances": read_limit("max_user_instances")}

    def handlers(self) -> dict[str, Any]:
        return {"watch_add": self._add, "watch_list": self._list, "watch_remove": self._remove}

    async def drop_project(self, project: str) -> int:
        """The project is being dropped: its watches go with it (they would create it again)."""
        doomed = [watch for watch in self.watches.values() if watch.project == project]
        return await self._forget(doomed)

    # -- ops ----------------------------------------------------------------------------------------------------

    async def _add(self, args: WatchAddArgs, ctx: Any) -> WatchAddResult:
        roots = resolve_roots(self.config.ingest.allowed_roots)
        if not roots:
            raise Forbidden("this daemon reads no files: ingest.allowed_roots is empty, so it can watch none",
                            details={"allowed_roots": []})
        paths = list(dict.fromkeys(_checked_directory(path, roots) for path in args.paths))
        mine = {watch.path: watch for watch in self.watches.values() if watch.project == args.project}
        for path in paths:
            for other in mine.values():
                if path != other.path and (path.startswith(other.path + "/") or other.path.startswith(path + "/")):
                    raise Conflict(f"{path} overlaps the watch on {other.path} of project {args.project!r}: "
                                   "watch one or the other", details={"path": path, "watch": other.path})
        new = [path for path in paths if path not in mine]
        if len(self.watches) + len(new) > self.config.watch.max_watches:
            raise InvalidArgument(f"at most watch.max_watches = {self.config.watch.max_watches} watches "
                                  f"({len(self.watches)} exist)", details={"max_watches": self.config.watch.max_watches})
        added = await self.db.write(lambda conn: rows.add_watches(conn, args.project, new))
        started = []
        for row in added:
            watch = self._track(row)
            watch.first_sync = asyncio.get_running_loop().create_future()
            self._launch(watch)
            started.append(watch)
        if args.wait:
            await asyncio.gather(*(asyncio.shield(watch.first_sync) for watch in started if watch.first_sync))
        by_path = {watch.path: watch for watch in self.watches.values() if watch.project == args.project}
        return WatchAddResult(watches=[by_path[path].info() for path in paths if path in by_path], added=len(added))

    async def _list(self, args: WatchListArgs, ctx: Any) -> WatchListResult:
        return WatchListResult(watches=[watch.info() for watch in self.watches.values()
                                        if not args.project or watch.project == args.project])

    async def _remove(self, args: WatchRemoveArgs, ctx: Any) -> WatchRemoveResult:
        if not args.paths and not args.project:
            raise InvalidArgument("name the watched paths, or a project (every watch of it)")
        wanted = {os.path.abspath(os.path.expanduser(path)).rstrip("/") or "/" for path in args.paths}
        doomed = [watch for watch in self.watches.values()
                  if (not wanted or watch.path in wanted) and (not args.project or watch.project == args.project)]
        missing = sorted(wanted - {watch.path for watch in doomed})
        if missing or not doomed:
            raise NotFound(f"not watched: {', '.join(missing) or args.project}",
                           details={"paths": missing, "project": args.project})
        return WatchRemoveResult(removed=await self._forget(doomed))

    # -- one watch's life ---------------------------------------------------------------------------------------

    def _track(self, row: rows.WatchRow) -> Watch:
        watch = Watch(id=row.id, project=row.project, path=row.path, created_at=row.created_at,
                      last_sync_at=row.last_sync_at)
        self.watches[row.id] = watch
        return watch

    def _launch(self, watch: Watch) -> None:
        watch.task = asyncio.ensure_future(self._life(watch))

    async def _forget(self, doomed: list[Watch]) -> int:
        for watch in doomed:
            await self._stop(watch)
            self.watches.pop(watch.id, None)
        return await self.db.write(lambda conn: rows.delete_watches(conn, [watch.id for watch in doomed]))

    async def _stop(self, watch: Watch) -> None:
        if watch.task is not None:
            watch.task.cancel()
            await asyncio.gather(watch.task, return_exceptions=True)
            watch.task = None
        await self._stop_notifier(watch)
        if watch.first_sync is not None and not watch.first_sync.done():
            watch.first_sync.set_result(None)

    async def _life(self, watch: Watch) -> None:
        settings = self.config.watch
        while True:
            try:
                if watch.state in ("missing", "error"):
                    await self._idle(watch, settings.retry_interval_s)
                    watch.rescan = True
                if settings.force_polling:
                    watch.mode = "polling"
                elif watch.notifier is None and watch.mode == "inotify":
                    await self._start_notifier(watch)
                    if watch.state == "missing":
                        continue
                if watch.rescan or watch.pending:
                    await self._settle(watch)
                    await self._sync(watch)
                    continue
                if not await self._idle(watch, self._idle_timeout(watch)):
                    watch.rescan = True        # polling period, or the periodic check
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let one watch's trouble escape its task
                log.exception("watch %s: unexpected failure", watch.path)
                watch.state, watch.error_code, watch.error = "error", SYNC_FAILED, f"{type(exc).__name__}: {exc}"
                watch.errors += 1

    @staticmethod
    async def _idle(watch: Watch, timeout: float | None) -> bool:
        """Wait for a change (True) or the timeout (False)."""
        try:
            await asyncio.wait_for(watch.wake.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            watch.wake.clear()

    def _idle_timeout(self, watch: Watch) -> float | None:
        settings = self.config.watch
        if watch.mode == "polling":
            return settings.rescan_interval_s
        return settings.verify_interval_s or None

    async def _settle(self, watch: Watch) -> None:
        """Wait until the burst of changes is over: ``quiet_ms`` without one, or ``max_delay_s`` after the first."""
        settings = self.config.watch
        if not watch.pending:
            return
        first = min(seen for seen, _ in watch.pending.values())
        while True:
            now = time.time()
            wait = min(watch.last_change + settings.quiet_ms / 1000, first + settings.max_delay_s) - now
            if wait <= 0:
                return
            watch.wake.clear()
            try:
                await asyncio.wait_for(watch.wake.wait(), wait)
            except asyncio.TimeoutError:
                pass

    async def _start_notifier(self, watch: Watch) -> None:
        loop = asyncio.get_running_loop()
        notifier = TreeWatcher(watch.path, loop, lambda paths: self._changed(watch, paths),
                               lambda failure: self._notifier_failed(watch, failure))
        async with self._notifier_lock:
            try:
                await asyncio.to_thread(notifier.start)
            except NotifyUnavailable as failure:
                self._notifier_failed(watch, failure)
                if failure.code != INOTIFY_LIMIT:
                    watch.state = "missing"     # the directory itself: retried every watch.retry_interval_s
                return
        watch.notifier = notifier
        watch.fresh = watch.rescan = True
        if watch.state == "missing":
            watch.state = "starting"

    async def _stop_notifier(self, watch: Watch) -> None:
        notifier, watch.notifier = watch.notifier, None
        if notifier is not None:
            await asyncio.to_thread(notifier.stop)

    def _notifier_failed(self, watch: Watch, failure: NotifyUnavailable) -> None:
        """inotify is not (or no longer) available for this watch: rescans take over, or a retry later."""
        if failure.code == INOTIFY_LIMIT:
            watch.mode = "polling"
        watch.error_code, watch.error = failure.code, str(failure)
        log.warning("watch %s: %s", watch.path, failure)
        if watch.notifier is not None:
            task = asyncio.ensure_future(self._stop_notifier(watch))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)
        watch.rescan = True
        watch.wake.set()

    def _changed(self, watch: Watch, paths: set[str]) -> None:
        """On the loop: paths the notifier saw change; journaled at once, synced when the burst is over."""
        if watch.id not in self.watches:
            return
        own = self._own_files(watch)
        if own:
            paths = {path for path in paths if not (path + "/").startswith(own)}
            if not paths:
                return
        now = time.time()
        journal = []
        for path in paths:
            self._seq += 1
            seen = watch.pending.get(path, (now, 0))[0]
            watch.pending[path] = (seen, self._seq)
            journal.append((path, seen, self._seq))
        watch.last_change = now
        task = asyncio.ensure_future(self.db.write(lambda conn: rows.add_pending(conn, watch.id, journal)))
        self._writes.add(task)
        task.add_done_callback(self._written)
        watch.wake.set()

    def _own_files(self, watch: Watch) -> str:
        """The daemon's state directory as named inside this watch ("" when it is not inside): its database and
        vector index change with every sync, which must never be a reason for another one."""
        real_root = os.path.realpath(watch.path)
        real_state = os.path.realpath(self.config.state_path)
        if real_state != real_root and not real_state.startswith(real_root.rstrip("/") + "/"):
            return ""
        return os.path.normpath(os.path.join(watch.path, os.path.relpath(real_state, real_root))).rstrip("/") + "/"

    def _written(self, task: asyncio.Task[Any]) -> None:
        self._writes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("watch: journaling pending changes failed (the next rescan finds them): %s", task.exception())

    async def _sync(self, watch: Watch) -> None:
        try:
            await self._sync_once(watch)
        finally:
            self._first_sync_done(watch)

    async def _sync_once(self, watch: Watch) -> None:
        settings = self.config.watch
        taken = dict(watch.pending)
        rescan, fresh = watch.rescan, watch.fresh
        watch.rescan = watch.fresh = False
        roots = resolve_roots(self.config.ingest.allowed_roots)
        known = await self.db.read(lambda conn: rows.source_stats(conn, watch.project, watch.path))
        try:
            plan = await asyncio.to_thread(plan_sync, watch.path, taken, rescan, known, roots,
                                           self.config.ingest.max_file_bytes)
        except RootUnavailable as exc:
            if watch.state != "missing" or watch.error_code != exc.code:
                log.warning("watch %s: %s (retried every %.0f s)", watch.path, exc, settings.retry_interval_s)
            watch.state, watch.error_code, watch.error = "missing", exc.code, str(exc)
            await self._stop_notifier(watch)   # the inotify watch died with the directory; a fresh one comes back
            if watch.mode == "polling" and not settings.force_polling:
                watch.mode = "inotify"
            return
        if watch.error_code in (PATH_MISSING, PATH_UNREADABLE, OUTSIDE_ROOTS):
            log.info("watch %s: the directory is back", watch.path)
            watch.error_code = watch.error = ""
        watch.state = "syncing"
        run = IngestRun(watch.project, files_total=len(plan.files))
        for source, reason in plan.skipped:
            run.skip(source, reason)
        try:
            if plan.files or plan.removed:
                await self.documents.sync_sources(watch.project, plan.files, plan.removed, run)
            done_at = time.time()
            await self.db.write(lambda conn: rows.finish_sync(
                conn, watch.id, [(path, seq) for path, (_, seq) in taken.items()], done_at))
        except Exception as exc:
            log.warning("watch %s: sync failed, its changes stay pending: %s", watch.path, exc)
            watch.state, watch.error_code, watch.error = "error", SYNC_FAILED, f"{type(exc).__name__}: {exc}"
            watch.errors += 1
            return
        for path, (_, seq) in taken.items():
            if watch.pending.get(path, (0, None))[1] == seq:
                del watch.pending[path]
        if taken:
            watch.last_lag_s = round(done_at - min(seen for seen, _ in taken.values()), 3)
        watch.syncs += 1
        watch.errors += len(run.errors)
        watch.last_sync_at = done_at
        watch.files = await self.db.read(lambda conn: rows.count_sources(conn, watch.project, watch.path))
        if watch.error_code == SYNC_FAILED:
            watch.error_code = watch.error = ""
        watch.state = "watching"
        if run.errors:
            watch.error = f"{len(run.errors)} files failed in the last sync, e.g. {run.errors[0][0]}: {run.errors[0][1]}"
        elif not watch.error_code:
            watch.error = ""
        if watch.notifier is not None and plan.dirs_seen:
            await self._check_coverage(watch, plan.dirs_seen, fresh)
        if plan.files or plan.removed:
            log.info("watch %s: synced %d files, removed %d (%s, %d unchanged)", watch.path, len(plan.files),
                     len(plan.removed), "rescan" if rescan else f"{len(taken)} changes", plan.unchanged)

    async def _check_coverage(self, watch: Watch, directories: set[tuple[int, int]], fresh: bool) -> None:
        """Every directory just walked must have its inotify watch (``watch_notify``: the silent limit)."""
        assert watch.notifier is not None
        unwatched = await asyncio.to_thread(watch.notifier.unwatched, directories)
        if not unwatched:
            return
        if fresh:  # a notifier that has just walked the whole tree is short: the kernel refused
            self._notifier_failed(watch, NotifyUnavailable(
                INOTIFY_LIMIT, f"{unwatched} directories got no inotify watch (fs.inotify.max_user_watches = "
                               f"{read_limit('max_user_watches')} reached): rescanning periodically instead"))
            return
        log.info("watch %s: %d directories lost their inotify watch (moved or renamed): starting a fresh one",
                 watch.path, unwatched)
        await self._stop_notifier(watch)      # _life starts a new one, then a rescan checks it again

    @staticmethod
    def _first_sync_done(watch: Watch) -> None:
        if watch.first_sync is not None and not watch.first_sync.done():
            watch.first_sync.set_result(None)

    @staticmethod
    def _builtins(info: WatchInfo) -> dict[str, Any]:
        import msgspec

        return msgspec.to_builtins(info)


def _checked_directory(path: str, roots: list[Any]) -> str:
    """The absolute path to watch, or the reason it cannot be: missing, a symlink loop, no directory, outside."""
    given = os.path.abspath(os.path.expanduser(path))
    try:
        real = os.path.realpath(given, strict=True)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InvalidArgument(f"{given} is a symlink loop", details={"path": given, "reason": "symlink_loop"}) \
                from exc
        if exc.errno == errno.ENOENT:
            raise NotFound(f"no such directory: {given}", details={"path": given}) from exc
        raise InvalidArgument(f"{given}: {exc.strerror}", details={"path": given}) from exc
    from pathlib import Path

    if not is_under(Path(real), roots):
        raise Forbidden(f"{given} is outside the allowed roots (after resolving symlinks)",
                        details={"path": given, "allowed_roots": [str(root) for root in roots]})
    if not os.path.isdir(real):
        raise InvalidArgument(f"{given} is not a directory: watch the folder that holds it",
                              details={"path": given})
    return given.rstrip("/") or "/"
