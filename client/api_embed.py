"""Client methods for the embed ops (see api_core.py for the pattern)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from .protocol.embed import EMBED, EmbedArgs, EmbedResult


class EmbedMethods:
    _call: Any

    def embed(self, texts: Sequence[str], *, format: Literal["float", "f32"] = "float") -> EmbedResult:
        """L2-normalized vectors of ``texts`` with the daemon's model; ``result.rows()`` gives lists of floats.

        ``format="f32"`` returns one little-endian float32 blob in ``result.data`` (cheaper for many texts).
        Empty or whitespace-only texts all get the vector of the empty sequence, like sentence-transformers."""
        return self._call(EMBED, EmbedArgs(texts=list(texts), format=format))
