"""The data of ``pirag-stress quality``: each task's records to load and its questions with their answers.

- **LoCoMo** (Maharana et al., "Evaluating Very Long-Term Conversational Memory of LLM Agents", ACL 2024;
  snap-research/locomo, CC BY-NC 4.0): every turn becomes one record, ``"Speaker: text"``, stamped with its
  session's date; a question's answers are its evidence turns (``D3:12``).
- **Code search** (CodeSearchNet-style): modules of this machine's standard library with every docstring
  blanked out (the lines stay, so line numbers hold); a question is the first sentence of a removed docstring,
  its answer the file that defined it.
- **Identifiers**: made-up identifiers planted in real files (snake_case, camelCase, kebab-case, dotted), asked
  for whole as a programmer types them and by their parts.
- **Edited phrase**: a comment appended to one file, re-ingested, then asked for.

No network, no download: everything is built from the data file given and the interpreter's own library.
"""

from __future__ import annotations

import ast
import json
import re
import sysconfig
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path


@dataclass
class Question:
    text: str
    answers: set[str]           # dia ids (LoCoMo) or source names (documents)
    category: str = ""


@dataclass
class Conversation:
    id: str
    turns: list[tuple[str, str, str, float, int]] = field(default_factory=list)  # dia id, speaker, text, ts, n
    questions: list[Question] = field(default_factory=list)


# -- LoCoMo -----------------------------------------------------------------------------------------------

def locomo_time(date: str) -> float:
    """``"1:56 pm on 8 May, 2023"`` -> Unix seconds (UTC); unparseable: 0."""
    for form in ("%I:%M %p on %d %B, %Y", "%I:%M %p on %d %b, %Y"):
        try:
            return datetime.strptime(date.strip(), form).replace(tzinfo=timezone.utc).timestamp()
        except ValueError:
            continue
    return 0.0


def load_locomo(path: Path) -> list[Conversation]:
    data = json.loads(path.read_text())
    conversations: list[Conversation] = []
    for raw in data["conversations"]:
        conversation = Conversation(id=str(raw["id"]))
        for session in raw["sessions"]:
            stamp = locomo_time(session["date"])
            for index, (dia_id, speaker, text) in enumerate(session["turns"]):
                # a turn a second apart keeps the session's order on the timeline
                conversation.turns.append((dia_id, speaker, text, stamp + index, int(session["n"])))
        for question, evidence, category in raw["qa"]:
            if evidence:
                conversation.questions.append(Question(question, set(evidence), str(category)))
        conversations.append(conversation)
    return conversations


def record_id(prefix: str, conversation: str, dia_id: str) -> str:
    return f"{prefix}_q{conversation}_{dia_id.replace(':', '_')}"


# -- standard library corpora -----------------------------------------------------------------------------

CODE_PACKAGES = ("email", "asyncio", "http", "logging")
EXACT_PACKAGES = ("json", "concurrent", "urllib")


