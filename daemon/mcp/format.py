"""Compact text for the model, within a character budget (the MCP bridge's formatting; no I/O here).

Every tool answer is a title line, then blocks (one per hit, fact, episode, job...), then at most one footer
line. ``fit_blocks`` keeps whole blocks while they fit, cuts the body of the first one that does not (when a
useful amount of it fits), and says what it left out, so the text never exceeds ``max_chars``. The structured
content is built from the same kept blocks, with the same cut, so it stays bounded too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

ELLIPSIS = "…"
MIN_CUT_BODY = 80          # a block cut shorter than this is dropped instead (a stub helps nobody)
FOOTER_RESERVE = 160       # room kept for the "[truncated ...]" footer


@dataclass
class Block:
    """One item of an answer: a one-line ``head``, an optional ``body``, and its structured form ``data``
    (``data[body_key]``, when present, is cut like the body)."""

    head: str
    body: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    body_key: str = ""


@dataclass
class Fitted:
    text: str
    items: list[dict[str, Any]]
    shown: int
    total: int
    truncated: bool


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, an ellipsis marking the cut."""
    if len(text) <= limit:
        return text
    if limit <= len(ELLIPSIS):
        return text[:max(limit, 0)]
    return text[:limit - len(ELLIPSIS)].rstrip() + ELLIPSIS


def one_line(text: str, limit: int = 240) -> str:
    """Whitespace collapsed, cut to ``limit``: for facts and episodes shown in a list."""
    return clip(" ".join(text.split()), limit)


def _render(block: Block) -> str:
    return f"{block.head}\n{block.body}" if block.body else block.head


def fit_blocks(title: str, blocks: list[Block], max_chars: int, *, more_hint: str = "",
               total: int | None = None, footer: str = "") -> Fitted:
    """Title, then as many blocks as fit in ``max_chars`` (separated by blank lines when they have bodies).

    ``total`` is the number of items that exist when more were found than were passed (defaults to the
    blocks given); ``footer`` is an extra last line (a cursor, a hint) kept when there is room."""
    total = len(blocks) if total is None else total
    separator = "\n\n" if any(block.body for block in blocks) else "\n"
    budget = max_chars - FOOTER_RESERVE
    parts = [clip(title, max(budget, 0))]
    used = len(parts[0])
    items: list[dict[str, Any]] = []
    cut = False
    for block in blocks:
        rendered = _render(block)
        if used + len(separator) + len(rendered) <= budget:
            parts.append(rendered)
            used += len(separator) + len(rendered)
            items.append(block.data)
            continue
        room = budget - used - len(separator) - len(block.head) - 1
        if block.body and room >= MIN_CUT_BODY:
            body = clip(block.body, room)
            parts.append(f"{block.head}\n{body}")
            data = dict(block.data)
            if block.body_key and block.body_key in data:
                data[block.body_key] = clip(str(data[block.body_key]), room)
                data["cut"] = True
            items.append(data)
        cut = True
        break
    shown = len(items)
    truncated = cut or shown < total
    tail = []
    if truncated:
        note = f"[truncated to max_chars={max_chars}: {shown} of {total} shown"
        tail.append(note + (f"; {more_hint}]" if more_hint else "]"))
    if footer:
        tail.append(footer)
    text = separator.join(parts)
    for line in tail:
        if len(text) + 1 + len(line) <= max_chars:
            text += "\n" + line
    return Fitted(text=clip(text, max_chars), items=items, shown=shown, total=total, truncated=truncated)


def stamp(timestamp: float | None) -> str:
    """A Unix time as local ``YYYY-MM-DD HH:MM``; ``-`` for none."""
    if timestamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def size(n_bytes: int) -> str:
    value = float(n_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def lines_of(hit_source: str, line_start: int, line_end: int) -> str:
    if line_start <= 0:
        return hit_source
    return f"{hit_source}:{line_start}-{line_end}" if line_end > line_start else f"{hit_source}:{line_start}"
