"""Reading a sentence-transformers checkpoint directory without torch: config, weights, tokenizer, pooling.

A checkpoint is what ``SentenceTransformer.save()`` writes (and what the hub serves): ``config.json``,
``model.safetensors``, ``tokenizer.json`` (or ``vocab.txt`` + ``tokenizer_config.json``), ``modules.json``,
``1_Pooling/config.json`` and ``sentence_bert_config.json``. Only the BERT family is accepted (BertModel:
all-MiniLM-L6-v2, bge-small/base-en-v1.5, e5 and gte BERT variants); anything else is refused with a message
that says why, before a single tensor is read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class CheckpointError(ValueError):
    """A checkpoint pirag cannot import; the message says what is missing or unsupported."""


# The sentence-transformers modules whose effect the GGUF file reproduces (Normalize: pirag always normalizes).
_SUPPORTED_MODULES = {
    "sentence_transformers.models.Transformer",
    "sentence_transformers.models.Pooling",
    "sentence_transformers.models.Normalize",
    "sentence_transformers.models.transformer.Transformer",
    "sentence_transformers.models.pooling.Pooling",
    "sentence_transformers.models.normalize.Normalize",
    "sentence_transformers.sentence_transformer.modules.Transformer",
    "sentence_transformers.sentence_transformer.modules.Pooling",
    "sentence_transformers.sentence_transformer.modules.Normalize",
}

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@dataclass
class TokenizerSpec:
    """A WordPiece vocabulary in id order (original ``##`` form) and the normalizer settings of BertTokenizer."""

    vocab: list[str]
    lowercase: bool = True
    strip_accents: bool | None = None        # None: follow lowercase (BertNormalizer's rule)
    chinese_chars: bool = True
    special: dict[str, int] = field(default_factory=dict)   # "[CLS]" -> 101, ...
    max_input_chars_per_word: int = 100


@dataclass
class Checkpoint:
    path: Path
    config: dict[str, Any]
    pooling: str                 # "mean" or "cls"
    max_seq_length: int
    tokenizer: TokenizerSpec
    weights_path: Path
    name: str


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read JSON: {exc}") from exc


def _optional_json(path: Path) -> Any:
    try:
        return _read_json(path)
    except FileNotFoundError:
        return None


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Validate a checkpoint directory and read everything but the weights."""
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"{root}: not a directory (expected a sentence-transformers checkpoint directory)")
    try:
        config = _read_json(root / "config.json")
    except FileNotFoundError:
        raise CheckpointError(f"{root}: no config.json: not a Hugging Face checkpoint directory") from None
    _check_architecture(root, config)
    weights = root / "model.safetensors"
    if not weights.is_file():
        if (root / "pytorch_model.bin").exists():
            raise CheckpointError(f"{root}: only pytorch_model.bin is present; pirag reads model.safetensors only "
                                  "(reading .bin files needs torch). Convert it to safetensors first.")
        raise CheckpointError(f"{root}: no model.safetensors")
    modules = _optional_json(root / "modules.json") or []
    pooling_dir = "1_Pooling"
    for module in modules:
        kind = module.get("type", "")
        if kind not in _SUPPORTED_MODULES:
            raise CheckpointError(f"{root}: unsupported sentence-transformers module {kind!r} in modules.json "
                                  "(pirag reproduces Transformer + Pooling + Normalize only)")
        if kind.endswith("Pooling"):
            pooling_dir = module.get("path") or pooling_dir
    pooling = _read_pooling(root / pooling_dir / "config.json")
    st_config = _optional_json(root / "sentence_bert_config.json") or {}
    tokenizer = _read_tokenizer(root)
    max_positions = int(config.get("max_position_embeddings", 512))
    max_seq_length = int(st_config.get("max_seq_length") or min(max_positions, 512))
    if not 2 < max_seq_length <= max_positions:
        raise CheckpointError(f"{root}: max_seq_length {max_seq_length} does not fit the model's "
                              f"{max_positions} positions")
    if st_config.get("do_lower_case"):
        tokenizer.lowercase = True
    name = str(config.get("_name_or_path") or root.name).rstrip("/").split("/")[-1] or root.name
    return Checkpoint(path=root, config=config, pooling=pooling, max_seq_length=max_seq_length,
                      tokenizer=tokenizer, weights_path=weights, name=name)


def _check_architecture(root: Path, config: dict[str, Any]) -> None:
    architectures = config.get("architectures") or []
    model_type = config.get("model_type")
    if model_type != "bert" or (architectures and not any(a in ("BertModel", "BertForMaskedLM", "BertForPreTraining")
                                                          for a in architectures)):
        raise CheckpointError(
            f"{root}: unsupported architecture {', '.join(architectures) or model_type!r} "
            f"(model_type {model_type!r}); pirag imports BERT-family models only (BertModel, e.g. "
            "all-MiniLM-L6-v2 or bge-small-en-v1.5)")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError(f"{root}: position_embedding_type {config['position_embedding_type']!r} "
                              "is not supported (only absolute)")
    if config.get("hidden_act", "gelu") not in ("gelu", "gelu_new", "gelu_python"):
        raise CheckpointError(f"{root}: hidden_act {config['hidden_act']!r} is not supported (only gelu)")
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size"):
        if not isinstance(config.get(key), int):
            raise CheckpointError(f"{root}: config.json lacks {key}")
    if config["hidden_size"] % config["num_attention_heads"]:
        raise CheckpointError(f"{root}: hidden_size is not a multiple of num_attention_heads")


def _read_pooling(path: Path) -> str:
    try:
        pooling = _read_json(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing (the pooling configuration of a sentence-transformers "
                              "checkpoint)") from None
    modes = [key.removeprefix("pooling_mode_") for key, value in pooling.items()
             if key.startswith("pooling_mode_") and value is True]
    if modes == ["cls_token"]:
        return "cls"
    if modes == ["mean_tokens"]:
        return "mean"
    raise CheckpointError(f"{path}: pooling {modes or 'none'} is not supported (mean or CLS only)")


def _read_tokenizer(root: Path) -> TokenizerSpec:
    tokenizer_config = _optional_json(root / "tokenizer_config.json") or {}
    data = _optional_json(root / "tokenizer.json")
    if data is not None:
        model = data.get("model") or {}
        if model.get("type") != "WordPiece":
            raise CheckpointError(f"{root}/tokenizer.json: tokenizer model {model.get('type')!r} is not "
                                  "WordPiece (BERT)")
        by_id = {int(i): token for token, i in model["vocab"].items()}
        vocab = [by_id.get(i, f"[unused-gap-{i}]") for i in range(max(by_id) + 1)]
        normalizer = data.get("normalizer") or {}
        if normalizer and normalizer.get("type") != "BertNormalizer":
            raise CheckpointError(f"{root}/tokenizer.json: normalizer {normalizer.get('type')!r} is not "
                                  "BertNormalizer")
        spec = TokenizerSpec(
            vocab=vocab,
            lowercase=bool(normalizer.get("lowercase", True)),
            strip_accents=normalizer.get("strip_accents"),
            chinese_chars=bool(normalizer.get("handle_chinese_chars", True)),
            max_input_chars_per_word=int(model.get("max_input_chars_per_word") or 100),
        )
    elif (root / "vocab.txt").is_file():
        vocab = (root / "vocab.txt").read_text(encoding="utf-8").split("\n")
        if vocab and vocab[-1] == "":
            vocab.pop()
        spec = TokenizerSpec(
            vocab=vocab,
            lowercase=bool(tokenizer_config.get("do_lower_case", True)),
            strip_accents=tokenizer_config.get("strip_accents"),
            chinese_chars=bool(tokenizer_config.get("tokenize_chinese_chars", True)),
        )
    else:
        raise CheckpointError(f"{root}: no tokenizer.json and no vocab.txt")
    index = {token: i for i, token in enumerate(spec.vocab)}
    for token in SPECIAL_TOKENS:
        if token not in index:
            raise CheckpointError(f"{root}: the vocabulary lacks the BERT special token {token}")
        spec.special[token] = index[token]
    return spec


def load_weights(checkpoint: Checkpoint) -> dict[str, np.ndarray]:
    """The checkpoint's tensors as float32 numpy arrays, keys without a ``bert.`` prefix."""
    from safetensors.numpy import load_file

    try:
        raw = load_file(str(checkpoint.weights_path))
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{checkpoint.weights_path}: cannot read: {exc}") from exc
    weights: dict[str, np.ndarray] = {}
    for name, tensor in raw.items():
        key = name.removeprefix("bert.")
        if tensor.dtype.kind == "f":
            tensor = tensor.astype(np.float32, copy=False)
        weights[key] = tensor
    return weights
