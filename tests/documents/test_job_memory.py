"""A long-running daemon keeps the live figures of its newest finished ingestion jobs only: a nightly
`pirag ingest DIR` for a year must not keep 365 runs (their skip and error lists, progress windows) in memory."""

from __future__ import annotations

import asyncio

from pirag.client.protocol.documents import IngestArgs, IngestStatusArgs
from pirag.daemon.services.documents import FINISHED_RUNS_KEPT, INLINE_FILES

from .helpers import Stack, make_config


def test_finished_job_runs_are_bounded_and_the_newest_keep_their_result(tmp_path) -> None:
    tree = tmp_path / "notes"
    tree.mkdir()
    for i in range(INLINE_FILES + 1):  # one file more than an inline ingestion takes: every ingest is a job
        (tree / f"n{i}.md").write_text(f"# Note {i}\n\nValves {i} and zones {i}.\n")
    jobs = FINISHED_RUNS_KEPT + 8

    async def scenario() -> None:
        config = make_config(tmp_path / "state", ingest={"allowed_roots": [str(tmp_path)]})
        async with Stack(config) as s:
            ids = []
            for _ in range(jobs):
                result = await asyncio.wait_for(s.call("ingest", IngestArgs(project="p", paths=[str(tree)],
                                                                             wait=True)), timeout=60)
                assert result.state == "done" and result.job_id is not None
                ids.append(result.job_id)
            assert len(set(ids)) == jobs
            assert len(s.documents._runs) <= FINISHED_RUNS_KEPT
            newest = (await s.call("ingest_status", IngestStatusArgs(job_id=ids[-1]))).jobs[0]
            assert newest.state == "done" and newest.result is not None and newest.result.files_total == len(
                list(tree.iterdir()))
            oldest = (await s.call("ingest_status", IngestStatusArgs(job_id=ids[0]))).jobs[0]
            assert oldest.state == "done" and oldest.files_total == INLINE_FILES + 1   # from the journal

    asyncio.run(scenario())
