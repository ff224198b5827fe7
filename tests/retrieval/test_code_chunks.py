"""Code chunks for code search: a definition per chunk, the contextual header, and the per-file cap."""

from __future__ import annotations

from pirag.daemon.embed.fake import FakeEmbedder
from pirag.daemon.services.chunking import chunk_text
from pirag.daemon.services.retrieval import Scored, by_source
from pirag.daemon.store.fts import short_path

COUNT = FakeEmbedder().count_tokens

METHODS = "\n\n".join(
    f"    def {name}(self, value):\n        total = value + {n}\n        return self.scale(total) * {n} + self.base"
    for n, name in enumerate(("get_payload", "set_payload", "attach")))
SOURCE = f"import re\n\n\nclass Message:\n    base = 0\n\n{METHODS}\n\n\ndef parse(text):\n    return Message()\n"


def test_a_method_is_a_chunk_of_its_own_with_the_header_in_front_of_what_is_embedded() -> None:
    chunks = chunk_text(SOURCE, "py", COUNT, 40, 0, source="/home/pi/src/mail/pkg/message.py")
    headings = [chunk.heading for chunk in chunks]
    assert headings == ["class Message", "class Message > def set_payload", "class Message > def attach",
                        "def parse"]   # the class's head and its first method stay merged (under a quarter)
    lines = SOURCE.splitlines()
    for chunk in chunks:
        header = f"mail/pkg/message.py > {chunk.heading}"
        assert chunk.embed_text == f"{header}\n{chunk.text}"
        # what is returned is the file's own lines (runs of blank lines come back as one): no header in it
        assert [line for line in chunk.text.splitlines() if line] == \
            [line for line in lines[chunk.line_start - 1:chunk.line_end] if line]
        assert "mail/pkg" not in chunk.text


def test_a_long_definition_is_cut_with_the_header_repeated_on_every_piece() -> None:
    body = "\n".join(f"    step_{n} = compute(step_{n - 1}, {n})" for n in range(1, 120))
    source = f"def long_job(step_0):\n{body}\n    return step_119\n"
    chunks = chunk_text(source, "py", COUNT, 60, 8, source="jobs/long.py")
    assert len(chunks) > 3
    assert all(chunk.heading == "def long_job" for chunk in chunks)
    assert all(chunk.embed_text.startswith("jobs/long.py > def long_job\n") for chunk in chunks)
    assert all(chunk.tokens <= 60 for chunk in chunks)


def test_prose_keeps_its_heading_path_alone_and_hashes_follow_the_embedded_text() -> None:
    (chunk,) = chunk_text("# Guide\n\nSome words here.\n", "md", COUNT, 200, 0, source="docs/guide.md")
    assert chunk.embed_text == "Guide\n# Guide\n\nSome words here."
    one = chunk_text("def f():\n    return 1\n", "py", COUNT, 200, 0, source="a/x.py")[0]
    other = chunk_text("def f():\n    return 1\n", "py", COUNT, 200, 0, source="b/x.py")[0]
    assert one.text == other.text and one.chunk_hash != other.chunk_hash   # a different file is a different unit


def test_short_path_names_a_file_by_its_last_parts() -> None:
    assert short_path("/home/pi/work/pirag/daemon/services/search.py") == "daemon/services/search.py"
    assert short_path("email/mime/text.py") == "email/mime/text.py"
    assert short_path("notes.md") == "notes.md"
    assert short_path("C:\\src\\app\\main.py") == "src/app/main.py"


def test_results_grouped_by_file_lift_a_file_two_chunks_match_and_fill_up_to_k() -> None:
    scores = [("a", 0.90), ("b", 0.85), ("b", 0.80), ("a", 0.30), ("c", 0.70), ("b", 0.60)]
    ranked = [Scored(key=n, score=score, similarity=None, bm25=0.0, vector_rank=None, keyword_rank=None)
              for n, (_, score) in enumerate(scores)]
    source = {n: name for n, (name, _) in enumerate(scores)}

    def grouped(cap: int) -> list[tuple[str, float]]:
        return [(source[item.key], round(item.score, 3)) for item in by_source(ranked, lambda i: source[i.key], cap)]

    # b's best (0.85) is lifted by half its second best (0.80) past a's (0.90 + 0.15); then one chunk per file
    # while other files have candidates, and the rest fill up in order
    assert grouped(1) == [("b", 1.25), ("a", 1.05), ("c", 0.7), ("b", 0.8), ("b", 0.6), ("a", 0.3)]
    assert grouped(2) == [("b", 1.25), ("a", 1.05), ("b", 0.8), ("c", 0.7), ("a", 0.3), ("b", 0.6)]
    assert grouped(0) == [(name, score) for name, score in scores]   # no grouping: as fused
