"""Logging: human lines and machine lines on stderr (journald under systemd).

- Per request, one pipe-delimited line: ``time | level | peer | op | id | duration ms | outcome``.
  Request lines are buffered and flushed from the event loop's tick (at most ~0.25 s later, or when 64 KiB
  are waiting), so logging costs a string format per request instead of a write system call.
- Periodic JSON metric lines: ``{"metric": "pirag", ...}``.
- Everything else goes through the ``logging`` module in the same pipe-delimited shape.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


_second_cache: list[object] = [None, ""]


def _timestamp(now: float | None = None) -> str:
    now = time.time() if now is None else now
    second = int(now)
    if _second_cache[0] != second:  # strftime once a second, not once a request
        _second_cache[0], _second_cache[1] = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(second))
    return f"{_second_cache[1]}.{int(now % 1 * 1000):03d}"


class _PipeFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record.created)} | {record.levelname} | {record.name} | {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(level: str = "info", stream: TextIO | None = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_PipeFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS.get(level, logging.INFO))
    # Chroma and httpx are chatty at INFO.
    for noisy in ("chromadb", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def set_level(level: str) -> None:
    logging.getLogger().setLevel(_LEVELS.get(level, logging.INFO))


class RequestLog:
    """Buffered per-request lines. ``flush()`` is called by the server's tick and at shutdown."""

    FLUSH_BYTES = 64 * 1024

    def __init__(self, stream: TextIO | None = None, enabled: bool = True):
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self._lines: list[str] = []
        self._size = 0

    def record(self, peer: str, op: str, request_id: int | None, duration_ms: float, outcome: str) -> None:
        if not self.enabled:
            return
        level = "INFO" if outcome == "ok" else "WARNING"
        line = f"{_timestamp()} | {level} | {peer} | {op} | {request_id} | {duration_ms:.2f} ms | {outcome}\n"
        self._lines.append(line)
        self._size += len(line)
        if self._size >= self.FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self._lines:
            return
        text = "".join(self._lines)
        self._lines.clear()
        self._size = 0
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # stderr gone (journald restarting): losing log lines must not stop the daemon


def metric_line(figures: dict[str, Any], stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    try:
        stream.write(json.dumps({"metric": "pirag", "time": _timestamp(), **figures}, default=str) + "\n")
        stream.flush()
    except (OSError, ValueError):
        pass
