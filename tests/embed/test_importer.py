"""`pirag model import` / `describe`: the bge-small-en-v1.5 layout (CLS pooling, 512 tokens, vocab.txt), refusals
of other architectures and layouts, atomic output, and the embedded default imported once."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pirag.daemon.config import EmbedConfig
from pirag.daemon.embed import default_model
from pirag.daemon.embed.checkpoint import CheckpointError
from pirag.daemon.embed.engine import EmbedEngine
from pirag.daemon.embed.importer import describe, import_checkpoint

from .reference import ReferenceBert
from .texts import EMPTY_TEXTS, docstring_texts, long_text


def test_bge_layout_imports_with_cls_pooling_and_512_tokens(bge_like_checkpoint, tmp_path) -> None:  # noqa: ANN001
    out = tmp_path / "bge.q8_0.gguf"
    messages: list[str] = []
    description = import_checkpoint(bge_like_checkpoint, out, quant="q8_0", progress=messages.append)
    assert (description.architecture, description.pooling, description.max_tokens, description.quantization) == \
        ("bert", "cls", 512, "q8_0")
    assert description.dims == 384 and description.vocab == 30522 and description.name == "bge-small-en-v1.5"
    assert messages and any("quantizing" in message for message in messages)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bge.q8_0.gguf"]     # no temporary file left behind

    reference = ReferenceBert(bge_like_checkpoint, pooling="cls", max_seq_length=512)
    texts = docstring_texts(6) + [long_text(), EMPTY_TEXTS[1]]
    expected = np.stack([reference.embed_ids(reference.token_ids(text)) for text in texts])
    assert len(reference.token_ids(long_text())) == 512

    async def embed() -> np.ndarray:
        engine = EmbedEngine(EmbedConfig(model=str(out)))
        await engine.start()
        try:
            assert engine.model.pooling == "cls" and engine.model.max_tokens == 512
            return await engine.embed(texts)
        finally:
            await engine.close()

    cosines = (asyncio.run(embed()) * expected).sum(axis=1)
    assert cosines.min() >= 0.995, cosines


def _broken_copy(checkpoint: Path, tmp_path: Path) -> Path:
    root = tmp_path / "ckpt"
    shutil.copytree(checkpoint, root, ignore=shutil.ignore_patterns("model.safetensors"))
    (root / "model.safetensors").symlink_to(checkpoint / "model.safetensors")
    return root


def _edit_json(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("breakage, message", [
    (lambda root: _edit_json(root / "config.json", model_type="xlm-roberta", architectures=["XLMRobertaModel"]),
     "unsupported architecture"),
    (lambda root: _edit_json(root / "config.json", model_type="llama", architectures=["LlamaForCausalLM"]),
     "BERT-family models only"),
    (lambda root: _edit_json(root / "config.json", position_embedding_type="rotary"), "position_embedding_type"),
    (lambda root: _edit_json(root / "1_Pooling" / "config.json", pooling_mode_mean_tokens=False,
                             pooling_mode_max_tokens=True), "pooling"),
    (lambda root: (root / "modules.json").write_text(json.dumps(
        [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
         {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
         {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}])),
     "unsupported sentence-transformers module"),
    (lambda root: (root / "model.safetensors").unlink(), "no model.safetensors"),
    (lambda root: (root / "tokenizer.json").unlink(), "no tokenizer.json and no vocab.txt"),
    (lambda root: (root / "config.json").unlink(), "no config.json"),
])
def test_refusals(minilm_checkpoint, tmp_path, breakage, message) -> None:  # noqa: ANN001
    root = _broken_copy(minilm_checkpoint, tmp_path)
    breakage(root)
    out = tmp_path / "out.gguf"
    with pytest.raises(CheckpointError, match=message):
        import_checkpoint(root, out, quant="f16")
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.gguf")]


def test_refuses_weights_that_do_not_match_the_pinned_sha(minilm_checkpoint, tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(CheckpointError, match="does not match the pinned"):
        import_checkpoint(minilm_checkpoint, tmp_path / "x.gguf", expected_sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_describe_rejects_a_file_that_is_not_gguf(tmp_path) -> None:  # noqa: ANN001
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(ValueError, match="not a readable GGUF"):
        describe(bogus)


def test_default_model_is_imported_once_and_reused(tmp_path) -> None:  # noqa: ANN001
    try:
        default_model.find_archive()
    except default_model.DefaultModelError as exc:
        pytest.skip(str(exc))
    messages: list[str] = []
    path = default_model.ensure_default_model(tmp_path, messages.append)
    assert path == tmp_path / "models" / default_model.DEFAULT_FILE
    assert any("importing the default embedding model" in message for message in messages)
    description = describe(path)
    assert description.quantization == "q8_0" and description.source_sha256 == default_model.WEIGHTS_SHA256
    stamp = path.stat().st_mtime_ns
    again: list[str] = []
    assert default_model.ensure_default_model(tmp_path, again.append) == path
    assert again == [] and path.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in path.parent.iterdir() if not p.name.startswith(".import.lock")) == \
        [default_model.DEFAULT_FILE]


def test_default_model_refuses_tampered_weights(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    try:
        default_model.find_archive()
    except default_model.DefaultModelError as exc:
        pytest.skip(str(exc))
    monkeypatch.setattr(default_model, "WEIGHTS_SHA256", "f" * 64)
    with pytest.raises(CheckpointError, match="sha256"):
        default_model.ensure_default_model(tmp_path)
    assert not default_model.default_model_path(tmp_path).exists()
