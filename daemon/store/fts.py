"""Identifier-aware keyword text for FTS5: what is indexed beside a row's text, and how a query word is matched.

FTS5's ``unicode61`` tokenizer splits at every non-alphanumeric character, so ``zq12345_read_checksum``,
``read-checksum`` and ``plinth.codec.decode`` are indexed as their parts, and a query word holding the same
separators becomes a phrase of the same parts (found whole, in order). What it cannot see is a case change:
``readChecksum`` is the one token ``readchecksum``. So:

- **Indexing**: ``idents(text)`` lists the parts of every camelCase / PascalCase word of the text
  (``readChecksum`` -> ``read checksum``, ``HTTPServerError`` -> ``http server error``), once per distinct word;
  the stores keep it in an ``idents`` column that the FTS5 tables index beside the text. The text column is
  unchanged, so the whole word is still a token of its own.
- **Querying**: ``match_word(word)`` is the FTS5 expression of one query word: the word itself as a phrase
  (``"readChecksum"``), or also its camel parts as a phrase (``"read checksum"``), which finds ``read_checksum``,
  ``read-checksum``, ``read.checksum`` and ``readChecksum`` alike.

So every spelling a programmer types finds every spelling in the text, in part (one of the words) and in whole
(the phrase). This module is the one place both sides are defined.

A document chunk's keyword text also carries its file's ``short_path`` (the ``context`` column), the same name
the contextual header of code chunks embeds (``services/chunking.py``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

# A query word: letters/digits joined by the separators identifiers use, so that "a.b_c-d" stays one phrase.
QUERY_WORD = re.compile(r"\w+(?:[.\-/:]\w+)*", re.UNICODE)
_CANDIDATE = re.compile(r"[A-Za-z][A-Za-z0-9]*[A-Z][A-Za-z0-9]*")   # has an upper-case letter after the first
_PARTS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z0-9]+|[A-Z0-9]+")
_MAX_IDENTS_CHARS = 20_000


def camel_parts(word: str) -> list[str]:
    """``readChecksum`` -> ``["read", "checksum"]``; a word without an inner case change -> ``[]``."""
    parts = _PARTS.findall(word)
    return [part.lower() for part in parts] if len(parts) > 1 else []


def idents(text: str) -> str:
    """The camel parts of the text's identifiers, one group per distinct identifier (the FTS ``idents`` column)."""
    groups: dict[str, None] = {}
    for word in _CANDIDATE.findall(text):
        parts = camel_parts(word)
        if parts:
            groups.setdefault(" ".join(parts), None)
    joined = " ; ".join(groups)
    return joined[:_MAX_IDENTS_CHARS]


