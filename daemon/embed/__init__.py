"""Text -> vectors: GGUF model import, the warm llama.cpp context pool, micro-batching, the embedding cache.
This package never touches a store (DESIGN.md: layers).

``build_embedder(config, state_dir, progress)`` is what ``daemon/components.py`` calls: ``embed.model = "fake"``
gives the deterministic ``FakeEmbedder`` (plumbing tests), anything else the real ``EmbedEngine`` (an empty
``embed.model`` means the embedded default, imported into ``<state_dir>/models/`` on first start). Heavy modules
(llama_cpp, gguf, tokenizers) are imported only when the engine starts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .fake import FakeEmbedder, ModelInfo

if TYPE_CHECKING:
    from ..config import Config
    from .engine import EmbedEngine


def build_embedder(config: "Config", state_dir: str | Path | None = None,
                   progress: Callable[[str], None] | None = None) -> "EmbedEngine | FakeEmbedder":
    """The ``embed`` component for ``config`` (not started: the caller awaits ``start()``)."""
    if config.embed.model == "fake":
        return FakeEmbedder()
    from .engine import EmbedEngine

    return EmbedEngine(config.embed, state_dir=state_dir if state_dir is not None else config.state_path,
                       progress=progress)


__all__ = ["FakeEmbedder", "ModelInfo", "build_embedder"]
