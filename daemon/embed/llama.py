"""A thin layer over llama.cpp's C API (through llama-cpp-python's ctypes bindings) for sentence embeddings.

pirag does not use ``llama_cpp.Llama``: that class loads its own model per instance and tokenizes with llama.cpp's
tokenizer. Here one ``LlamaModel`` (mmap) is shared by several ``LlamaContext`` objects, and token ids computed by
``tokenizer.BertTokenizer`` are packed into one batch, several sequences per batch, pooled by llama.cpp (mean or
CLS, as the GGUF file says).

Two facts from FINDINGS.md shape the parameters:
- BERT needs each sequence whole in one ubatch, so n_ctx = n_batch = n_ubatch = the batch token budget, and that
  budget is at least the model's max tokens.
- Q8_0/Q4_K_M BERT models segfault in ggml's AMX kernels on Intel AMX CPUs: ``use_extra_bufts`` is turned off
  there, and only there (on ARM the extra buffer types are the fast repacked Q4_0 path).

A portable build (``packaging/llama-build-args``: GGML_BACKEND_DL + GGML_CPU_ALL_VARIANTS) has its CPU code in
variant libraries chosen at run time; ``_load_cpu_backend`` loads them before the first model.

ctypes releases the GIL during these calls, so a context on its own thread runs beside the event loop. A context
is not thread-safe: the engine gives each one its own thread.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

log = logging.getLogger("pirag.embed.llama")
_backend_lock = threading.Lock()
_backend_ready = False
_log_callback = None  # kept referenced: llama.cpp calls it from C


AMX_ENV = "PIRAG_CPU_AMX"


def amx_override() -> bool | None:
    """``$PIRAG_CPU_AMX``: ``1`` forces the AMX decision on, ``0`` off (tests, or a CPU that hides its flags);
    unset or empty: None (read /proc/cpuinfo). Any other value is an error, not a silent guess."""
    value = os.environ.get(AMX_ENV, "").strip().lower()
    if value == "":
        return None
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"${AMX_ENV} must be 1 or 0, not {value!r}")


def cpu_has_amx() -> bool:
    """True on x86 CPUs that advertise Intel AMX (``amx_tile``/``amx_int8``/``amx_bf16`` in /proc/cpuinfo),
    unless ``$PIRAG_CPU_AMX`` forces the answer."""
    forced = amx_override()
    return _cpuinfo_has_amx() if forced is None else forced


@lru_cache(maxsize=1)
def _cpuinfo_has_amx() -> bool:
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "i386"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return any(flag.startswith("amx") for flag in line.split(":", 1)[1].split())
    except OSError:
        return False
    return False


VARIANT_ENV = "PIRAG_GGML_CPU_VARIANT"


def library_dir() -> Path:
    """Where llama-cpp-python's shared libraries are (``$LLAMA_CPP_LIB_PATH`` when set, as llama_cpp reads it)."""
    import llama_cpp.llama_cpp as bindings

    return Path(bindings._base_path)


def cpu_variants() -> list[str]:
    """The run-time CPU variants of a portable build (``libggml-cpu-<variant>.so``); empty for a one-CPU build."""
    prefix, suffix = "libggml-cpu-", ".so"
    return sorted(path.name[len(prefix):-len(suffix)] for path in library_dir().glob(f"{prefix}*{suffix}"))


