"""The SQLite pool: serialized writes, concurrent reads, migrations, the integrity check, online backup."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from pirag.daemon.store.sqlite_pool import CorruptDatabase, Database, split_sql

from .helpers import make_config, run

SCHEMA = ["CREATE TABLE item (id INTEGER PRIMARY KEY, value TEXT NOT NULL)",
          "CREATE INDEX item_value ON item(value); CREATE TABLE note (id INTEGER PRIMARY KEY, body TEXT)"]


def test_split_sql_keeps_triggers_whole() -> None:
    script = """
    CREATE TABLE a (x);
    CREATE TRIGGER t AFTER INSERT ON a BEGIN INSERT INTO a VALUES (1); SELECT 1; END;
    CREATE TABLE b (y)
    """
    statements = split_sql(script)
    assert len(statements) == 3
    assert statements[1].startswith("CREATE TRIGGER") and statements[1].endswith("END;")


def test_pragmas_and_migrations(tmp_path: Path) -> None:
    async def main() -> None:
        db = Database(make_config(tmp_path))
        assert db.register_migrations("test", SCHEMA) is None
        await db.start()
        try:
            versions = await db.schema_versions()
            assert versions == {"test": 2}
            mode = await db.read(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0])
            assert mode == "wal"
            sync = await db.write(lambda c: c.execute("PRAGMA synchronous").fetchone()[0])
            assert sync == 2  # FULL
            with pytest.raises(sqlite3.OperationalError):  # readers are query_only
                await db.read(lambda c: c.execute("INSERT INTO item (value) VALUES ('x')"))
            # Registering after start applies at once, ahead of later writes.
            await db.register_migrations("late", ["CREATE TABLE late_t (x)"])
            await db.write(lambda c: c.execute("INSERT INTO late_t VALUES (1)"))
        finally:
            await db.close()
        # A restart applies nothing twice; appending a migration applies only the new one.
        db = Database(make_config(tmp_path))
        db.register_migrations("test", [*SCHEMA, "ALTER TABLE item ADD COLUMN extra TEXT"])
        await db.start()
        try:
            assert (await db.schema_versions())["test"] == 3
        finally:
            await db.close()

    run(main())


def test_failed_write_rolls_back_whole_transaction(tmp_path: Path) -> None:
    async def main() -> None:
        db = Database(make_config(tmp_path))
        db.register_migrations("test", SCHEMA)
        await db.start()
        try:
            def half(conn: sqlite3.Connection) -> None:
                conn.execute("INSERT INTO item (value) VALUES ('first')")
                raise ValueError("boom")

            with pytest.raises(ValueError):
                await db.write(half)
            assert await db.read(lambda c: c.execute("SELECT count(*) FROM item").fetchone()[0]) == 0
            # The writer is still healthy afterwards.
            await db.write(lambda c: c.execute("INSERT INTO item (value) VALUES ('ok')"))
            assert await db.read(lambda c: c.execute("SELECT count(*) FROM item").fetchone()[0]) == 1
        finally:
            await db.close()

    run(main())


def test_many_concurrent_writers_and_readers(tmp_path: Path) -> None:
    async def main() -> None:
        db = Database(make_config(tmp_path, store={"sqlite_readers": 3}))
        db.register_migrations("test", SCHEMA)
        await db.start()
        try:
            async def writer(index: int) -> None:
                for n in range(50):
                    await db.write(lambda c, v=f"{index}-{n}": c.execute("INSERT INTO item (value) VALUES (?)", (v,)))

            async def reader() -> None:
                for _ in range(50):
                    await db.read(lambda c: c.execute("SELECT count(*) FROM item").fetchone()[0])

            await asyncio.gather(*(writer(i) for i in range(25)), *(reader() for _ in range(25)))
            assert await db.read(lambda c: c.execute("SELECT count(*) FROM item").fetchone()[0]) == 25 * 50
            assert db.errors == 0
            assert db.stats()["writes"]["count"] >= 25 * 50
        finally:
            await db.close()

    run(main())


def test_cancelled_job_is_skipped(tmp_path: Path) -> None:
    async def main() -> None:
        db = Database(make_config(tmp_path))
        db.register_migrations("test", SCHEMA)
        await db.start()
        try:
            gate = threading.Event()
            blocker = asyncio.ensure_future(db.write(lambda c: gate.wait(5)))
            await asyncio.sleep(0.05)
            skipped = asyncio.ensure_future(db.write(lambda c: c.execute("INSERT INTO item (value) VALUES ('no')")))
            await asyncio.sleep(0.01)
            skipped.cancel()
            gate.set()
            await blocker
            await db.write(lambda c: None)  # the queue has drained past the cancelled job
            assert await db.read(lambda c: c.execute("SELECT count(*) FROM item").fetchone()[0]) == 0
        finally:
            await db.close()

    run(main())


def test_refuses_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "pirag.sqlite3"
    path.write_bytes(b"this is not a database, it is a shopping list" * 100)

    async def main() -> None:
        db = Database(make_config(tmp_path))
        with pytest.raises(CorruptDatabase, match="DURABILITY.md"):
            await db.start()

    run(main())


def test_refuses_damaged_pages(tmp_path: Path) -> None:
    async def main() -> None:
        db = Database(make_config(tmp_path))
        db.register_migrations("test", SCHEMA)
        await db.start()
        await db.write(lambda c: c.executemany("INSERT INTO item (value) VALUES (?)",
                                               [(f"value number {n} " * 5,) for n in range(5000)]))
        await db.close()
        raw = bytearray((tmp_path / "pirag.sqlite3").read_bytes())
        page = 4096
        for offset in range(3 * page, min(len(raw), 12 * page)):  # scribble over some b-tree pages
            raw[offset] = 0x5A
        (tmp_path / "pirag.sqlite3").write_bytes(bytes(raw))
        db = Database(make_config(tmp_path))
        with pytest.raises(CorruptDatabase, match="damaged"):
            await db.start()

    run(main())


def test_online_backup_while_writing(tmp_path: Path) -> None:
    async def main() -> None:
        db = Database(make_config(tmp_path))
        db.register_migrations("test", SCHEMA)
        await db.start()
        try:
            await db.write(lambda c: c.executemany("INSERT INTO item (value) VALUES (?)",
                                                   [(str(n),) for n in range(1000)]))
            stop = False

            async def keep_writing() -> int:
                count = 0
                while not stop:
                    await db.write(lambda c: c.execute("INSERT INTO item (value) VALUES ('during')"))
                    count += 1
                return count

            task = asyncio.ensure_future(keep_writing())
            await asyncio.sleep(0.02)
            result = await db.backup(tmp_path / "backups" / "copy.sqlite3")
            stop = True
            written = await task
            assert written > 0
            assert result["bytes"] > 0
        finally:
            await db.close()
        copy = sqlite3.connect(tmp_path / "backups" / "copy.sqlite3")
        assert copy.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        assert copy.execute("SELECT count(*) FROM item WHERE value != 'during'").fetchone()[0] == 1000
        copy.close()

    run(main())


def test_group_commit_keeps_each_write_atomic(tmp_path: Path) -> None:
    async def main() -> None:
        db = Database(make_config(tmp_path, store={"group_commit_max": 64}))
        db.register_migrations("test", SCHEMA)
        await db.start()
        try:
            gate = threading.Event()
            blocker = asyncio.ensure_future(db.write(lambda c: gate.wait(5)))
            await asyncio.sleep(0.05)

            def good(value: str):
                return lambda c: c.execute("INSERT INTO item (value) VALUES (?)", (value,)).lastrowid

            def bad(c: sqlite3.Connection) -> None:
                c.execute("INSERT INTO item (value) VALUES ('half')")
                raise ValueError("this one fails alone")

            futures = [asyncio.ensure_future(db.write(good("a"))), asyncio.ensure_future(db.write(bad)),
                       asyncio.ensure_future(db.write(good("b")))]
            await asyncio.sleep(0.05)  # all three are queued behind the blocker: they form one group
            gate.set()
            await blocker
            results = await asyncio.gather(*futures, return_exceptions=True)
            assert isinstance(results[1], ValueError) and isinstance(results[0], int) and isinstance(results[2], int)
            values = await db.read(lambda c: [r[0] for r in c.execute("SELECT value FROM item ORDER BY id")])
            assert values == ["a", "b"]
        finally:
            await db.close()

    run(main())
