"""The retrieval core end to end: the real daemon, the real model, real SQLite and Chroma, over the socket."""

from __future__ import annotations

import time
from typing import Any

from pirag.client.protocol.documents import DocumentIn

from ..conftest import DaemonHandle

FILLER = [
    ("net/retry.py", "def retry(call, attempts=3):\n    for attempt in range(attempts):\n        try:\n"
                     "            return call()\n        except OSError:\n            time.sleep(2 ** attempt)\n"),
    ("net/checksum.py", "def crc_block(block: bytes) -> int:\n    return zlib.crc32(block)\n\n"
                        "def verify(block, expected):\n    return crc_block(block) == expected\n"),
    ("docs/protocol.md", "# Protocol\n\nThe client negotiates the protocol version first, then sends frames.\n"),
    ("web/adapter.py", "class Adapter:\n    def send(self, request):\n        return self.session.send(request)\n"),
]
PLANTED = [
    ("store/reader.py", "def load(path):\n    zq12345_read_checksum = None\n    return open(path).read()\n",
     ["zq12345_read_checksum", "zq12345"]),
    ("store/frames.py", "class Frames:\n    def count(self):\n        self.quibbleFrameCount = 0\n",
     ["quibbleFrameCount", "quibble frame count", "quibble_frame_count"]),
    ("store/codec.py", "import plinth.codec.zephyrine_decode as decode\n",
     ["plinth.codec.zephyrine_decode", "zephyrineDecode"]),
]


def test_identifiers_and_an_edited_phrase_are_the_top_hit(real_daemon: DaemonHandle) -> None:
    with real_daemon.client(timeout=300) as client:
        documents = [DocumentIn(source=source, text=text) for source, text in FILLER]
        documents += [DocumentIn(source=source, text=text) for source, text, _ in PLANTED]
        client.ingest("ret-ident", documents=documents, wait=True)
        for source, _, queries in PLANTED:
            for query in queries:
                hits = client.search(query, "ret-ident", k=5, use_cache=False).hits
                assert hits and hits[0].source == source, (query, [hit.source for hit in hits])
        edited = dict(FILLER)["docs/protocol.md"] + "\n# zanzibar quokka marmalade protocol negotiation\n"
        result = client.ingest("ret-ident", documents=[DocumentIn(source="docs/protocol.md", text=edited)], wait=True)
        assert result.chunks_embedded >= 1
        hits = client.search("zanzibar quokka marmalade protocol", "ret-ident", k=5, use_cache=False).hits
        assert hits[0].source == "docs/protocol.md" and "zanzibar" in hits[0].text
        assert hits[0].keyword_rank == 1
        one_sided = client.search("zanzibar quokka marmalade protocol", "ret-ident", k=5, mode="keyword").hits
        assert one_sided and all(hit.vector_rank is None for hit in one_sided)
        client.drop_project("ret-ident")


def wait_embedded(client: Any, count: int) -> None:
    deadline = time.monotonic() + 120
    while int(client.status().components["memory"]["episodes_embedded"]) < count:
        assert time.monotonic() < deadline, "episodes were not embedded in time"
        time.sleep(0.2)


def test_a_reply_is_found_by_the_words_of_what_it_answered(real_daemon: DaemonHandle) -> None:
    with real_daemon.client(timeout=300) as client:
        before = int(client.status().components["memory"]["episodes_embedded"])
        turns = [("Ana", "Where did you spend the holidays in Lisbon last May?"),
                 ("Ben", "Mostly by the river, and the pasteis were worth every queue."),
                 ("Ana", "I started a pottery class on Tuesdays."),
                 ("Ben", "My sister adopted two cats from the shelter.")]
        ids = [client.log_episode(f"{speaker}: {text}", session="s1", project="ret-conv", role=speaker,
                                  timestamp=1_700_000_000 + n).episode.id for n, (speaker, text) in enumerate(turns)]
        wait_embedded(client, before + len(turns))
        hits = client.recall_episodes("Lisbon holidays", project="ret-conv", k=4, mode="keyword").episodes
        found = [hit.episode.id for hit in hits]
        assert found[:2] == ids[:2]   # the question itself, then the answer that follows it
        hybrid = client.recall_episodes("What did Ben do in Lisbon?", project="ret-conv", k=4).episodes
        assert ids[1] in [hit.episode.id for hit in hybrid[:2]]
        assert all(hit.similarity is not None for hit in hybrid)   # keyword-only ones get their true similarity
        client.drop_project("ret-conv")


