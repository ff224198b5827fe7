"""How ``pirag-stress`` loads llama.cpp peers: with the model parameters the daemon itself uses.

The daemon decides ``use_extra_bufts`` (llama.cpp's extra buffer types: off where Intel AMX is flagged, or where
``$PIRAG_CPU_AMX=1`` forces it, because Q8_0/Q4_K_M BERT models die there with SIGILL/SIGSEGV, FINDINGS.md; on
elsewhere, ARM's repacked weights included) and reports the value in ``status`` as
``components.embed.extra_buffer_types``. A peer loaded with llama-cpp-python's defaults would crash on an AMX host,
and a peer with another weight layout would not be a fair comparison, so every llama.cpp peer gets the daemon's
value through this module (``stress`` never imports daemon code: the value comes over the socket).

llama-cpp-python's ``Llama`` has no argument for ``use_extra_bufts``: it fills ``llama_model_default_params()``
and sets the fields it knows. ``apply_model_params`` wraps that function, so every model load in this process
(in-process ``Llama``, ``llama_cpp.server``) gets the value.

    python -m pirag.stress.llama_peer --use-extra-bufts 0|1 -- ARGS...

is the launcher of the ``llama_cpp.server`` peer: it applies the parameters, then runs
``python -m llama_cpp.server ARGS...`` in the same process.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from typing import Any

PARAMS_KEY = "extra_buffer_types"       # the daemon's status key (components.embed)


def daemon_model_params(embed_status: dict[str, Any]) -> dict[str, Any]:
    """The model parameters peers must share with the daemon, from its ``status`` (components.embed)."""
    value = embed_status.get(PARAMS_KEY)
    if not isinstance(value, bool):
        raise RuntimeError(f"the daemon's status has no {PARAMS_KEY} (model not loaded yet?): cannot give the "
                           "llama.cpp peers the daemon's parameters")
    return {"use_extra_bufts": value}


def load_cpu_backend() -> None:
    """A portable llama.cpp build (run-time CPU variants, packaging/llama-build-args) loads its CPU code only when
    asked, and looks beside python, not in llama_cpp/lib. The daemon does the same in daemon/embed/llama.py;
    this copy exists because stress never imports daemon code. ``$PIRAG_GGML_CPU_VARIANT`` is honoured alike."""
    import ctypes
    import os
    from pathlib import Path

    import llama_cpp.llama_cpp as bindings

    lib_dir = Path(bindings._base_path)
    if not any(lib_dir.glob("libggml-cpu-*.so")):
        return                                  # a one-CPU build: its CPU code is linked in
    # The file libllama itself links (its soname, libggml.so.0): a wheel holds copies, not symlinks, and
    # a second copy would be a second ggml whose backend registry libllama never sees.
    soname = lib_dir / "libggml.so.0"
    libggml = ctypes.CDLL(str(soname if soname.exists() else lib_dir / "libggml.so"))
    forced = os.environ.get("PIRAG_GGML_CPU_VARIANT", "").strip()
    if forced:
        libggml.ggml_backend_load.argtypes, libggml.ggml_backend_load.restype = [ctypes.c_char_p], ctypes.c_void_p
        libggml.ggml_backend_load(str(lib_dir / f"libggml-cpu-{forced}.so").encode())
    else:
        libggml.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
        libggml.ggml_backend_load_all_from_path(str(lib_dir).encode())


def apply_model_params(use_extra_bufts: bool) -> None:
    """Make every later llama.cpp model load in this process use ``use_extra_bufts`` (and find its CPU code)."""
    import llama_cpp.llama_cpp as bindings

    load_cpu_backend()

    # The bindings' own functions carry a __wrapped__ (their Python stub): mark ours under another name.
    original = getattr(bindings.llama_model_default_params, "_pirag_original", bindings.llama_model_default_params)

    def model_default_params() -> Any:
        params = original()
        params.use_extra_bufts = use_extra_bufts
        return params

    model_default_params._pirag_original = original  # type: ignore[attr-defined]
    bindings.llama_model_default_params = model_default_params
    import llama_cpp

    llama_cpp.llama_model_default_params = model_default_params


def naive_llama(model_path: str, threads: int, use_extra_bufts: bool) -> Any:
    """The naive peer: ``Llama(embedding=True)`` with its defaults except the thread counts and the daemon's
    model parameters."""
    apply_model_params(use_extra_bufts)
    from llama_cpp import Llama

    llm = Llama(model_path=model_path, embedding=True, n_threads=threads, n_threads_batch=threads, verbose=False)
    if bool(llm.model_params.use_extra_bufts) != use_extra_bufts:
        raise RuntimeError("llama-cpp-python ignored use_extra_bufts: the peer would not match the daemon")
    return llm


def server_argv(python: str, use_extra_bufts: bool, server_args: list[str]) -> list[str]:
    """The command line of the ``llama_cpp.server`` peer, through this module's launcher."""
    return [python, "-m", "pirag.stress.llama_peer", "--use-extra-bufts", str(int(use_extra_bufts)), "--",
            *server_args]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pirag.stress.llama_peer",
                                     description="run llama_cpp.server with the daemon's model parameters")
    parser.add_argument("--use-extra-bufts", type=int, choices=(0, 1), required=True)
    parser.add_argument("server_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    server_args = args.server_args[1:] if args.server_args[:1] == ["--"] else args.server_args
    apply_model_params(bool(args.use_extra_bufts))
    print(f"llama_peer: use_extra_bufts={bool(args.use_extra_bufts)}", flush=True)
    sys.argv = ["llama_cpp.server", *server_args]
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
