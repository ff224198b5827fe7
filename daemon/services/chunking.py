"""Chunking: a document becomes token-bounded chunks that keep their line range and heading path.

Two steps:

1. A **segmenter** per format cuts the text into segments: paragraphs, Markdown/reST sections, top-level code
   definitions (``chunk_code.py``), PDF pages. Each segment knows its lines, its heading/definition path and
   whether it starts a new unit (a heading, a definition): a *hard* boundary.
2. The **packer** fills chunks up to ``chunk_tokens`` with whole segments. It cuts at every hard boundary
   unless the chunk so far is small (under a quarter of the budget: tiny sections are merged, not left as
   fragments); a segment over the budget is cut by lines (then by words for a giant line), and chunks cut in
   the middle of a unit carry ``overlap_tokens`` of the previous lines.

Token counts come from the model's own tokenizer (``count_tokens``), counted once per line in one batch call.
This module is CPU work: the ingest pipeline runs it on a worker thread.

**Code** (docs/RETRIEVAL.md, "Code search"): a chunk is cut at every definition, Python's methods included (tiny
ones merged), and what is embedded starts with a **contextual header**, the file's path (its last parts,
``store/fts.short_path``) and the definition path (``email/message.py > class Message > def get_payload``),
repeated on every piece of a long definition. The header is embedded, never returned as the chunk's text
(it is not in the file); the path is keyword-indexed with every chunk by the store (``doc_chunk.context``).
"""

from __future__ import annotations

import hashlib
import html.parser
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..store.fts import short_path
from .chunk_code import CODE_LANGUAGES, segment_code

TokenCounter = Callable[[Sequence[str]], list[int]]

MARKDOWN = {"md", "markdown", "mdx", "mkd"}
RST = {"rst", "rest"}
HTML = {"html", "htm", "xhtml"}
PDF = {"pdf"}


@dataclass
class Segment:
    lines: list[str]
    start: int                  # 1-based line number of lines[0]
    heading: tuple[str, ...]    # heading or definition path
    hard: bool = False          # starts a new unit (heading, definition, page)


@dataclass
class Chunk:
    text: str
    line_start: int
    line_end: int
    heading: str
    tokens: int
    embed_text: str = ""        # what is embedded: the contextual header (or heading path), then the text
    chunk_hash: str = ""


@dataclass
class Document:
    text: str
    file_type: str
    segments: list[Segment] = field(default_factory=list)


@dataclass(frozen=True)
class Cut:
    """Where the packer starts a new chunk between whole segments: at a hard boundary or where the first
    ``depth`` parts of the heading path change (``None``: any part), unless the chunk so far is under
    ``merge_below`` of the budget (then the small unit is merged with the next instead of left a fragment)."""

    depth: int | None
    merge_below: float


PROSE = Cut(depth=1, merge_below=0.25)   # sections: tiny ones merged with the next
CODE = Cut(depth=None, merge_below=0.25)  # every definition, methods too (code search, docs/RETRIEVAL.md)


def file_type_of(path: str) -> str:
    name = path.rsplit("/", 1)[-1].lower()
    if "." not in name.lstrip("."):
        if name in {"makefile", "dockerfile", "readme", "license", "changelog"}:
            return name
        return "txt"
    return name.rsplit(".", 1)[-1]


def default_chunk_tokens(max_tokens: int) -> int:
    """Chunks fill the model's window (less its special tokens), capped at 384 for retrieval precision."""
    return max(32, min(max_tokens - 2, 384))


def segment(text: str, file_type: str) -> list[Segment]:
    if file_type in MARKDOWN:
        return segment_markdown(text)
    if file_type in RST:
        return segment_rst(text)
    if file_type in CODE_LANGUAGES:
        return [Segment(lines, start, heading, hard) for lines, start, heading, hard in segment_code(text, file_type)]
    return segment_paragraphs(text.splitlines(), 1, ())