def test_a_file_is_found_by_its_path_and_one_file_does_not_crowd_the_others_out(real_daemon: DaemonHandle) -> None:
    body = "\n".join(f"        part_{m} = self.verify(frame[{m}:{m + 8}], expected_{m}, window={m})" for m in range(8))
    methods = "\n\n".join(f"    def handle_{n}(self, frame):\n{body}\n        return self.decode(frame, {n})"
                          for n in range(6))   # each method over a quarter of a chunk: a chunk of its own
    documents = [DocumentIn(source="/srv/app/ledger/reconcile.py", text=f"class Book:\n{methods}\n"),
                 DocumentIn(source="/srv/app/net/frames.py", text="def decode(frame):\n    return frame[4:]\n"),
                 DocumentIn(source="/srv/app/net/codec.py", text="def encode(frame):\n    return b'ab' + frame\n")]
    with real_daemon.client(timeout=300) as client:
        client.ingest("ret-files", documents=documents, wait=True)
        # "ledger" is in no file's text: only in the path, which every chunk's keyword text carries
        hits = client.search("ledger", "ret-files", k=5, mode="keyword", use_cache=False).hits
        assert hits and {hit.source for hit in hits} == {"/srv/app/ledger/reconcile.py"}
        assert all("ledger" not in hit.text for hit in hits)   # the header is not returned as text
        uncapped = client.search("decode the frame", "ret-files", k=5, per_file=0, use_cache=False).hits
        assert [hit.source for hit in uncapped].count("/srv/app/ledger/reconcile.py") >= 3
        for cap in (1, 2):
            capped = client.search("decode the frame", "ret-files", k=5, per_file=cap, use_cache=False).hits
            sources = [hit.source for hit in capped]
            assert len(sources) == 5                     # one file's further chunks fill up once the others are out
            head = sources[:2 + cap]                     # three files: every one of them before any file's extra
            assert len(set(head)) == 3 and max(head.count(source) for source in head) <= cap, sources
        default = client.search("decode the frame", "ret-files", k=5)
        assert len({hit.source for hit in default.hits[:3]}) == 3          # search.per_file = 1
        assert client.search("decode the frame", "ret-files", k=5).cached
        # the cache keeps grouped and ungrouped results, and each mode's, apart
        assert not client.search("decode the frame", "ret-files", k=5, per_file=0).cached
        assert not client.search("decode the frame", "ret-files", k=5, mode="vector").cached
        client.drop_project("ret-files")


def test_status_shows_where_each_kind_of_query_spent_its_time(real_daemon: DaemonHandle) -> None:
    """Every query through the core records its steps; status gives their p50/p90 per service and kind."""
    with real_daemon.client(timeout=300) as client:
        client.ingest("ret-phases", documents=[DocumentIn(source=s, text=t) for s, t in FILLER], wait=True)
        client.remember("the retry helper backs off exponentially", project="ret-phases")
        for n in range(3):
            client.search(f"retry with backoff {n}", "ret-phases", k=3, use_cache=False)
            client.recall(f"how does retry back off {n}", project="ret-phases")
        components = client.status().components
        steps = {"embed", "vector", "keyword", "complete", "fuse"}
        search = components["documents"]["phases_ms"]
        facts = components["memory"]["phases_ms"]["facts"]
        for phases in (search, facts):
            assert set(phases) == steps, phases
            assert all(0 <= phases[step]["p50"] <= phases[step]["p90"] for step in steps), phases
            assert phases["embed"]["p90"] > 0            # fresh queries were embedded
        client.drop_project("ret-phases")
