"""The watch service in process (real SQLite, Chroma and inotify; fake embedder): a sync that fails keeps its
changes pending, says so (``sync_failed``), and succeeds on the retry without losing any of them."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec

from pirag.client.protocol.watch import WatchAddArgs
from pirag.daemon.config import WatchConfig
from tests.documents.helpers import Stack, make_config

from .helpers import write


def test_a_failed_sync_keeps_its_changes_pending_and_is_retried(short_tmp: Path) -> None:
    from pirag.daemon.services.watch import WatchService

    root = short_tmp / "svc"
    base = root / "tree"
    write(base / "a.md", "alpha\n")
    config = make_config(root / "state", ingest={"allowed_roots": [str(root)]})
    config = msgspec.structs.replace(config, watch=WatchConfig(quiet_ms=100, retry_interval_s=0.5))

    async def scenario() -> None:
        async with Stack(config) as stack:
            service = WatchService(config, stack.db, stack.documents)
            await service.start()
            try:
                await service.handlers()["watch_add"](WatchAddArgs(project="svc", paths=[str(base)], wait=True), None)
                real_sync = stack.documents.sync_sources
                failures = []

                async def failing_once(*args, **kwargs):
                    if not failures:
                        failures.append(time.time())
                        raise OSError(28, "No space left on device")
                    return await real_sync(*args, **kwargs)

                stack.documents.sync_sources = failing_once
                write(base / "b.md", "beta\n")
                watch = next(iter(service.watches.values()))
                deadline = time.monotonic() + 10
                while watch.error_code != "sync_failed" and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
                info = watch.info()
                assert (info.state, info.error_code, info.errors) == ("error", "sync_failed", 1)
                assert info.pending >= 1 and "No space left" in info.error
                rows = await stack.db.read(lambda conn: conn.execute("SELECT path FROM watch_pending").fetchall())
                assert (str(base / "b.md"),) in rows                         # still journaled
                deadline = time.monotonic() + 10
                while watch.state != "watching" and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
                info = watch.info()
                assert (info.state, info.error_code, info.pending, info.files) == ("watching", "", 0, 2)
                rows = await stack.db.read(lambda conn: conn.execute("SELECT path FROM watch_pending").fetchall())
                assert rows == []
            finally:
                await service.close()

    asyncio.run(scenario())
