"""Embeds texts with pirag's real engine and prints one JSON line: the vectors, llama.cpp's system info and the
CPU variant loaded. Run as a script (under ``qemu-x86_64 -cpu <older model>`` or with ``$PIRAG_GGML_CPU_VARIANT``
/ ``$LLAMA_CPP_LIB_PATH`` set) by test_portable.py, which compares the vectors with the numpy reference.

    python fidelity_child.py MODEL.gguf TEXTS.json
"""

from __future__ import annotations

import asyncio
import json
import sys


async def main(model: str, texts_path: str) -> None:
    from pirag.daemon.config import EmbedConfig
    from pirag.daemon.embed import llama
    from pirag.daemon.embed.engine import EmbedEngine

    import ctypes

    import llama_cpp

    texts = json.loads(open(texts_path).read())
    # llama.cpp's own log says which buffer types hold the weights ("CPU_REPACK" when repacked)
    llama.quiet_llama_logs()
    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def collect(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        lines.append(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(collect, ctypes.c_void_p(0))
    engine = EmbedEngine(EmbedConfig(model=model, cache_entries=0, contexts=1, threads_per_context=1))
    await engine.start()
    try:
        vectors = await engine.embed(texts)
        use_extra_bufts = engine.stats()["extra_buffer_types"]
    finally:
        await engine.close()
    print(json.dumps({"vectors": vectors.tolist(), "system_info": llama.system_info(),
                      "variant": llama.loaded_cpu_variant(), "library_dir": str(llama.library_dir()),
                      "use_extra_bufts": use_extra_bufts,
                      "repacked": any("REPACK" in line for line in lines)}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
