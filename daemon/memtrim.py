"""Give freed heap memory back to the kernel: glibc's ``malloc_trim(0)``, called periodically by the server.

Why: the daemon allocates from many threads (embedding contexts, SQLite readers and writer, the vector index,
ingestion workers) and glibc gives each thread group its own malloc arena. Memory freed inside an arena stays
mapped for reuse by that arena, so under a mixed load the RSS ratchets up although the live heap does not
grow: on 2026-12-01 a 300 s `memory-leaks` run grew the RSS by 117 MB, of which one ``malloc_trim(0)`` (via gdb)
returned 74 MB at once (docs/DURABILITY.md, "Memory stays bounded"). Trimming walks the arenas and releases
whole free pages (``madvise``), costing a few milliseconds; it runs on a worker thread (ctypes releases the GIL),
never on the event loop. On a C library without ``malloc_trim`` (musl) this module does nothing. A leaf module.

``limit_arenas(n)`` caps the arenas themselves (glibc's ``mallopt(M_ARENA_MAX)``, what ``MALLOC_ARENA_MAX``
sets): glibc's default is 8 per core, and every arena keeps its own free memory and its own fragmentation, so
a daemon of ~20 threads holds more than it uses. It is called first thing in ``pirag serve`` and in the index
worker, before their threads exist (an arena made already stays); ``server.malloc_arena_max``, 0: glibc's own.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from functools import lru_cache
from typing import Any

log = logging.getLogger("pirag.memtrim")


@lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def _function(name: str, argtypes: list[Any], restype: Any) -> Any:
    """``name`` from the C library with its signature set, or None (not glibc: musl has no malloc_trim)."""
    function = getattr(_libc(), name, None)
    if function is not None:
        function.argtypes, function.restype = argtypes, restype
    return function


_malloc_trim = _function("malloc_trim", [ctypes.c_size_t], ctypes.c_int)
available = _malloc_trim is not None
M_ARENA_MAX = -8   # malloc.h


def limit_arenas(count: int) -> bool:
    """At most ``count`` malloc arenas from now on (0: leave glibc's default); True when glibc took it."""
    mallopt = _function("mallopt", [ctypes.c_int, ctypes.c_int], ctypes.c_int) if count > 0 else None
    return bool(mallopt(M_ARENA_MAX, count)) if mallopt is not None else False


@lru_cache(maxsize=1)
def _malloc_info_functions() -> tuple[Any, ...] | None:
    """open_memstream, malloc_info, fclose and free, looked up once (``status`` reads the arenas every call)."""
    functions = (_function("open_memstream", [ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_size_t)],
                           ctypes.c_void_p),
                 _function("malloc_info", [ctypes.c_int, ctypes.c_void_p], ctypes.c_int),
                 _function("fclose", [ctypes.c_void_p], ctypes.c_int),
                 _function("free", [ctypes.c_void_p], None))
    return None if None in functions else functions


def arena_count() -> int | None:
    """How many malloc arenas this process has (glibc's ``malloc_info``), None where it cannot be read."""
    functions = _malloc_info_functions()
    if functions is None:
        return None
    open_memstream, malloc_info, fclose, free = functions
    buffer, size = ctypes.c_char_p(), ctypes.c_size_t()
    stream = open_memstream(ctypes.byref(buffer), ctypes.byref(size))
    if not stream:
        return None
    try:
        failed = malloc_info(0, stream)
    finally:
        fclose(stream)   # writes the buffer's final address and size
    text = ctypes.string_at(buffer, size.value) if buffer.value is not None else b""
    free(ctypes.cast(buffer, ctypes.c_void_p))
    return None if failed else text.count(b"<heap nr=")


def trim() -> bool:
    """One ``malloc_trim(0)``; True when memory was released. Blocking: call it off the event loop."""
    if _malloc_trim is None:
        return False
    return bool(_malloc_trim(0))
