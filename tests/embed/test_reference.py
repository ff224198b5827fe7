"""GGUF files made by `pirag model import` against the numpy BERT reference, through the real engine.

Thresholds (issue 3): cosine >= 0.999 for f16, >= 0.995 for q8_0, >= 0.98 for q4_k_m, on >= 20 real texts, a
text longer than the max length (truncated like sentence-transformers) and empty / whitespace-only inputs.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from pirag.daemon.config import EmbedConfig
from pirag.daemon.embed.engine import EmbedEngine
from pirag.stress.peers import SENTENCE_TRANSFORMERS, module_available, run_child

from .texts import EMPTY_TEXTS, docstring_texts, long_text

THRESHOLDS = {"f16": 0.999, "q8_0": 0.995, "q4_k_m": 0.98}


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return docstring_texts(24) + [long_text()] + EMPTY_TEXTS


@pytest.fixture(scope="module")
def expected(reference, texts) -> np.ndarray:  # noqa: ANN001
    return reference.embed(texts)


async def _embed(path, texts: list[str]) -> tuple[np.ndarray, EmbedEngine]:  # noqa: ANN001
    engine = EmbedEngine(EmbedConfig(model=str(path), cache_entries=0))
    await engine.start()
    try:
        return await engine.embed(texts), engine
    finally:
        await engine.close()


@pytest.mark.parametrize("quant", ["f16", "q8_0", "q4_k_m"])
def test_matches_numpy_reference(quant: str, gguf_models, texts, expected) -> None:  # noqa: ANN001
    vectors, engine = asyncio.run(_embed(gguf_models[quant], texts))
    assert vectors.shape == (len(texts), 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    cosines = (vectors * expected).sum(axis=1)
    worst = int(np.argmin(cosines))
    assert cosines.min() >= THRESHOLDS[quant], f"{quant}: text {worst} cosine {cosines[worst]:.5f}"
    assert engine.model.quantization == quant and engine.model.max_tokens == 256


def test_long_text_is_truncated_like_sentence_transformers(reference, gguf_models) -> None:  # noqa: ANN001
    text = long_text()
    assert len(reference.tokenizer.encode(text, add_special_tokens=True).ids) == 256   # the reference truncates
    engine_vectors, engine = asyncio.run(_embed(gguf_models["f16"], [text, text + " and more words at the end"]))
    # Text beyond the 256th token changes nothing, exactly as in sentence-transformers.
    assert float(engine_vectors[0] @ engine_vectors[1]) > 0.99999
    assert engine.count_tokens([text])[0] > 256      # count_tokens reports the untruncated length


def test_empty_and_whitespace_embed_as_the_empty_sequence(reference, gguf_models) -> None:  # noqa: ANN001
    vectors, _ = asyncio.run(_embed(gguf_models["q8_0"], EMPTY_TEXTS))
    empty = reference.embed_ids([101, 102])          # [CLS] [SEP]
    for vector in vectors:
        assert float(vector @ empty) >= 0.995
    assert float(vectors[0] @ vectors[1]) > 0.99999 and float(vectors[0] @ vectors[2]) > 0.99999


def sentence_transformers_vectors(checkpoint, texts: list[str]) -> np.ndarray:  # noqa: ANN001
    """sentence-transformers' vectors for ``texts``: in this process when it has torch, else in the venv that
    `python -m pirag.stress.product_peers install` (.ci/run) makes for the peer of `pirag-stress compare`."""
    if module_available("torch") and module_available("sentence_transformers"):
        import sentence_transformers

        model = sentence_transformers.SentenceTransformer(str(checkpoint), device="cpu")
        return model.encode(texts, normalize_embeddings=True)
    if not SENTENCE_TRANSFORMERS.installed:
        pytest.skip("sentence-transformers is neither importable here nor installed in its peer venv "
                    f"({SENTENCE_TRANSFORMERS.venv}; python -m pirag.stress.product_peers install)")
    figures = run_child("st", {"checkpoint": str(checkpoint), "threads": 2, "warmup": texts[:1], "texts": texts,
                               "keep": len(texts)}, timeout=600, python=str(SENTENCE_TRANSFORMERS.python))
    return np.asarray(figures["first_vectors"], dtype=np.float32)


def test_reference_agrees_with_sentence_transformers(minilm_checkpoint, reference) -> None:  # noqa: ANN001
    """Checks the checker against sentence-transformers itself (torch in this venv, or the peer's venv)."""
    texts = docstring_texts(4) + [long_text(), ""]
    theirs = sentence_transformers_vectors(minilm_checkpoint, texts)
    assert theirs.shape == (len(texts), 384)
    assert ((theirs * reference.embed(texts)).sum(axis=1) >= 0.9999).all()