def segment_paragraphs(lines: list[str], first_line: int, heading: tuple[str, ...],
                       hard_first: bool = False, fences: bool = False) -> list[Segment]:
    """Paragraphs (runs of non-blank lines). With ``fences``, a fenced code block (``` or ~~~) stays whole:
    blank lines inside it do not cut."""
    segments: list[Segment] = []
    current: list[str] = []
    start = first_line
    in_fence: str | None = None
    for offset, line in enumerate(lines):
        fence = _FENCE.match(line) if fences else None
        if fence:
            in_fence = None if in_fence == fence.group(1) else (in_fence or fence.group(1))
        if line.strip() or in_fence:
            if not current:
                start = first_line + offset
            current.append(line)
        elif current:
            segments.append(Segment(current, start, heading, hard_first and not segments))
            current = []
    if current:
        segments.append(Segment(current, start, heading, hard_first and not segments))
    return segments


_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t#]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")


def segment_markdown(text: str) -> list[Segment]:
    lines = text.splitlines()
    segments: list[Segment] = []
    path: list[tuple[int, str]] = []
    section: list[str] = []
    section_start = 1
    in_fence: str | None = None

    def flush(end_exclusive: int) -> None:
        nonlocal section
        if section:
            segments.extend(segment_paragraphs(section, section_start, tuple(title for _, title in path),
                                               hard_first=True, fences=True))
        section = []

    index = 0
    while index < len(lines):
        line = lines[index]
        fence = _FENCE.match(line)
        if fence:
            in_fence = None if in_fence == fence.group(1) else (in_fence or fence.group(1))
        heading = None if in_fence else _ATX.match(line)
        level, title = (len(heading.group(1)), heading.group(2).strip()) if heading else (0, "")
        if (not heading and not in_fence and index + 1 < len(lines) and line.strip()
                and _SETEXT.match(lines[index + 1]) and not (index > 0 and lines[index - 1].strip())):
            level, title = (1 if lines[index + 1].lstrip().startswith("=") else 2), line.strip()
        if level:
            flush(index)
            while path and path[-1][0] >= level:
                path.pop()
            path.append((level, title))
            section_start = index + 1
            section = [line]
            if not heading:  # setext: the underline belongs to the heading
                section.append(lines[index + 1])
                index += 1
        else:
            if not section:
                section_start = index + 1
            section.append(line)
        index += 1
    flush(len(lines))
    return segments


_RST_ADORNMENT = re.compile(r"^([=\-`:'\"~^_*+#<>.])\1{2,}\s*$")


def segment_rst(text: str) -> list[Segment]:
    lines = text.splitlines()
    styles: list[tuple[str, bool]] = []
    path: list[tuple[int, str]] = []
    segments: list[Segment] = []
    section: list[str] = []
    section_start = 1
    index = 0
    while index < len(lines):
        line = lines[index]
        title = None
        style: tuple[str, bool] | None = None
        consumed = 1
        if (_RST_ADORNMENT.match(line) and index + 2 < len(lines) and lines[index + 1].strip()
                and _RST_ADORNMENT.match(lines[index + 2]) and lines[index + 2][0] == line[0]):
            title, style, consumed = lines[index + 1].strip(), (line[0], True), 3
        elif (line.strip() and not _RST_ADORNMENT.match(line) and index + 1 < len(lines)
              and _RST_ADORNMENT.match(lines[index + 1]) and len(lines[index + 1].rstrip()) >= len(line.rstrip())
              and not line.startswith(" ")):
            title, style, consumed = line.strip(), (lines[index + 1][0], False), 2
        if title is not None and style is not None:
            if section:
                segments.extend(segment_paragraphs(section, section_start, tuple(t for _, t in path), True))
            if style not in styles:
                styles.append(style)
            level = styles.index(style) + 1
            while path and path[-1][0] >= level:
                path.pop()
            path.append((level, title))
            section = lines[index:index + consumed]
            section_start = index + 1
            index += consumed
            continue
        if not section:
            section_start = index + 1
        section.append(line)
        index += 1
    if section:
        segments.extend(segment_paragraphs(section, section_start, tuple(t for _, t in path), True))
    return segments


