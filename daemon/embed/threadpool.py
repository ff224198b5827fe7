"""A persistent ggml thread pool for the latency lane's context.

pirag's llama.cpp is built without OpenMP (``packaging/llama-build-args``: ``GGML_OPENMP=OFF``). A context then
computes each graph with a *disposable* pool: ggml creates its worker threads when ``llama_encode`` starts and
joins them when it ends, for every query. On a virtual machine a new thread waits for a sleeping vCPU to be
scheduled again (milliseconds on this project's 2-vCPU hosts), so a lone query on a 2-thread lane cost far more
than the same query back to back (docs/PERFORMANCE_IMPROVEMENTS.md, section 14). With a pool of its own
(``llama_attach_threadpool``) the lane's worker threads live as long as the context: between two graphs they
poll for ``poll`` rounds (0 - 100, ggml's polling level), then sleep on a condition variable until the next.

The pool is made through ggml's C API with ctypes: ``ggml_threadpool_params_default`` in libggml-base,
``ggml_threadpool_new`` / ``ggml_threadpool_free`` in the loaded CPU variant (a ``GGML_BACKEND_DL`` build keeps
them there), ``llama_attach_threadpool`` in libllama. Where a symbol is missing the lane keeps ggml's default.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any

log = logging.getLogger("pirag.embed")

GGML_MAX_N_THREADS = 512   # ggml.h of the pinned llama.cpp: the size of the params' cpumask


class _Params(ctypes.Structure):
    # struct ggml_threadpool_params (ggml.h)
    _fields_ = [("cpumask", ctypes.c_bool * GGML_MAX_N_THREADS), ("n_threads", ctypes.c_int),
                ("prio", ctypes.c_int), ("poll", ctypes.c_uint32), ("strict_cpu", ctypes.c_bool),
                ("paused", ctypes.c_bool)]


class ThreadPool:
    """One ggml thread pool, attached to one context; freed after the context (``close``)."""

    def __init__(self, threads: int, poll: int):
        base, cpu, llama = _libraries()
        params = base.ggml_threadpool_params_default(threads)
        params.poll = max(0, min(100, poll))
        self.threads = threads
        self.poll = int(params.poll)
        self._cpu = cpu
        self._llama = llama
        self.handle = cpu.ggml_threadpool_new(ctypes.byref(params))
        if not self.handle:
            raise RuntimeError("ggml could not create a thread pool")

    def attach(self, context: Any) -> None:
        """Use this pool for ``context``'s encodes (a ``LlamaContext`` handle) for the context's life."""
        self._llama.llama_attach_threadpool(context, self.handle, self.handle)

    def close(self) -> None:
        if self.handle:
            self._cpu.ggml_threadpool_free(self.handle)
            self.handle = None


def _libraries() -> tuple[Any, Any, Any]:
    from .llama import library_dir, loaded_cpu_variant

    directory = library_dir()
    variant = loaded_cpu_variant()
    base = ctypes.CDLL(str(_first(directory, "libggml-base.so.0", "libggml-base.so")))
    cpu = ctypes.CDLL(str(directory / f"libggml-cpu-{variant}.so")) if variant else \
        ctypes.CDLL(str(_first(directory, "libggml-cpu.so", "libggml.so.0", "libggml.so")))
    llama = ctypes.CDLL(str(_first(directory, "libllama.so.0", "libllama.so")))
    base.ggml_threadpool_params_default.restype = _Params
    base.ggml_threadpool_params_default.argtypes = [ctypes.c_int]
    cpu.ggml_threadpool_new.restype = ctypes.c_void_p
    cpu.ggml_threadpool_new.argtypes = [ctypes.POINTER(_Params)]
    cpu.ggml_threadpool_free.restype = None
    cpu.ggml_threadpool_free.argtypes = [ctypes.c_void_p]
    llama.llama_attach_threadpool.restype = None
    llama.llama_attach_threadpool.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    return base, cpu, llama


def _first(directory: Any, *names: str) -> Any:
    for name in names:
        if (directory / name).exists():
            return directory / name
    return directory / names[-1]


def make(threads: int, poll: int) -> ThreadPool | None:
    """A pool of ``threads`` threads, or None (logged) where this llama.cpp build cannot make one."""
    try:
        return ThreadPool(threads, poll)
    except (OSError, AttributeError, RuntimeError) as exc:
        log.warning("latency lane: no persistent ggml thread pool (%s); ggml's per-encode threads are used", exc)
        return None
