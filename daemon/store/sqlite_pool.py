"""The SQLite pool every store shares: one writer thread, N reader threads, migrations, checks, backups.

``<state_dir>/pirag.sqlite3`` is the daemon's truth (DESIGN.md: Storage). This module owns how it is opened
and how the event loop talks to it:

- **One writer.** A single connection on its own thread executes every write; callers hand it a function
  ``fn(conn)`` and get a future back. Each call is atomic in a ``BEGIN IMMEDIATE ... COMMIT`` transaction,
  so writes are serialized in one place and no caller can ever meet ``database is locked`` from another
  writer. The future resolves only after ``COMMIT`` returned: an acknowledged write is a committed write.
  **Group commit** (``store.group_commit_max``): writes already queued when the writer picks one up share
  its transaction, each inside its own SAVEPOINT (still atomic alone), so 20 concurrent writers pay one
  fsync per group instead of one each. With ``group_commit_max = 1`` every call has its own transaction.
- **N readers.** Reader connections (``query_only``) on their own threads take jobs from one shared queue,
  so a slow read never holds up the reads queued behind it while another reader is idle. In WAL mode they
  read a consistent snapshot (each job runs inside one read transaction) while the writer writes.
- **aiosqlite-style plumbing** (omnilib/aiosqlite ``core.py``): a queue per thread, results and exceptions
  sent back with ``loop.call_soon_threadsafe``, a job whose future was cancelled before it ran is skipped,
  and a sentinel stops the thread.
- **Migrations** are numbered per area (``schema_migrations(area, version)``); each one is applied in its
  own transaction at start (or at once, on the writer thread, when registered after start).
- **``PRAGMA quick_check`` at start**: a corrupt file makes the daemon refuse to start with a message that
  names the file and the recovery path (docs/DURABILITY.md), instead of serving wrong answers.
- **Online backup** with SQLite's backup API on a dedicated connection, while the daemon keeps serving.
- **Storage errors as values**: a write that fails for the disk's sake (full, read-only, I/O error) raises
  ``StorageFull`` / ``StorageError`` (``store/storage.py``) naming the directory and its free bytes, and
  ``status`` shows the condition (``components.db.storage``) until a write succeeds again.

Pragmas (chosen for an SD card; the reasoning lives in docs/DURABILITY.md):

- ``journal_mode=WAL``: readers never block the writer nor the writer readers; appends to the WAL are
  sequential writes, the cheapest kind on flash.
- ``synchronous=FULL`` (``store.synchronous``): the WAL is fsynced at every commit, so an acknowledged write
  survives a power cut, not only a crash of the daemon. ``NORMAL`` is safe against corruption and against
  ``kill -9`` but may lose the last commits on power loss; the Pi is often unplugged, so FULL is the default.
- ``busy_timeout`` (``store.busy_timeout_ms``): a reader that meets a checkpoint waits instead of failing.
- ``temp_store=MEMORY``: sorts and temporary indices never touch the card.
- ``journal_size_limit``: the WAL file is truncated back after checkpoints instead of staying at its peak.
- ``wal_autocheckpoint`` and ``cache_size``/``mmap_size`` from config: bounded memory on a 4 GB machine.
- ``foreign_keys=ON``: the schemas rely on ``ON DELETE CASCADE``.
- ``secure_delete=FAST``: deleted rows are zeroed on their page when that costs no extra I/O, so a
  forgotten fact does not linger in free space.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..config import Config
from .storage import StorageCondition, storage_error_for

log = logging.getLogger("pirag.store.sqlite")

T = TypeVar("T")
Migration = str | Callable[[sqlite3.Connection], None]

DB_FILENAME = "pirag.sqlite3"

_SENTINEL = object()


class CorruptDatabase(RuntimeError):
    """The database file failed ``PRAGMA quick_check`` or is not a database; the daemon must not start."""


class DatabaseClosed(RuntimeError):
    """A job was submitted to a pool that is not running."""


@dataclass
class _Job:
    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    transaction: str   # "write": BEGIN IMMEDIATE ... COMMIT; "read": BEGIN ... COMMIT; "none": autocommit
    queued_at: float


def split_sql(script: str) -> list[str]:
    """Split an SQL script into complete statements (triggers with ``BEGIN ... END;`` stay whole).

    ``executescript`` would COMMIT the migration's transaction first, so statements are executed one by one.
    """
    statements: list[str] = []
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \t\r\n;"):
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip(" \t\r\n;"):
        raise ValueError(f"incomplete SQL statement in migration: {buffer.strip()[:80]!r}")
    return statements


def _resolve(job: _Job, result: Any = None, error: BaseException | None = None) -> None:
    def settle() -> None:
        if job.future.done():
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)

    try:
        job.loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass


class _Worker(threading.Thread):
    """One connection, one thread, one queue (possibly shared with sibling readers)."""

    def __init__(self, name: str, connect: Callable[[], sqlite3.Connection], jobs: queue.SimpleQueue[Any],
                 on_done: Callable[[_Job, float], None]):
        super().__init__(name=name, daemon=True)
        self._connect = connect
        self._jobs = jobs
        self._on_done = on_done
        self.conn: sqlite3.Connection | None = None
        self.ready = threading.Event()
        self.open_error: BaseException | None = None
        self.group_max = 1

    def run(self) -> None:
        try:
            self.conn = self._connect()
        except BaseException as exc:  # reported to start(), which refuses to start
            self.open_error = exc
            self.ready.set()
            return
        self.ready.set()
        conn = self.conn
        held: Any = None
        try:
            while True:
                job, held = (held if held is not None else self._jobs.get()), None
                if job is _SENTINEL:
                    break
                if job.future.cancelled():
                    continue
                if job.transaction == "write" and self.group_max > 1:
                    group = [job]
                    while len(group) < self.group_max:
                        try:
                            following = self._jobs.get_nowait()
                        except queue.Empty:
                            break
                        if following is _SENTINEL or following.transaction != "write":
                            held = following
                            break
                        if not following.future.cancelled():
                            group.append(following)
                    started = time.perf_counter()
                    self._run_group(conn, group)
                    elapsed = time.perf_counter() - started
                    for member in group:
                        self._on_done(member, elapsed)
                    continue
                started = time.perf_counter()
                try:
                    result = self._run(conn, job)
                except BaseException as exc:
                    _resolve(job, error=exc)
                else:
                    _resolve(job, result)
                self._on_done(job, time.perf_counter() - started)
        finally:
            try:
                conn.close()
            except sqlite3.Error:
                log.exception("closing %s failed", self.name)

    @staticmethod
    def _run_group(conn: sqlite3.Connection, group: list[_Job]) -> None:
        """Group commit: the writes queued together share one transaction and one fsync.

        Each job runs inside its own SAVEPOINT, so it stays atomic on its own (an exception rolls back that
        job alone); every future is resolved only after the shared COMMIT returned.
        """
        outcomes: list[tuple[Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in group:
                conn.execute("SAVEPOINT pirag_job")
                try:
                    result = job.fn(conn)
                except BaseException as exc:
                    try:
                        conn.execute("ROLLBACK TO pirag_job")
                        conn.execute("RELEASE pirag_job")
                    except sqlite3.Error:
                        # On SQLITE_FULL / IOERR SQLite may roll the whole transaction back itself: the savepoint
                        # is gone and so are the group's earlier writes; all of them fail with the real cause.
                        raise exc from None
                    outcomes.append((None, exc))
                else:
                    conn.execute("RELEASE pirag_job")
                    outcomes.append((result, None))
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for job in group:
                _resolve(job, error=exc)
            return
        for job, (result, error) in zip(group, outcomes):
            _resolve(job, result, error)

    @staticmethod
    def _run(conn: sqlite3.Connection, job: _Job) -> Any:
        if job.transaction == "none":
            return job.fn(conn)
        conn.execute("BEGIN IMMEDIATE" if job.transaction == "write" else "BEGIN")
        try:
            result = job.fn(conn)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result


class _Latency:
    """A small ring of recent durations for p50/p99 in ``stats()``."""

    def __init__(self, size: int = 2048):
        self._values: list[float] = []
        self._size = size
        self._next = 0
        self.count = 0

    def add(self, value: float) -> None:
        self.count += 1
        if len(self._values) < self._size:
            self._values.append(value)
        else:
            self._values[self._next] = value
            self._next = (self._next + 1) % self._size

    def summary(self) -> dict[str, float | int]:
        if not self._values:
            return {"count": self.count, "p50_ms": 0.0, "p99_ms": 0.0}
        ordered = sorted(self._values)
        pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
        return {"count": self.count, "p50_ms": round(pick(0.5), 3), "p99_ms": round(pick(0.99), 3)}


class Database:
    """The ``db`` component: ``await db.write(fn)``, ``await db.read(fn)``, migrations, ``await db.backup(path)``."""

    name = "db"

    def __init__(self, config: Config, path: str | Path | None = None):
        self.config = config
        self.path = Path(path) if path is not None else config.state_path / DB_FILENAME
        self._migrations: dict[str, list[Migration]] = {}
        self._write_queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._read_queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer: _Worker | None = None
        self._readers: list[_Worker] = []
        self._running = False
        self._write_latency = _Latency()
        self._read_latency = _Latency()
        self._stats_lock = threading.Lock()
        self.errors = 0
        self.backups = 0
        self.started_at = 0.0
        self.storage = StorageCondition(self.path.parent)

    # -- connections ----------------------------------------------------------------------------------------

    def _open(self, *, reader: bool) -> sqlite3.Connection:
        store = self.config.store
        # isolation_level=None: the module never opens transactions behind our back; _Worker does it explicitly.
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=store.busy_timeout_ms / 1000)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(store.busy_timeout_ms)}")
            if not reader:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise CorruptDatabase(f"{self.path}: cannot switch to WAL (journal_mode is {mode})")
            conn.execute(f"PRAGMA synchronous = {store.synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA temp_store = MEMORY")
            conn.execute("PRAGMA secure_delete = FAST")
            conn.execute(f"PRAGMA cache_size = {-1024 * int(store.sqlite_cache_mb)}")
            conn.execute(f"PRAGMA mmap_size = {(1 << 20) * int(store.sqlite_mmap_mb)}")
            if reader:
                conn.execute("PRAGMA query_only = ON")
            else:
                conn.execute(f"PRAGMA wal_autocheckpoint = {int(store.wal_autocheckpoint_pages)}")
                conn.execute(f"PRAGMA journal_size_limit = {(1 << 20) * int(store.journal_size_limit_mb)}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _count(self, job: _Job, seconds: float) -> None:
        with self._stats_lock:
            (self._write_latency if job.transaction in ("write", "none") else self._read_latency).add(seconds)

    # -- lifecycle ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        self.started_at = time.time()
        self._writer = _Worker("pirag-sqlite-writer", lambda: self._open(reader=False), self._write_queue,
                               self._count)
        self._writer.group_max = self.config.store.group_commit_max
        self._writer.start()
        await asyncio.get_running_loop().run_in_executor(None, self._writer.ready.wait)
        if self._writer.open_error is not None:
            error = self._writer.open_error
            self._writer = None
            raise self._explain_open_error(error) from error
        self._running = True
        try:
            await self._submit(self._write_queue, self._check_integrity, "none")
            for area, migrations in list(self._migrations.items()):
                await self._submit(self._write_queue, lambda conn, a=area, m=migrations: self._migrate(conn, a, m),
                                   "none")
            for index in range(self.config.store.sqlite_readers):
                reader = _Worker(f"pirag-sqlite-reader-{index}", lambda: self._open(reader=True), self._read_queue,
                                 self._count)
                reader.start()
                self._readers.append(reader)
            for reader in self._readers:
                await asyncio.get_running_loop().run_in_executor(None, reader.ready.wait)
                if reader.open_error is not None:
                    raise reader.open_error
        except BaseException:
            await self.close()
            raise
        log.info("sqlite %s: WAL, synchronous=%s, %d readers", self.path, self.config.store.synchronous,
                 len(self._readers))

    async def close(self) -> None:
        if self._writer is None and not self._readers:
            return
        self._running = False
        loop = asyncio.get_running_loop()
        if self._writer is not None and self._writer.open_error is None:
            try:
                future = loop.create_future()
                self._write_queue.put(_Job(self._optimize, future, loop, "none", time.perf_counter()))
                await future
            except sqlite3.Error as exc:
                if storage_error_for(exc, self.path.parent, "the final checkpoint") is None:
                    log.exception("final checkpoint failed")
                else:  # a full disk: the WAL stays, and is checkpointed at the next start
                    log.warning("final checkpoint skipped: %s", exc)
        for _ in self._readers:
            self._read_queue.put(_SENTINEL)
        if self._writer is not None:
            self._write_queue.put(_SENTINEL)
        threads = [thread for thread in (self._writer, *self._readers) if thread is not None]
        for thread in threads:
            await loop.run_in_executor(None, thread.join)
        self._writer = None
        self._readers = []

    @staticmethod
    def _optimize(conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA optimize")
        # A clean shutdown leaves no WAL behind: the next start (or a copy of the file) needs nothing else.
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _explain_open_error(self, error: BaseException) -> BaseException:
        if isinstance(error, CorruptDatabase):
            return error
        if isinstance(error, sqlite3.DatabaseError) and not isinstance(error, sqlite3.OperationalError):
            return CorruptDatabase(self._corrupt_message(str(error)))
        return error

    def _corrupt_message(self, detail: str) -> str:
        return (f"{self.path} is damaged ({detail}); pirag will not start on it. Stop here and recover: "
                f"restore a backup taken with `pirag backup`, or salvage with "
                f"`sqlite3 {self.path} .recover | sqlite3 {self.path}.recovered` and move it into place "
                f"(docs/DURABILITY.md, 'A corrupt database').")

    def _check_integrity(self, conn: sqlite3.Connection) -> None:
        if not self.config.store.quick_check:
            return
        try:
            rows = [row[0] for row in conn.execute("PRAGMA quick_check(20)")]
        except sqlite3.DatabaseError as exc:
            raise CorruptDatabase(self._corrupt_message(str(exc))) from exc
        if rows != ["ok"]:
            raise CorruptDatabase(self._corrupt_message("; ".join(str(row) for row in rows[:5])))

    # -- migrations -----------------------------------------------------------------------------------------

    def register_migrations(self, area: str, migrations: Sequence[Migration]) -> asyncio.Future[Any] | None:
        """Declare the numbered migrations of ``area`` (version = position + 1; never reorder, only append).

        Registered before ``start()`` (from a component's constructor) they are applied at start, before any
        other job. Registered after start, they are queued on the writer at once (ahead of every later write)
        and the returned future says when they are in; await it.
        """
        if not area or not all(isinstance(m, str) or callable(m) for m in migrations):
            raise ValueError("register_migrations(area, [sql | fn(conn), ...])")
        if area in self._migrations:
            raise ValueError(f"migrations of area {area!r} are registered twice")
        self._migrations[area] = list(migrations)
        if not self._running:
            return None
        return asyncio.ensure_future(
            self._submit(self._write_queue, lambda conn: self._migrate(conn, area, list(migrations)), "none"))

    @staticmethod
    def _migrate(conn: sqlite3.Connection, area: str, migrations: list[Migration]) -> int:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                     " area TEXT NOT NULL, version INTEGER NOT NULL, applied_at REAL NOT NULL,"
                     " PRIMARY KEY (area, version)) WITHOUT ROWID")
        current = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations WHERE area = ?",
                               (area,)).fetchone()[0]
        if current > len(migrations):
            raise RuntimeError(f"the database has {area} schema version {current}, newer than this pirag knows "
                               f"({len(migrations)}): run the newer pirag, or restore a backup")
        applied = 0
        for version, migration in enumerate(migrations, start=1):
            if version <= current:
                continue
            conn.execute("BEGIN IMMEDIATE")
            try:
                if isinstance(migration, str):
                    for statement in split_sql(migration):
                        conn.execute(statement)
                else:
                    migration(conn)
                conn.execute("INSERT INTO schema_migrations (area, version, applied_at) VALUES (?, ?, ?)",
                             (area, version, time.time()))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            applied += 1
            log.info("migrated %s to version %d", area, version)
        return applied

    async def schema_versions(self) -> dict[str, int]:
        return await self.read(lambda conn: dict(conn.execute(
            "SELECT area, max(version) FROM schema_migrations GROUP BY area").fetchall()))

    # -- the API --------------------------------------------------------------------------------------------

    def _submit(self, jobs: queue.SimpleQueue[Any], fn: Callable[[sqlite3.Connection], T],
                transaction: str) -> asyncio.Future[T]:
        if not self._running:
            raise DatabaseClosed("the database is not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        jobs.put(_Job(fn, future, loop, transaction, time.perf_counter()))
        return future

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on the writer in one ``BEGIN IMMEDIATE ... COMMIT``; returns once committed.

        An exception inside ``fn`` rolls the whole transaction back and is raised here. Cancelling the
        caller before the job starts skips it; once started it runs to its end (commit or rollback).
        """
        try:
            result = await self._submit(self._write_queue, fn, "write")
        except (sqlite3.Error, OSError) as exc:
            self.errors += 1
            self._raise_storage_error(exc, "write")
            raise
        self.storage.succeeded()
        return result

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on a reader, inside one read transaction (a consistent snapshot)."""
        if not self._readers:  # during start (migrations), reads go through the writer
            return await self._submit(self._write_queue, fn, "read")
        try:
            return await self._submit(self._read_queue, fn, "read")
        except sqlite3.Error:  # not mapped: a reader is query_only, so "readonly database" there is a bug
            self.errors += 1
            raise

    def _raise_storage_error(self, exc: BaseException, what: str) -> None:
        """Raise the storage error ``exc`` stands for (a full or read-only disk), if it stands for one."""
        error = storage_error_for(exc, self.path.parent, f"SQLite {what} of {self.path.name}")
        if error is not None:
            self.storage.failed(error)
            raise error from exc

    async def backup(self, path: str | Path) -> dict[str, Any]:
        """Copy the live database to ``path`` with SQLite's online backup API while serving.

        A dedicated connection copies every page in one step, inside one read transaction: the copy is a
        consistent snapshot and, in WAL mode, writers keep committing meanwhile. The copy is written beside
        ``path``, checked, fsynced and renamed into place, so ``path`` is either the old file or a whole backup.
        """
        target = Path(path).expanduser()
        if not self._running:
            raise DatabaseClosed("the database is not running")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._backup_blocking, target)

    def _backup_blocking(self, target: Path) -> dict[str, Any]:
        started = time.perf_counter()
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
        partial.unlink(missing_ok=True)
        source = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                 timeout=self.config.store.busy_timeout_ms / 1000)
        try:
            destination = sqlite3.connect(partial, isolation_level=None)
            try:
                source.backup(destination, pages=-1)
                destination.execute("PRAGMA journal_mode = DELETE")  # a standalone file, no -wal beside it
                check = destination.execute("PRAGMA quick_check").fetchone()[0]
                if check != "ok":
                    raise CorruptDatabase(f"the backup failed its check: {check}")
                pages = destination.execute("PRAGMA page_count").fetchone()[0]
            finally:
                destination.close()
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        finally:
            source.close()
        with open(partial, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, target)
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        self.backups += 1
        return {"path": str(target), "bytes": target.stat().st_size, "pages": pages,
                "seconds": round(time.perf_counter() - started, 3)}

    # -- figures --------------------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        def size(path: Path) -> int:
            try:
                return path.stat().st_size
            except OSError:
                return 0

        with self._stats_lock:
            writes, reads = self._write_latency.summary(), self._read_latency.summary()
        return {
            "path": str(self.path),
            "bytes": size(self.path),
            "wal_bytes": size(self.path.with_name(self.path.name + "-wal")),
            "synchronous": self.config.store.synchronous,
            "readers": len(self._readers),
            "write_queue": self._write_queue.qsize(),
            "read_queue": self._read_queue.qsize(),
            "writes": writes,
            "reads": reads,
            "errors": self.errors,
            "backups": self.backups,
            "migrations": {area: len(items) for area, items in self._migrations.items()},
            "storage": self.storage.stats(),
        }

    def handlers(self) -> dict[str, Any]:
        return {}
