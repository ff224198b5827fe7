"""Chunkers per format: boundaries, line ranges, heading/definition paths, token budgets."""

from __future__ import annotations

import pytest

from pirag.daemon.embed.fake import FakeEmbedder
from pirag.daemon.services.chunking import chunk_text, html_to_text, pdf_to_segments, chunk_segments
from pirag.daemon.services.walk import decode_text

COUNT = FakeEmbedder().count_tokens


def chunks(text, file_type, budget=200, overlap=0):
    return chunk_text(text, file_type, COUNT, budget, overlap)


def test_markdown_headings_become_paths_and_fences_stay_whole():
    text = "# Guide\n\nintro text with several words\n\n## Install\n\n```sh\n# not a heading\n\npip install x\n```\n\n## Use\n\nrun it\n"
    found = chunks(text, "md", budget=12)
    by_heading = {c.heading: c for c in found}
    assert "Guide > Install" in by_heading and "Guide > Use" in by_heading
    install = by_heading["Guide > Install"]
    assert "# not a heading" in install.text and "pip install x" in install.text
    assert (install.line_start, install.line_end) == (5, 11)
    assert by_heading["Guide"].text == "# Guide\n\nintro text with several words"


def test_rst_sections():
    text = "=====\nTitle\n=====\n\nIntro.\n\nPart A\n------\n\nText A.\n\nDeeper\n~~~~~~\n\nText deep.\n"
    headings = [c.heading for c in chunks(text, "rst", budget=6)]
    assert headings == ["Title", "Title > Part A", "Title > Part A > Deeper"]


@pytest.mark.parametrize("file_type, source, labels", [
    ("py", "import os\n\n\n@decorator\ndef alpha():\n    return 1\n\n\nclass Beta:\n    def gamma(self):\n"
           "        return 2\n", ["def alpha", "class Beta"]),
    ("ts", "import x from 'y';\n\nexport function alpha(a) {\n  return a;\n}\n\nexport const beta = (b) => {\n"
           "  return b;\n};\n\nexport class Gamma {}\n", ["function alpha", "const beta", "class Gamma"]),
    ("go", "package main\n\n// Alpha does\nfunc Alpha() {\n}\n\ntype Beta struct {\n}\n",
     ["func Alpha", "type Beta"]),
    ("rs", "use std::io;\n\n#[derive(Debug)]\npub struct Alpha { x: i32 }\n\nimpl Alpha {\n    fn new() {}\n}\n\n"
           "pub async fn beta() {}\n", ["struct Alpha", "impl Alpha", "fn beta"]),
    ("c", "#include <stdio.h>\n\nstatic int\nalpha(int a)\n{\n  return a;\n}\n\nstruct beta {\n  int x;\n};\n\n"
          "int main(void) {\n  return 0;\n}\n", ["alpha()", "struct beta", "main()"]),
    ("sh", "#!/bin/sh\nset -e\n\nalpha() {\n  echo a\n}\n\nfunction beta {\n  echo b\n}\n",
     ["function alpha", "function beta"]),
])
def test_code_boundaries_at_top_level_definitions(file_type, source, labels):
    found = chunks(source, file_type, budget=8)
    headings = [c.heading for c in found if c.heading]
    for label in labels:
        assert label in headings, (label, headings)
    # no chunk mixes two definitions
    for chunk in found:
        assert sum(chunk.text.count(label.split()[-1].rstrip("()")) > 0 for label in labels) <= 2


def test_python_methods_are_named_inside_their_class():
    body = "\n".join(f"        x{i} = {i}" for i in range(30))
    source = f"class Big:\n    def one(self):\n{body}\n\n    def two(self):\n{body}\n"
    headings = {c.heading for c in chunks(source, "py", budget=60)}
    assert {"class Big > def one", "class Big > def two"} <= headings


def test_token_budget_and_overlap():
    text = "\n".join(f"line {i} with some words in it" for i in range(200))
    found = chunks(text, "txt", budget=50, overlap=10)
    assert len(found) > 5
    assert all(c.tokens <= 50 for c in found)
    assert found[1].line_start <= found[0].line_end  # overlap carried lines over
    covered = set()
    for chunk in found:
        covered.update(range(chunk.line_start, chunk.line_end + 1))
    assert covered == set(range(1, 201))


def test_giant_line_is_split():
    found = chunks(" ".join(["word"] * 5000), "txt", budget=64)
    assert len(found) > 50 and all(c.line_start == 1 for c in found)
    assert all(c.tokens <= 64 for c in found)
    assert sum(c.text.count("word") for c in found) >= 5000


def test_html_to_text_keeps_headings_and_drops_scripts():
    text = html_to_text("<html><head><style>p{}</style></head><body><h1>Top</h1><p>Hello &amp; bye</p>"
                        "<script>evil()</script><h2>Sub</h2><ul><li>one</li><li>two</li></ul></body></html>")
    assert "evil" not in text and "p{}" not in text
    found = chunks(text, "md", budget=6)
    assert [c.heading for c in found] == ["Top", "Top > Sub"]
    assert "Hello & bye" in found[0].text


def test_decode_text():
    assert decode_text("héllo".encode()) == ("héllo", "")
    assert decode_text("héllo".encode("utf-16"))[0] == "héllo"
    text, note = decode_text("caf\xe9 cr\xe8me".encode("cp1252"))
    assert text == "café crème" and "cp1252" in note
    assert decode_text(b"\x00\x01\x02binary")[0] is None
    assert decode_text(bytes(range(1, 32)) * 50)[0] is None


def test_pdf_pages(tmp_path):
    pypdf = pytest.importorskip("pypdf")
    writer = pypdf.PdfWriter()
    writer.add_blank_page(width=200, height=200)
    import io

    buffer = io.BytesIO()
    writer.write(buffer)
    text, segments = pdf_to_segments(buffer.getvalue())
    assert chunk_segments(segments, COUNT, 100, 0) == []  # a blank page has no text, and no crash
