"""How many CPUs the embedding engine may use, and what the loaded llama.cpp build does with threads.

- ``available_cpus()``: the CPU affinity (systemd's ``CPUAffinity=`` counts; ``os.cpu_count()`` would not).
- ``build_info()`` / ``uses_openmp()``: read from ``llama_print_system_info()`` at run time, so one engine is right
  for both builds: ggml with OpenMP (what ``pip install llama-cpp-python`` gives) and without
  (``-DGGML_OPENMP=OFF``: ggml then starts its own threads per graph).

Imports llama_cpp lazily (only when asked about the build).
"""

from __future__ import annotations

from functools import lru_cache

from ..systemd import cpu_count


def available_cpus() -> int:
    return cpu_count()


@lru_cache(maxsize=1)
def build_info() -> str:
    """llama.cpp's own one-line description of its CPU backend (features, OPENMP = 1, ...)."""
    import llama_cpp

    raw = llama_cpp.llama_print_system_info()
    return (raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)).strip(" |")


def uses_openmp() -> bool:
    """True when the loaded ggml was built with OpenMP (its thread pools are libgomp's)."""
    return "OPENMP = 1" in build_info()
