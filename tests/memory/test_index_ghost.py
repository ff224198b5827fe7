"""A delete racing with a write of the same id must not leave a ghost in the vector index.

Found by ``pirag-stress crash`` (20 kills with writers running): Chroma held one id more than SQLite had
vectors for. A rebuild (or a flush) holds the collection's lock with vectors it read from SQLite; a ``forget``
that deleted the row meanwhile used to delete from the index without waiting, and the rebuild then wrote the
forgotten id back. Plumbing only: the in-memory index stands in for Chroma."""

from __future__ import annotations

import asyncio

import numpy as np

from pirag.daemon.services.recall import VectorSide
from pirag.daemon.store import facts as fact_rows

from .fakes import NumpyVectorIndex


def _side() -> tuple[VectorSide, NumpyVectorIndex]:
    index = NumpyVectorIndex()
    return VectorSide("facts", fact_rows, db=None, vectors=index), index  # type: ignore[arg-type]


def test_delete_waits_for_a_write_in_progress() -> None:
    async def scenario() -> set[str]:
        side, index = _side()
        collection = side.collection("p")
        vector = np.ones((1, 4), np.float32) / 2
        rebuild = side._lock(collection)
        await rebuild.acquire()                      # a rebuild holding vectors read before the forget
        write = asyncio.create_task(side.upsert("p", ["ghost"], vector))
        await asyncio.sleep(0)
        delete = asyncio.create_task(side.delete("p", ["ghost"]))   # the forget, after its SQLite delete
        await asyncio.sleep(0.01)
        rebuild.release()
        await asyncio.gather(write, delete)
        return set(index.collections.get(collection, {}))

    assert asyncio.run(scenario()) == set()


def test_delete_drops_an_id_from_a_flush_waiting_for_the_lock() -> None:
    async def scenario() -> set[str]:
        side, index = _side()
        collection = side.collection("p")
        side._projects[collection] = "p"
        side._pending[collection] = {"ghost": np.ones(4, np.float32) / 2, "kept": np.ones(4, np.float32) / 2}
        busy = side._lock(collection)
        await busy.acquire()
        flush = asyncio.create_task(side.flush())    # takes the queued items, then waits for the lock
        await asyncio.sleep(0)
        delete = asyncio.create_task(side.delete("p", ["ghost"]))
        await asyncio.sleep(0.01)
        busy.release()
        await asyncio.gather(flush, delete)
        return set(index.collections.get(collection, {}))

    assert asyncio.run(scenario()) == {"kept"}
