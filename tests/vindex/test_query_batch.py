"""Concurrent queries of one collection share one request to the index worker (``store/query_batch.py``).

The real ``VectorIndex`` with its real worker process and Chroma directory: 40 queries sent at once must come
back exactly as 40 queries sent one by one, each with its own k, in fewer requests; a filter keeps its own group;
a failure reaches every query of the group and the next group works.
"""

from __future__ import annotations

import asyncio

import numpy as np
from pirag.daemon.store.query_batch import QueryBatcher
from tests.documents.helpers import make_config

from .test_worker import run, running, unit_vectors


def test_concurrent_queries_are_batched_and_each_gets_its_own_answer(tmp_path):
    vectors = unit_vectors(300, seed=3)
    queries = unit_vectors(40, seed=4)

    async def scenario():
        async with running(make_config(tmp_path)) as index:
            await index.upsert("c-docs", [str(i) for i in range(300)], vectors,
                               [{"half": i % 2} for i in range(300)])
            alone = [await index.query("c-docs", q, 3 + n % 5) for n, q in enumerate(queries)]
            before = index.stats()["query_batches"]
            together = await asyncio.gather(*(index.query("c-docs", q, 3 + n % 5) for n, q in enumerate(queries)))
            after = index.stats()["query_batches"]
            assert [[i for i, _ in hits] for hits in together] == [[i for i, _ in hits] for hits in alone]
            assert all(len(hits) == 3 + n % 5 for n, hits in enumerate(together))
            for mine, theirs in zip(together, alone):
                assert np.allclose([d for _, d in mine], [d for _, d in theirs], atol=1e-5)
            requests = after["requests"] - before["requests"]
            assert after["queries"] - before["queries"] == 40 and requests < 40, (before, after)

            # a filter is its own group: its hits obey it while unfiltered queries run beside it
            mixed = await asyncio.gather(index.query("c-docs", queries[0], 10, {"half": 1}),
                                         index.query("c-docs", queries[0], 10))
            assert all(int(i) % 2 == 1 for i, _ in mixed[0])
            assert len(mixed[1]) == 10 and [i for i, _ in mixed[1]][:3] == [i for i, _ in alone[0]]
            assert await index.query("absent-docs", queries[0], 5) == []

    run(scenario)


def test_a_failed_request_fails_every_query_of_its_group_and_the_next_group_is_sent():
    sent: list[int] = []

    async def send(take):
        await asyncio.sleep(0.01)          # the worker is busy: the other queries join meanwhile
        args = take()
        sent.append(args["vectors"].shape[0])
        if len(sent) == 1:
            raise RuntimeError("worker lost")
        return [[(f"id{n}", 0.1 * n)] * args["k"] for n in range(args["vectors"].shape[0])]

    async def scenario():
        batcher = QueryBatcher(send, lambda matrix: matrix)
        first = await asyncio.gather(*(batcher.query("c", np.ones(4), 2, None) for _ in range(5)),
                                     return_exceptions=True)
        assert all(isinstance(result, RuntimeError) for result in first) and sent == [5]
        second = await asyncio.gather(*(batcher.query("c", np.ones(4), k, None) for k in (1, 3)))
        assert sent == [5, 2] and [len(hits) for hits in second] == [1, 3]
        assert batcher.stats() == {"requests": 1, "queries": 2, "mean_queries": 2.0}

    asyncio.run(scenario())
