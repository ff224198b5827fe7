"""Text -> vectors: GGUF model import, the warm llama.cpp context pool, micro-batching, the embedding cache.
This package never touches a store (DESIGN.md: layers)."""
