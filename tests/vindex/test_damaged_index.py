"""A damaged HNSW file of a project's collection: the next start sets the collection aside and rebuilds it.

Real daemon, real model, real Chroma directory. The daemon is stopped, one file of the collection's HNSW
segment is truncated or garbled, the daemon is started again: index health says ``rebuilt``, every document
is still found through the vector side, nothing is lost.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pirag.client.protocol.documents import DocumentIn
from tests.conftest import wait_until

PROJECT = "damaged"
DOCS = 1_300          # enough vectors for Chroma to write its HNSW files to disk (it syncs every 1,000)
ANIMALS = ["otter", "falcon", "badger", "heron", "lynx", "marten", "osprey", "beaver", "walrus", "ibis"]
PLACES = ["harbour", "glacier", "orchard", "canyon", "meadow", "lagoon", "quarry", "steppe", "delta", "fjord"]


def note(i: int) -> str:
    return (f"Field note {i}: the {ANIMALS[i % 10]} was seen near the {PLACES[(i // 10) % 10]} "
            f"on day {i // 100} at {i % 24} o'clock.")


def hnsw_files(state_dir: Path) -> list[Path]:
    return sorted((state_dir / "chroma").glob("*-*-*-*-*/*.bin"))


def damage(path: Path, how: str) -> None:
    if how == "truncate":
        with open(path, "r+b") as handle:
            handle.truncate(path.stat().st_size // 3)
    else:
        size = path.stat().st_size
        with open(path, "r+b") as handle:
            handle.write(os.urandom(min(size, 4096)))


def vector_hits(client, text: str) -> list:
    return [hit for hit in client.search(text, PROJECT, k=5, use_cache=False).hits if hit.vector_rank is not None]


@pytest.mark.parametrize(("filename", "how"), [("data_level0.bin", "truncate"), ("header.bin", "garble"),
                                               ("link_lists.bin", "truncate")])
def test_damaged_hnsw_file_is_set_aside_and_rebuilt(daemon_factory, real_model, filename, how):
    daemon = daemon_factory(f"dmg-{how[:4]}", real_model)
    with daemon.client(timeout=300) as client:
        for start in range(0, DOCS, 325):
            client.ingest(PROJECT, documents=[DocumentIn(source=f"notes/{i}.txt", text=note(i))
                                              for i in range(start, min(DOCS, start + 325))])
        probes = [0, 437, 1299]
        before = {i: vector_hits(client, note(i))[0].source for i in probes}
        assert before == {i: f"notes/{i}.txt" for i in probes}
    daemon.stop()
    files = [path for path in hnsw_files(daemon.state_dir) if path.name == filename]
    assert files, f"no {filename} under {daemon.state_dir / 'chroma'}: {hnsw_files(daemon.state_dir)}"
    damage(files[0], how)

    daemon.restart()
    with daemon.client(timeout=300) as client:
        health = wait_until(lambda: client.status().components["documents"]["index_health"].get(PROJECT), 120)
        assert health == "rebuilt"
        vectors = client.status().components["vectors"]
        assert vectors["set_aside"] >= 1 and vectors["worker"]["alive"]
        for i in probes + [12, 777]:
            hits = vector_hits(client, note(i))
            assert hits and hits[0].source == f"notes/{i}.txt", (i, hits[:2])
            assert hits[0].distance is not None and hits[0].distance < 0.05
        assert sum(p.chunks for p in client.list_projects().projects if p.name == PROJECT) == DOCS