def _quoted(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def match_word(word: str) -> str:
    """The FTS5 expression of one query word (see the module docstring)."""
    whole = _quoted(word)
    pieces = [part for piece in re.split(r"[\W_]+", word) if piece for part in (camel_parts(piece) or [piece])]
    if len(pieces) > 1 and any(camel_parts(piece) for piece in re.split(r"[\W_]+", word) if piece):
        return f"({whole} OR {_quoted(' '.join(pieces))})"
    return whole


def query_words(text: str) -> list[str]:
    """The query's words as a programmer types them (identifiers kept whole), each once, in order."""
    return list(dict.fromkeys(QUERY_WORD.findall(text)))


# -- schema -----------------------------------------------------------------------------------------------

PATH_PARTS = 3   # a file is named by its last parts: "email/mime/text.py", not where the checkout lives


def short_path(source: str) -> str:
    """A source as its chunks' keyword ``context`` and code's contextual header name it: its last
    ``PATH_PARTS`` path parts (an absolute path's leading directories say where the checkout lives, not what
    the file is)."""
    return "/".join([part for part in source.replace("\\", "/").split("/") if part][-PATH_PARTS:])


def add_idents_column(conn: Any, *, table: str, rowid: str, text: str, fts: str, columns: Sequence[str],
                      weights: Sequence[float], update_of: Sequence[str] = ()) -> None:
    """A migration step (inside the migration's transaction): give ``table`` an ``idents`` column filled from
    its ``text`` column, and re-create the external-content FTS5 table ``fts`` over ``columns`` + ``idents``
    (``recreate_fts``; ``weights`` one per column, idents last)."""
    conn.execute(f"ALTER TABLE {table} ADD COLUMN idents TEXT NOT NULL DEFAULT ''")
    filled = [(parts, key) for key, body in conn.execute(f"SELECT {rowid}, {text} FROM {table}")
              if (parts := idents(body))]
    conn.executemany(f"UPDATE {table} SET idents = ? WHERE {rowid} = ?", filled)
    recreate_fts(conn, table=table, rowid=rowid, fts=fts, columns=[*columns, "idents"], weights=weights,
                 update_of=[*update_of, "idents"] if update_of else ())


def recreate_fts(conn: Any, *, table: str, rowid: str, fts: str, columns: Sequence[str],
                 weights: Sequence[float], update_of: Sequence[str] = ()) -> None:
    """A migration step: (re-)create the external-content FTS5 table ``fts`` over ``table``'s ``columns``
    with its triggers, rebuilt from the rows. ``weights`` (one per column) become the table's ``rank`` (BM25
    with those column weights), so every query of it ranks the same way."""
    for suffix in ("insert", "delete", "update"):
        conn.execute(f"DROP TRIGGER IF EXISTS {fts}_{suffix}")
    conn.execute(f"DROP TABLE IF EXISTS {fts}")
    names = list(columns)
    listed = ", ".join(names)
    new = ", ".join(f"new.{name}" for name in names)
    old = ", ".join(f"old.{name}" for name in names)
    conn.execute(f"CREATE VIRTUAL TABLE {fts} USING fts5 ({listed}, content='{table}', content_rowid='{rowid}',"
                 f" tokenize='porter unicode61 remove_diacritics 2')")
    insert = f"INSERT INTO {fts} (rowid, {listed}) VALUES (new.{rowid}, {new});"
    delete = f"INSERT INTO {fts} ({fts}, rowid, {listed}) VALUES ('delete', old.{rowid}, {old});"
    conn.execute(f"CREATE TRIGGER {fts}_insert AFTER INSERT ON {table} BEGIN {insert} END")
    conn.execute(f"CREATE TRIGGER {fts}_delete AFTER DELETE ON {table} BEGIN {delete} END")
    if update_of:
        conn.execute(f"CREATE TRIGGER {fts}_update AFTER UPDATE OF {', '.join(update_of)} ON {table}"
                     f" BEGIN {delete} {insert} END")
    conn.execute(f"INSERT INTO {fts} ({fts}) VALUES ('rebuild')")
    conn.execute(f"INSERT INTO {fts} ({fts}, rank) VALUES ('rank', 'bm25({', '.join(map(str, weights))})')")


# -- matching -----------------------------------------------------------------------------------------------

def match_any(words: Sequence[str]) -> str:
    """Any of the words (each as ``match_word`` makes it)."""
    return " OR ".join(match_word(word) for word in words)


class PhraseMatcher:
    """``search(text)`` is truthy when ``text`` holds the query word for word (see ``phrase_pattern``).

    The regex starts with a look-behind, which Python's engine tries at every position of every candidate (4 ms
    for 80 chunks of 1.5 KB, most of a cached search's time); a text lacking one of the words cannot hold the
    phrase, and ``in`` over the lower-cased text rules that out in C first (0.3 ms for the same 80)."""

    __slots__ = ("pattern", "words")

    def __init__(self, tokens: Sequence[str]):
        self.pattern = re.compile(r"(?<![^\W_])" + r"[\W_]*".join(map(re.escape, tokens)) + r"(?![^\W_])",
                                  re.IGNORECASE)
        self.words = sorted({token.lower() for token in tokens}, key=len, reverse=True)   # longest first: likeliest absent

    def search(self, text: str) -> re.Match[str] | None:
        lowered = text.lower()
        if not all(word in lowered for word in self.words):
            return None
        return self.pattern.search(text)


def phrase_pattern(query: str) -> PhraseMatcher | None:
    """A text holding the query word for word (its tokens in order, any case, joined by any separators or none:
    "xylo http adapter" holds in ``XyloHttpAdapter``), when the query has at least two tokens. Checked on the
    candidates' own text: no FTS5 query (restricting one to a few rowids re-reads every term's doclist once per
    rowid: tens of milliseconds)."""
    tokens = [token for token in re.split(r"[\W_]+", query) if token]
    if len(tokens) < 2:
        return None
    return PhraseMatcher(tokens)
