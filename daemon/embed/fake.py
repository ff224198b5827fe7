"""A deterministic fake embedder for plumbing tests (``embed.model = "fake"``), never for quality claims.

It has the same surface as the real engine (``EmbedEngine``): ``model`` info, ``embed(texts)`` returning
L2-normalized float32 rows, ``count_tokens(texts)``. Vectors come from hashing word trigrams, so texts that
share words are closer than texts that do not: good enough to test ranking plumbing.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class ModelInfo:
    model_id: str
    path: str
    dims: int
    max_tokens: int
    pooling: str
    quantization: str
    load_s: float
    architecture: str = "bert"


class FakeEmbedder:
    name = "embed"

    def __init__(self, dims: int = 384, max_tokens: int = 256):
        self.model = ModelInfo(model_id=f"fake-{dims}", path="(fake)", dims=dims, max_tokens=max_tokens,
                               pooling="mean", quantization="none", load_s=0.0, architecture="fake")
        self.requests = 0

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def stats(self) -> dict[str, Any]:
        return {"model_id": self.model.model_id, "dims": self.model.dims, "fake": True, "requests": self.requests}

    def handlers(self) -> dict[str, Any]:
        return {}

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(_WORD.findall(text)) + 2 for text in texts]

    async def embed(self, texts: Sequence[str], *, bulk: bool = False) -> np.ndarray:
        self.requests += 1
        return np.stack([self._vector(text) for text in texts]) if texts else np.zeros((0, self.model.dims), np.float32)

    def _vector(self, text: str) -> np.ndarray:
        vector = np.zeros(self.model.dims, np.float32)
        for word in _WORD.findall(text.lower()):
            digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
            index = int.from_bytes(digest[:4], "little") % self.model.dims
            vector[index] += 1.0 if digest[4] & 1 else -1.0
        norm = float(np.linalg.norm(vector))
        if norm == 0.0:
            vector[0] = 1.0
            return vector
        return vector / norm