class _HtmlToMarkdown(html.parser.HTMLParser):
    """HTML to plain text with ``#`` headings, so the Markdown segmenter finds the sections."""

    BLOCK = {"p", "div", "br", "li", "tr", "table", "section", "article", "header", "footer", "pre", "blockquote",
             "ul", "ol", "dl", "dt", "dd", "hr", "main", "nav", "aside", "figure", "figcaption"}
    SKIP = {"script", "style", "noscript", "template", "svg", "head"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out = io.StringIO()
        self.skip_depth = 0
        self.pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.skip_depth += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self.out.write("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in self.BLOCK:
            self.out.write("\n\n" if tag in {"p", "div", "section", "article", "table", "pre"} else "\n")
            if tag == "li":
                self.out.write("- ")
            if tag == "pre":
                self.pre += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skip_depth = max(0, self.skip_depth - 1)
        elif re.fullmatch(r"h[1-6]", tag):
            self.out.write("\n\n")
        elif tag == "pre":
            self.pre = max(0, self.pre - 1)
            self.out.write("\n\n")
        elif tag in self.BLOCK:
            self.out.write("\n")

    def handle_data(self, data: str) -> None:
        if self.skip_depth:
            return
        self.out.write(data if self.pre else re.sub(r"\s+", " ", data))


def html_to_text(source: str) -> str:
    parser = _HtmlToMarkdown()
    parser.feed(source)
    parser.close()
    text = re.sub(r"[ \t]+\n", "\n", parser.out.getvalue())
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def pdf_to_segments(data: bytes) -> tuple[str, list[Segment]]:
    """Text of a PDF, one hard segment per page (heading ``page N``); needs the optional ``pypdf``."""
    try:
        import pypdf
    except ImportError as exc:
        raise ValueError("PDF support needs the optional extra: pip install 'pirag[pdf]'") from exc
    reader = pypdf.PdfReader(io.BytesIO(data))
    all_lines: list[str] = []
    segments: list[Segment] = []
    for number, page in enumerate(reader.pages, start=1):
        page_lines = (page.extract_text() or "").splitlines()
        first = len(all_lines) + 1
        all_lines.extend(page_lines)
        segments.extend(segment_paragraphs(page_lines, first, (f"page {number}",), hard_first=True))
    return "\n".join(all_lines), segments


# -- the packer ---------------------------------------------------------------------------------------------


def chunk_segments(segments: list[Segment], count_tokens: TokenCounter, chunk_tokens: int,
                   overlap_tokens: int, source_label: str = "", cut: Cut = PROSE) -> list[Chunk]:
    """Pack segments into chunks of at most ``chunk_tokens`` tokens (model tokenizer, specials excluded).
    With ``source_label`` (code) every chunk's embedded text starts with the contextual header
    ``label > definition path``; without it, with the heading path alone."""
    if not segments:
        return []
    overhead = count_tokens([""])[0]
    flat = [line for seg in segments for line in seg.lines]
    counts = [max(0, count - overhead) for count in count_tokens(flat)] if flat else []
    # a newline joining two lines costs nothing in WordPiece; keep one token of slack per line for others
    position = 0
    per_segment: list[list[int]] = []
    for seg in segments:
        per_segment.append(counts[position:position + len(seg.lines)])
        position += len(seg.lines)
    budget = max(8, chunk_tokens)
    overlap = min(overlap_tokens, budget // 2)
    chunks: list[Chunk] = []
    lines: list[tuple[int, str, int]] = []   # (line number, text, tokens)
    heading: tuple[str, ...] = ()
    used = 0
    heading_costs: dict[tuple[str, ...], int] = {(): 0}

    label = (source_label,) if source_label else ()

    def limit_for(path: tuple[str, ...]) -> int:
        # the header is embedded in front of the text: it takes from the same window
        if path not in heading_costs:
            heading_costs[path] = max(0, count_tokens([" > ".join((*label, *path))])[0] - overhead) + 1
        return max(budget // 2, budget - heading_costs[path])

    def emit() -> None:
        nonlocal lines, used
        if lines and any(text.strip() for _, text, _ in lines):
            parts = [lines[0][1]]
            for (previous, _, _), (number, line, _) in zip(lines, lines[1:]):
                # blank lines between paragraphs come back as one; pieces of one long line rejoin with a space
                parts.append((" " if number == previous else "\n\n" if number > previous + 1 else "\n") + line)
            text = "".join(parts).strip("\n")
            chunks.append(Chunk(text=text, line_start=lines[0][0], line_end=lines[-1][0],
                                heading=" > ".join(heading), tokens=used))
        lines, used = [], 0

    def carry() -> None:
        """Start the next chunk with the last ``overlap`` tokens of the previous one (mid-unit cuts only)."""
        nonlocal lines, used
        kept: list[tuple[int, str, int]] = []
        total = 0
        for item in reversed(lines):
            if total + item[2] > overlap or not overlap:
                break
            kept.insert(0, item)
            total += item[2]
        emit()
        lines, used = kept, total

    limit = budget
    for seg, seg_counts in zip(segments, per_segment):
        seg_tokens = sum(seg_counts)
        if lines and (used + seg_tokens > limit or ((seg.hard or seg.heading[:cut.depth] != heading[:cut.depth])
                                                    and used >= budget * cut.merge_below)):
            emit()
        if not lines:
            heading = seg.heading
            limit = limit_for(heading)
        elif not heading and seg.heading:   # preamble (imports, intro) merged into the first named unit
            heading = seg.heading
        if used + seg_tokens <= limit:
            lines.extend(zip(range(seg.start, seg.start + len(seg.lines)), seg.lines, seg_counts))
            used += seg_tokens
            continue
        # a segment over the budget: cut it by lines, with overlap between the pieces
        for number, text, tokens in zip(range(seg.start, seg.start + len(seg.lines)), seg.lines, seg_counts):
            if tokens > limit:
                for piece, piece_tokens in _split_long_line(text, tokens, limit):
                    if used + piece_tokens > limit:
                        carry()
                        if used + piece_tokens > limit:
                            emit()
                    lines.append((number, piece, piece_tokens))
                    used += piece_tokens
                continue
            if used + tokens > limit:
                carry()
                if used + tokens > limit:
                    emit()
            lines.append((number, text, tokens))
            used += tokens
    emit()
    for chunk in chunks:
        header = " > ".join(part for part in (*label, chunk.heading) if part)
        chunk.embed_text = f"{header}\n{chunk.text}" if header else chunk.text
        chunk.chunk_hash = hashlib.blake2b(chunk.embed_text.encode("utf-8", "surrogatepass"),
                                           digest_size=16).hexdigest()
    return chunks


def _split_long_line(text: str, tokens: int, budget: int) -> list[tuple[str, int]]:
    """A line longer than the budget (minified code, a wall of text) cut at spaces by estimated tokens."""
    words = text.split(" ")
    per_word = tokens / max(1, len(words))
    pieces: list[tuple[str, int]] = []
    if per_word > budget / 4 or len(words) == 1:  # few or no spaces: cut by characters
        per_char = tokens / max(1, len(text))
        step = max(1, int(budget * 0.9 / max(per_char, 1e-6)))
        return [(text[i:i + step], max(1, int(len(text[i:i + step]) * per_char + 0.999)))
                for i in range(0, len(text), step)]
    step = max(1, int(budget * 0.9 / max(per_word, 1e-6)))
    for i in range(0, len(words), step):
        part = words[i:i + step]
        pieces.append((" ".join(part), max(1, int(len(part) * per_word + 0.999))))
    return pieces


def chunk_text(text: str, file_type: str, count_tokens: TokenCounter, chunk_tokens: int,
               overlap_tokens: int, source: str = "") -> list[Chunk]:
    """Chunks of already decoded text of the given type (HTML is converted first); code is cut at every
    definition and its chunks carry the contextual header of ``source`` (see the module docstring)."""
    if file_type in HTML:
        text, file_type = html_to_text(text), "md"
    if file_type in CODE_LANGUAGES:
        return chunk_segments(segment(text, file_type), count_tokens, chunk_tokens, overlap_tokens,
                              short_path(source), CODE)
    return chunk_segments(segment(text, file_type), count_tokens, chunk_tokens, overlap_tokens)


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
