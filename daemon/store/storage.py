"""Storage errors as values: a full or read-only state directory becomes ``storage_full`` / ``storage_error``.

SQLite says ``database or disk is full`` and Chroma ``(code: 13) database or disk is full``; left alone, either
reached the client as ``internal: remember failed: OperationalError: ...`` with no word of which directory or
how much space is left. This module owns the mapping, once, for every store:

- ``storage_error_for(exc, directory)``: the client error (``StorageFull`` or ``StorageError`` from
  ``pirag.client.errors``) for an exception caused by the disk, with the directory and its free bytes in the
  message and in ``details``; ``None`` for any other exception (a bug stays ``internal``).
- ``StorageCondition``: what ``status`` shows per store (``ok``, ``full`` or ``error``, since when, the last
  message, the free bytes); a later successful write clears it.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from pirag.client.errors import StorageError, StorageFull

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_DISK_ERRNOS = {errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM}
# sqlite3 result codes (primary code = the low byte of the extended one)
_SQLITE_FULL = 13
_SQLITE_DISK = {8, 10, 14}  # READONLY, IOERR, CANTOPEN


def free_bytes(directory: Path) -> int | None:
    try:
        stats = os.statvfs(directory)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


def classify(exc: BaseException) -> str | None:
    """``"full"``, ``"error"`` (read-only, I/O) or ``None`` when the disk is not the cause."""
    if isinstance(exc, StorageFull):
        return "full"
    if isinstance(exc, StorageError):
        return "error"
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        text = str(exc).lower()
        if primary == _SQLITE_FULL or "disk is full" in text:
            return "full"
        if primary in _SQLITE_DISK or "readonly database" in text or "disk i/o error" in text:
            return "error"
        return None
    if isinstance(exc, OSError):
        if exc.errno in _FULL_ERRNOS:
            return "full"
        if exc.errno in _DISK_ERRNOS:
            return "error"
    return None


def make_storage_error(kind: str, directory: Path, cause: str, what: str) -> StorageError:
    """The client error for ``kind`` (``"full"`` or ``"error"``) about ``directory``."""
    free = free_bytes(directory)
    shown = "unknown" if free is None else f"{free} bytes"
    details: dict[str, Any] = {"directory": str(directory), "free_bytes": free, "cause": cause}
    if kind == "full":
        return StorageFull(f"{what}: no space left in {directory} ({shown} free); free some space and retry "
                           f"({cause})", details=details)
    return StorageError(f"{what}: cannot write to {directory} ({shown} free): {cause}", details=details)


def storage_error_for(exc: BaseException, directory: Path, what: str) -> StorageError | None:
    if isinstance(exc, StorageError):
        return exc
    kind = classify(exc)
    if kind is None:
        return None
    return make_storage_error(kind, directory, f"{type(exc).__name__}: {exc}", what)


class StorageCondition:
    """The disk condition one store has seen last: set by a failed write, cleared by a good one."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.state = "ok"
        self.since: float | None = None
        self.message = ""
        self.failures = 0

    def failed(self, error: StorageError) -> None:
        state = "full" if isinstance(error, StorageFull) else "error"
        if self.state != state:
            self.since = time.time()
        self.state = state
        self.message = error.message
        self.failures += 1

    def succeeded(self) -> None:
        if self.state != "ok":
            self.state, self.since = "ok", None

    def stats(self) -> dict[str, Any]:
        return {"state": self.state, "since": self.since, "directory": str(self.directory),
                "free_bytes": free_bytes(self.directory), "last_error": self.message, "failures": self.failures}
