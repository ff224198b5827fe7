"""How many CPUs the embedding engine may use, and what the loaded llama.cpp build does with threads.

- ``available_cpus()``: the CPU affinity (systemd's ``CPUAffinity=`` counts; ``os.cpu_count()`` would not).
- ``lower_this_thread(nice)``: the calling thread's CPU priority lowered (the bulk contexts' threads).
- ``build_info()`` / ``uses_openmp()``: read from ``llama_print_system_info()`` at run time, so one engine is right
  for both builds: ggml with OpenMP (what ``pip install llama-cpp-python`` gives) and without
  (``-DGGML_OPENMP=OFF``: ggml then starts its own threads per graph).

Imports llama_cpp lazily (only when asked about the build).
"""

from __future__ import annotations

import logging
import os
import threading
from functools import lru_cache

from ..systemd import cpu_count


log = logging.getLogger(__name__)


def available_cpus() -> int:
    return cpu_count()


def lower_this_thread(nice: int) -> int:
    """Raise the calling thread's nice value by ``nice``; returns the thread's nice value after (0: unchanged).

    Linux keeps a nice value per thread (``setpriority`` on its thread id), and threads the thread starts later
    inherit it: ggml's compute threads for a multi-threaded bulk context included. Raising it needs no privilege.
    Where it is refused (another kernel, a seccomp filter) the thread keeps its priority and says so once."""
    if nice <= 0:
        return 0
    tid = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + nice))
        return os.getpriority(os.PRIO_PROCESS, tid)
    except (OSError, AttributeError) as exc:
        log.warning("cannot lower the priority of embedding thread %d: %s; it runs at the daemon's priority",
                    tid, exc)
        return 0


@lru_cache(maxsize=1)
def build_info() -> str:
    """llama.cpp's own one-line description of its CPU backend (features, OPENMP = 1, ...)."""
    import llama_cpp

    raw = llama_cpp.llama_print_system_info()
    return (raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)).strip(" |")


def uses_openmp() -> bool:
    """True when the loaded ggml was built with OpenMP (its thread pools are libgomp's)."""
    return "OPENMP = 1" in build_info()