def loaded_cpu_variant() -> str | None:
    """The CPU variant library this process has loaded (from /proc/self/maps), None for a one-CPU build."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        name = line.rsplit("/", 1)[-1]
        if name.startswith("libggml-cpu-") and name.endswith(".so"):
            return name[len("libggml-cpu-"):-len(".so")]
    return None


def _load_cpu_backend() -> None:
    """A portable build (GGML_BACKEND_DL) keeps its CPU code in variant libraries that ggml loads only when asked,
    and it looks beside the executable (python), not in llama_cpp/lib: load them from there, the best one for
    this CPU, or the one ``$PIRAG_GGML_CPU_VARIANT`` names (to test an older CPU's code path on a newer one)."""
    variants = cpu_variants()
    if not variants:
        return
    # The file libllama itself links (its soname, libggml.so.0): a wheel holds copies, not symlinks, and
    # a second copy would be a second ggml whose backend registry libllama never sees.
    soname = library_dir() / "libggml.so.0"
    libggml = ctypes.CDLL(str(soname if soname.exists() else library_dir() / "libggml.so"))
    forced = os.environ.get(VARIANT_ENV, "").strip()
    if forced:
        if forced not in variants:
            raise LlamaError(f"${VARIANT_ENV}={forced!r}: no such CPU variant (have: {', '.join(variants)})")
        libggml.ggml_backend_load.argtypes = [ctypes.c_char_p]
        libggml.ggml_backend_load.restype = ctypes.c_void_p
        if not libggml.ggml_backend_load(str(library_dir() / f"libggml-cpu-{forced}.so").encode()):
            raise LlamaError(f"ggml could not load the CPU variant {forced}")
    else:
        libggml.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
        libggml.ggml_backend_load_all_from_path.restype = None
        libggml.ggml_backend_load_all_from_path(str(library_dir()).encode())
    if loaded_cpu_variant() is None:
        raise LlamaError(f"no CPU variant of {library_dir()} loads on this CPU")


def system_info() -> str:
    """llama.cpp's ``llama_print_system_info()``: the CPU features the loaded CPU code uses."""
    _init_backend()
    import llama_cpp

    return llama_cpp.llama_print_system_info().decode("utf-8", "replace").strip()


def _init_backend() -> None:
    global _backend_ready, _log_callback
    with _backend_lock:
        if _backend_ready:
            return
        import llama_cpp

        _load_cpu_backend()

        @llama_cpp.llama_log_callback
        def route(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            # ggml levels: 1 debug, 2 info, 3 warn, 4 error, 5 continuation. Only errors matter in pirag's log.
            if level == 4:
                log.warning("llama.cpp: %s", text.decode("utf-8", "replace").rstrip())

        _log_callback = route
        llama_cpp.llama_log_set(route, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
        _backend_ready = True


def quiet_llama_logs() -> None:
    """Route llama.cpp's own logging through pirag's (errors only); safe to call many times."""
    _init_backend()


class LlamaError(RuntimeError):
    pass


class LlamaModel:
    """One GGUF model, loaded once (mmap) and shared by every context."""

    def __init__(self, path: str | Path, *, use_extra_bufts: bool | None = None):
        import llama_cpp

        _init_backend()
        self.path = str(path)
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = 0
        if use_extra_bufts is None:
            use_extra_bufts = not cpu_has_amx()
        params.use_extra_bufts = use_extra_bufts
        self.use_extra_bufts = use_extra_bufts
        self._llama = llama_cpp
        self.handle = llama_cpp.llama_model_load_from_file(self.path.encode(), params)
        if not self.handle:
            raise LlamaError(f"llama.cpp could not load {self.path}")
        self.dims = int(llama_cpp.llama_model_n_embd(self.handle))

    def meta(self, key: str) -> str | None:
        """A GGUF metadata value as text (llama.cpp's view of it), None when the key is absent."""
        size = 256
        while True:
            buffer = ctypes.create_string_buffer(size)
            length = self._llama.llama_model_meta_val_str(self.handle, key.encode(), buffer, size)
            if length < 0:
                return None
            if length < size:
                return buffer.value.decode("utf-8", "replace")
            size = length + 1

    def tokens(self) -> list[str]:
        """The vocabulary as stored in the GGUF file (phantom-space form), in id order."""
        vocab = self._llama.llama_model_get_vocab(self.handle)
        count = int(self._llama.llama_vocab_n_tokens(vocab))
        return [self._llama.llama_vocab_get_text(vocab, i).decode("utf-8", "replace") for i in range(count)]

    def close(self) -> None:
        if self.handle:
            self._llama.llama_model_free(self.handle)
            self.handle = None


class LlamaContext:
    """One llama.cpp context for pooled embeddings; not thread-safe (one thread owns it)."""

    def __init__(self, model: LlamaModel, *, batch_tokens: int, max_sequences: int, threads: int,
                 flash_attn: bool):
        import llama_cpp

        self._llama = llama_cpp
        self.model = model
        self.batch_tokens = batch_tokens
        self.max_sequences = max(1, min(max_sequences, int(llama_cpp.llama_max_parallel_sequences())))
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = params.n_batch = params.n_ubatch = batch_tokens
        params.n_seq_max = self.max_sequences
        params.n_threads = params.n_threads_batch = threads
        self.threads = threads
        params.embeddings = True
        params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED     # the GGUF's own (mean / CLS)
        params.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn
                                  else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        params.no_perf = True
        params.kv_unified = True        # no KV cache for BERT; avoids splitting n_ctx per sequence
        self.handle = llama_cpp.llama_init_from_model(model.handle, params)
        if not self.handle:
            raise LlamaError("llama.cpp could not create a context")
        self._batch = llama_cpp.llama_batch_init(batch_tokens, 0, self.max_sequences)
        self._tokens = np.ctypeslib.as_array(self._batch.token, shape=(batch_tokens,))
        self._positions = np.ctypeslib.as_array(self._batch.pos, shape=(batch_tokens,))
        self._n_seq = np.ctypeslib.as_array(self._batch.n_seq_id, shape=(batch_tokens,))
        self._outputs = np.ctypeslib.as_array(self._batch.logits, shape=(batch_tokens,))
        self._seq_ptrs = [self._batch.seq_id[i] for i in range(batch_tokens)]
        self._memory = llama_cpp.llama_get_memory(self.handle)
        self.pool: Any = None

    def use_pool(self, pool: Any) -> None:
        """Compute with ``pool`` (a ``threadpool.ThreadPool``) instead of ggml's per-encode threads; it is freed
        with this context."""
        pool.attach(self.handle)
        self.pool = pool

    def set_threads(self, threads: int) -> None:
        """Threads of the following encodes (the context's buffers do not depend on it)."""
        self._llama.llama_set_n_threads(self.handle, threads, threads)
        self.threads = threads

    def embed(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """Pooled (not normalized) embeddings of token-id sequences that fit one batch together."""
        total = sum(len(ids) for ids in sequences)
        if total > self.batch_tokens or len(sequences) > self.max_sequences:
            raise LlamaError(f"batch of {len(sequences)} sequences / {total} tokens exceeds the context "
                             f"({self.max_sequences} / {self.batch_tokens})")
        offset = 0
        for seq_id, ids in enumerate(sequences):
            length = len(ids)
            self._tokens[offset:offset + length] = ids
            self._positions[offset:offset + length] = np.arange(length, dtype=np.int32)
            for index in range(offset, offset + length):
                self._seq_ptrs[index][0] = seq_id
            offset += length
        self._n_seq[:total] = 1
        self._outputs[:total] = 1
        self._batch.n_tokens = total
        if self._memory:
            self._llama.llama_memory_clear(self._memory, True)
        code = self._llama.llama_encode(self.handle, self._batch)
        if code != 0:
            raise LlamaError(f"llama_encode failed with code {code}")
        dims = self.model.dims
        out = np.empty((len(sequences), dims), dtype=np.float32)
        for seq_id in range(len(sequences)):
            pointer = self._llama.llama_get_embeddings_seq(self.handle, seq_id)
            if not pointer:
                raise LlamaError(f"llama.cpp returned no embedding for sequence {seq_id}")
            out[seq_id] = np.ctypeslib.as_array(pointer, shape=(dims,))
        return out

    def close(self) -> None:
        if self.handle:
            self._llama.llama_batch_free(self._batch)
            self._llama.llama_free(self.handle)
            self.handle = None
        if self.pool is not None:   # after the context: it no longer computes with it
            self.pool.close()
            self.pool = None
