"""Fair ingestion (``ingest_jobs.py``): the job order, jobs side by side, a short ingestion served while a long one
of the same project runs, and an ETA that follows the recent rate. In-process, with an embedder that takes
time (the fake's vectors plus a sleep per call): scheduling is plumbing; the figure with the real model is
``pirag-stress latency``'s one-file ingest during a 10 MB ingestion."""

from __future__ import annotations

import asyncio
import time

import pytest

from pirag.client.protocol.documents import DocumentIn, IngestArgs, IngestStatusArgs, ListSourcesArgs
from pirag.daemon.embed.fake import FakeEmbedder
from pirag.daemon.services.ingest import IngestRun
from pirag.daemon.services.ingest_jobs import UNKNOWN_SIZE, JobQueue

from .helpers import CountingEmbedder, Stack, make_config


class SlowEmbedder(CountingEmbedder):
    """The fake's vectors, ``delay_s`` per text: an ingestion that lasts long enough to be overtaken."""

    def __init__(self, delay_s: float):
        super().__init__(FakeEmbedder())
        self.delay_s = delay_s

    async def embed(self, texts, **kwargs):
        await asyncio.sleep(self.delay_s * len(texts))
        return await super().embed(texts, **kwargs)


def documents(prefix: str, count: int) -> list[DocumentIn]:
    return [DocumentIn(source=f"{prefix}/doc{i}.md",
                       text=f"# {prefix} {i}\n\nParagraph {i} about irrigation valves and zone {i}.\n")
            for i in range(count)]


def test_job_order_smallest_first_oldest_after_the_wait_limit_one_per_project() -> None:
    queue = JobQueue(slots=2, max_wait_s=60)
    queue.put(1, "big", 10_000_000)
    queue.put(2, "small", 1_000)
    queue.put(3, "small", 500)
    queue.put(4, "resumed", None)
    first = queue.pick()
    assert first is not None and first.job_id == 3                   # the smallest
    second = queue.pick()
    assert second is not None and second.job_id == 1                 # job 2 is of a project already running
    assert queue.pick() is None                                      # both slots taken
    queue.done(3)
    third = queue.pick()
    assert third is not None and third.job_id == 2
    queue.done(1)
    queue.done(2)
    late = queue.pick()
    assert late is not None and late.job_id == 4 and late.size_bytes == UNKNOWN_SIZE
    queue.done(4)

    aging = JobQueue(slots=1, max_wait_s=60)
    aging.put(1, "big", 10_000_000)
    aging.put(2, "small", 10)
    assert aging.pick(now=time.monotonic() + 61).job_id == 1          # waited too long: the oldest goes first


def long_documents(count: int, paragraphs: int) -> list[DocumentIn]:
    return [DocumentIn(source=f"long/doc{i}.md", text="\n\n".join(
        f"Paragraph {p} of document {i}: irrigation valves, zone {p}, watering at dawn, pressure {i * p}."
        for p in range(paragraphs))) for i in range(count)]


@pytest.mark.parametrize("count, paragraphs", [(150, 1), (10, 20)],
                         ids=["many-small-sources", "few-long-sources"])
def test_a_short_ingest_overtakes_a_long_one_of_the_same_project(tmp_path, count, paragraphs) -> None:
    # few-long-sources: the producer has prepared every source long before the short ingest comes; the embed
    # stage must step aside too (sources not begun wait for the next turn)
    async def scenario() -> None:
        embed = SlowEmbedder(0.02)
        async with Stack(make_config(tmp_path / "state", ingest={"chunk_tokens": 32}), embed=embed) as s:
            s.documents.ingestor.batch_size = 8
            long_run = asyncio.create_task(s.call("ingest", IngestArgs(project="garden", documents=long_documents(
                count, paragraphs))))
            for _ in range(400):
                if len(embed.texts) >= 8:
                    break
                await asyncio.sleep(0.01)
            assert embed.texts and not long_run.done()
            short = await asyncio.wait_for(s.call("ingest", IngestArgs(project="garden", documents=documents(
                "short", 1))), timeout=60)
            # the order is the promise (a timed bound would measure the machine): the long one is still running
            assert short.sources_added == 1 and not long_run.done(), "the short ingest waited for the long one"
            texts_when_short_done = len(embed.texts)
            long_result = await asyncio.wait_for(long_run, timeout=120)
            assert long_result.sources_added == count and long_result.errors == []
            assert long_result.chunks_total == len(set(embed.texts)) - 1      # every chunk once, none twice
            sources = await s.call("list_sources", ListSourcesArgs(project="garden", limit=200))
            names = {source.source for source in sources.sources}
            assert len(names) == count + 1 and "short/doc0.md" in names
            assert texts_when_short_done < len(embed.texts)       # the long one had work left after it

    asyncio.run(scenario())


def test_two_jobs_of_different_projects_run_side_by_side(tmp_path) -> None:
    big, small = tmp_path / "big", tmp_path / "small"
    for root, count in ((big, 200), (small, 10)):
        root.mkdir()
        for i in range(count):
            (root / f"n{i}.md").write_text(f"# Note {i}\n\nValves {i} and zones {i} of {root.name}.\n")

    async def scenario() -> None:
        embed = SlowEmbedder(0.02)
        config = make_config(tmp_path / "state", ingest={"allowed_roots": [str(tmp_path)], "chunk_tokens": 32})
        async with Stack(config, embed=embed) as s:
            s.documents.ingestor.batch_size = 8
            first = await s.call("ingest", IngestArgs(project="big", paths=[str(big)]))
            for _ in range(400):
                if s.documents._running_jobs:
                    break
                await asyncio.sleep(0.01)
            second = await s.call("ingest", IngestArgs(project="small", paths=[str(small)]))
            both = False
            for _ in range(1000):
                states = {job.job_id: job for job in (await s.call("ingest_status", IngestStatusArgs())).jobs}
                both = both or len(s.documents._running_jobs) == 2
                if states[second.job_id].state == "done":
                    break
                await asyncio.sleep(0.02)
            assert both and states[second.job_id].state == "done"
            assert states[first.job_id].state == "running", "the small job waited for the large one"
            running = states[first.job_id]
            assert running.eta_s is not None and running.eta_s > 0
            for _ in range(3000):
                if (await s.call("ingest_status", IngestStatusArgs(job_id=first.job_id))).jobs[0].state == "done":
                    break
                await asyncio.sleep(0.05)
            done = (await s.call("ingest_status", IngestStatusArgs(job_id=first.job_id))).jobs[0]
            assert done.state == "done" and done.files_done == 200

    asyncio.run(scenario())


def test_eta_follows_the_recent_rate() -> None:
    run = IngestRun("p", files_total=100, bytes_total=1000)
    now = time.monotonic()
    run.files_done = 50
    run.bytes_done = 0
    run.progress.extend([(now - 100, 0), (now - 25, 400), (now - 5, 500)])   # slower lately
    run.bytes_done = 500
    eta = run.eta()
    # the last 30 s: 100 bytes in 25 s, so the 500 bytes left take ~125 s (the average since the start: 100 s)
    assert eta is not None and 115 <= eta <= 135, eta
    run.progress.clear()
    assert run.eta() is not None               # no byte samples: the files-based estimate