def package_files(packages: tuple[str, ...]) -> dict[str, str]:
    """``{"email/utils.py": source}`` for the packages' modules (tests and caches left out)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files: dict[str, str] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            if any(part in {"test", "tests", "__pycache__"} for part in path.parts):
                continue
            try:
                files[str(path.relative_to(root))] = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
    return files


_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


def first_sentence(docstring: str) -> str:
    paragraph = docstring.strip().split("\n\n")[0]
    text = " ".join(paragraph.split())
    return _SENTENCE_END.split(text, maxsplit=1)[0].strip()


def strip_docstrings(source: str) -> tuple[str, list[str]]:
    """The source with every docstring's lines blanked (line numbers kept), and the docstrings' first
    sentences."""
    tree = ast.parse(source)
    spans: list[tuple[int, int]] = []
    sentences: list[str] = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            expr = body[0]
            spans.append((expr.lineno, expr.end_lineno or expr.lineno))
            sentences.append(first_sentence(expr.value.value))  # type: ignore[union-attr]
    lines = source.splitlines()
    for start, end in spans:
        indent = re.match(r"\s*", lines[start - 1]).group(0)  # type: ignore[union-attr]
        lines[start - 1] = indent + "pass"      # keeps the body valid when the docstring was all of it
        for number in range(start, end):
            lines[number] = ""
    return "\n".join(lines) + "\n", sentences


def code_search_task(limit: int) -> tuple[dict[str, str], list[Question]]:
    """Blanked sources and up to ``limit`` questions (spread evenly over all candidates, deterministic)."""
    blanked: dict[str, str] = {}
    candidates: list[Question] = []
    seen: dict[str, int] = {}
    for name, source in package_files(CODE_PACKAGES).items():
        try:
            text, sentences = strip_docstrings(source)
        except SyntaxError:
            continue
        blanked[name] = text
        for sentence in sentences:
            words = sentence.split()
            if len(words) < 4 or len(sentence) > 300:
                continue
            key = sentence.casefold()
            seen[key] = seen.get(key, 0) + 1
            candidates.append(Question(sentence, {name}))
    # a sentence written in several files ("Return a string representation.") has no single answer
    candidates = [q for q in candidates if seen[q.text.casefold()] == 1]
    if len(candidates) > limit:
        step = len(candidates) / limit
        candidates = [candidates[int(i * step)] for i in range(limit)]
    return blanked, candidates


# -- identifiers and an edited phrase ---------------------------------------------------------------------

# (planted line, questions): made-up words so that nothing else in the corpus holds them; each form as
# programmers write it, asked for whole and by a part.
IDENTIFIERS: list[tuple[str, list[str]]] = [
    ("zq12345_read_checksum = None", ["zq12345_read_checksum", "zq12345 read checksum"]),
    ("vorpalReadChecksum = None", ["vorpalReadChecksum", "vorpal read checksum"]),
    ("MARMOT_GLYPH_LIMIT = 17", ["MARMOT_GLYPH_LIMIT", "marmot glyph"]),
    ("self.quibbleFrameCount = 0", ["quibbleFrameCount", "quibble frame count"]),
    ("# see zorbix-retry-budget in the runbook", ["zorbix-retry-budget", "zorbix retry"]),
    ("import plinth.codec.zephyrine_decode", ["plinth.codec.zephyrine_decode", "zephyrine_decode"]),
    ("_frobnitz_cache_key = ()", ["_frobnitz_cache_key", "frobnitz cache key"]),
    ("XyloHttpAdapter = object", ["XyloHttpAdapter", "xylo http adapter"]),
    ("qwelt2_flush_interval = 3", ["qwelt2_flush_interval", "qwelt2 flush"]),
    ("mimsyTokenBucket = None", ["mimsyTokenBucket", "mimsy token bucket"]),
]

PHRASE = "# zanzibar quokka marmalade protocol negotiation"
PHRASE_QUESTION = "zanzibar quokka marmalade protocol"
PHRASE_FILE = "json/tool.py"


def plant(source: str, line: str) -> str:
    """``line`` as the first statement of the source's first function (or at the end of the module)."""
    tree = ast.parse(source)
    lines = source.splitlines()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            indent = " " * first.col_offset
            lines.insert(first.lineno - 1, indent + line)
            return "\n".join(lines) + "\n"
    return source.rstrip("\n") + "\n" + line + "\n"


def exact_task() -> tuple[dict[str, str], list[Question]]:
    """The exact-term corpus (identifiers planted in distinct files) and the identifier questions."""
    files = package_files(EXACT_PACKAGES)
    hosts = [name for name in files if name != PHRASE_FILE and "def " in files[name]]
    questions: list[Question] = []
    for index, (line, asked) in enumerate(IDENTIFIERS):
        host = hosts[(index * 7) % len(hosts)]
        files[host] = plant(files[host], line)
        questions += [Question(text, {host}, "whole" if n == 0 else "part") for n, text in enumerate(asked)]
    return files, questions


def edited(files: dict[str, str]) -> dict[str, str]:
    return {PHRASE_FILE: files[PHRASE_FILE].rstrip("\n") + "\n" + PHRASE + "\n"}

