"""drop_project racing ingestion jobs: a job asked for before the drop never re-creates the project after it."""

from __future__ import annotations

import asyncio

from pirag.client.protocol.documents import DropProjectArgs, IngestArgs, IngestStatusArgs, ListProjectsArgs

from .helpers import Stack, make_config
from .test_service import write_tree


def test_queued_job_of_a_dropped_project_does_not_recreate_it(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_tree(data)

    async def scenario():
        s = Stack(make_config(tmp_path / "state", ingest={"allowed_roots": [str(data)]}))
        async with s:
            s.documents._jobs.slots = 1               # one job at a time: the second stays queued
            held = s.documents._lock("first")
            await held.acquire()                      # the first job runs but waits
            first = await s.call("ingest", IngestArgs(project="first", paths=[str(data)]))
            second = await s.call("ingest", IngestArgs(project="doomed", paths=[str(data)]))
            for _ in range(200):
                if s.documents._running_jobs:
                    break
                await asyncio.sleep(0.01)
            assert list(s.documents._running_jobs) == [first.job_id]
            dropped = await s.call("drop_project", DropProjectArgs(project="doomed"))
            assert not dropped.dropped
            held.release()
            for _ in range(400):
                states = {job.job_id: job.state for job in
                          (await s.call("ingest_status", IngestStatusArgs())).jobs}
                if states.get(first.job_id) == "done" and states.get(second.job_id) != "queued":
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            assert states[second.job_id] == "cancelled", states
            names = [p.name for p in (await s.call("list_projects", ListProjectsArgs())).projects]
            assert names == ["first"]
            collections = await s.vectors.list_collections()
            assert not [name for name in collections if "doomed" in name], collections

    asyncio.run(scenario())
