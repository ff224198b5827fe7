"""Give freed heap memory back to the kernel: glibc's ``malloc_trim(0)``, called periodically by the server.

Why: the daemon allocates from many threads (embedding contexts, SQLite readers and writer, the vector index,
ingestion workers) and glibc gives each thread group its own malloc arena. Memory freed inside an arena stays
mapped for reuse by that arena, so under a mixed load the RSS ratchets up although the live heap does not
grow: on 2026-12-01 a 300 s `memory-leaks` run grew the RSS by 117 MB, of which one ``malloc_trim(0)`` (via gdb)
returned 74 MB at once (docs/DURABILITY.md, "Memory stays bounded"). Trimming walks the arenas and releases
whole free pages (``madvise``), costing a few milliseconds; it runs on a worker thread (ctypes releases the GIL),
never on the event loop. On a C library without ``malloc_trim`` (musl) this module does nothing. A leaf module.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger("pirag.memtrim")


def _load() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_malloc_trim = _load()
available = _malloc_trim is not None


def trim() -> bool:
    """One ``malloc_trim(0)``; True when memory was released. Blocking: call it off the event loop."""
    if _malloc_trim is None:
        return False
    return bool(_malloc_trim(0))
