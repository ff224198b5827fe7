"""Operations of the embed area (declared with define_op; see base.py).

``embed`` turns texts into L2-normalized vectors with the daemon's model, for local programs that want vectors
(the daemon's own services call the engine directly). Texts longer than the model's max sequence length are
truncated the way sentence-transformers truncates; an empty or whitespace-only text is embedded as the empty
sequence (``[CLS] [SEP]``), exactly as sentence-transformers does, so all such texts get the same vector.

Vectors come back as lists of floats (``format="float"``), or, cheaper for many texts, as one ``bytes`` blob of
little-endian float32, row after row (``format="f32"``; ``numpy.frombuffer(data, "<f4").reshape(count, dims)``).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from .base import MAX_ITEMS, Args, Result, define_op

MAX_EMBED_TEXT = 1 << 20   # characters in one text; the model reads only its first max-tokens tokens anyway

EmbedText = Annotated[str, msgspec.Meta(max_length=MAX_EMBED_TEXT)]


class EmbedArgs(Args):
    texts: Annotated[list[EmbedText], msgspec.Meta(max_length=MAX_ITEMS)]
    format: Literal["float", "f32"] = "float"


class EmbedResult(Result):
    model_id: str
    dims: int
    count: int
    vectors: list[list[float]] = []      # format="float"
    data: bytes = b""                    # format="f32": count x dims little-endian float32

    def rows(self) -> list[list[float]]:
        """The vectors as lists of floats, whichever format was asked for (no numpy needed)."""
        if self.vectors or not self.data:
            return self.vectors
        from array import array
        import sys

        values = array("f")
        values.frombytes(self.data)
        if sys.byteorder != "little":
            values.byteswap()
        return [values[i * self.dims:(i + 1) * self.dims].tolist() for i in range(self.count)]


EMBED = define_op("embed", EmbedArgs, EmbedResult, idempotent=True,
                  summary="Texts -> L2-normalized vectors with the daemon's model (model id, dims, vectors).")
