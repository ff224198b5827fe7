"""Storage errors as values: real SQLite and OS failures map to ``storage_full`` / ``storage_error``.

SQLite's own limits give the real errors without filling a disk: ``PRAGMA max_page_count`` makes it answer
``SQLITE_FULL`` exactly as a full disk does; a ``mode=ro`` connection answers ``SQLITE_READONLY``.
"""

from __future__ import annotations

import asyncio
import errno
import sqlite3

import pytest

from pirag.client.errors import ALL_CODES, StorageError, StorageFull, error_from_wire
from pirag.daemon.store.sqlite_pool import Database
from pirag.daemon.store.storage import classify, storage_error_for
from tests.documents.helpers import make_config


def test_codes_map_to_their_classes():
    assert {"storage_full", "storage_error"} <= set(ALL_CODES)
    full = error_from_wire("storage_full", "no space", {"directory": "/x", "free_bytes": 0})
    assert isinstance(full, StorageFull) and isinstance(full, StorageError) and full.details["free_bytes"] == 0
    assert type(error_from_wire("storage_error", "ro")) is StorageError


def _real_sqlite_error(tmp_path, setup: str, statement: str, uri: str = "", limit: str = "") -> sqlite3.Error:
    path = tmp_path / "probe.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript("CREATE TABLE IF NOT EXISTS t (x BLOB UNIQUE);" + setup)
    conn.commit()
    conn.close()
    conn = sqlite3.connect(uri or path, uri=bool(uri))
    try:
        if limit:
            conn.execute(limit)   # per connection, like the limit a full disk sets
        with pytest.raises(sqlite3.Error) as caught:
            conn.execute(statement)
            conn.commit()
        return caught.value
    finally:
        conn.close()


def test_real_sqlite_and_os_errors_are_classified(tmp_path):
    readonly = _real_sqlite_error(tmp_path, "", "INSERT INTO t VALUES (1)", f"file:{tmp_path}/probe.sqlite3?mode=ro")
    assert classify(readonly) == "error"
    full = _real_sqlite_error(tmp_path, "", "INSERT INTO t VALUES (randomblob(200000))",
                              limit="PRAGMA max_page_count = 3")
    assert "full" in str(full) and classify(full) == "full"
    duplicate = _real_sqlite_error(tmp_path, "DELETE FROM t; INSERT INTO t VALUES (7);", "INSERT INTO t VALUES (7)")
    assert classify(duplicate) is None          # a bad request stays a bad request
    assert classify(OSError(errno.ENOSPC, "No space left on device")) == "full"
    assert classify(OSError(errno.EROFS, "Read-only file system")) == "error"
    assert classify(ValueError("disk is full")) is None
    error = storage_error_for(full, tmp_path, "SQLite write")
    assert isinstance(error, StorageFull)
    assert error.details["directory"] == str(tmp_path) and error.details["free_bytes"] > 0
    assert str(tmp_path) in error.message and "bytes free" in error.message


def test_database_write_on_a_full_database_is_storage_full_and_status_shows_it(tmp_path):
    async def scenario():
        db = Database(make_config(tmp_path))
        await db.start()
        try:
            await db.write(lambda conn: conn.execute("CREATE TABLE blobs (b BLOB)"))
            pages = await db.read(lambda conn: conn.execute("PRAGMA page_count").fetchone()[0])

            def fill(conn):
                conn.execute(f"PRAGMA max_page_count = {pages + 2}")
                conn.execute("INSERT INTO blobs VALUES (randomblob(500000))")

            with pytest.raises(StorageFull) as refused:
                await db.write(fill)
            assert refused.value.details["directory"] == str(tmp_path)
            assert db.stats()["storage"]["state"] == "full" and db.stats()["storage"]["failures"] == 1
            assert await db.read(lambda conn: conn.execute("SELECT count(*) FROM blobs").fetchone()[0]) == 0

            def fits(conn):
                conn.execute("PRAGMA max_page_count = 1000000")
                conn.execute("INSERT INTO blobs VALUES (randomblob(10))")

            await db.write(fits)
            assert db.stats()["storage"]["state"] == "ok"
            with pytest.raises(sqlite3.OperationalError, match="no such table"):  # a bug stays a bug
                await db.write(lambda conn: conn.execute("INSERT INTO absent_table VALUES (1)"))
            assert db.stats()["storage"]["state"] == "ok"
        finally:
            await db.close()

    asyncio.run(scenario())
