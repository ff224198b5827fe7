"""A small numpy implementation of the BERT forward pass + sentence-transformers pooling: the reference the
GGUF files are compared against. It reads the same model.safetensors and tokenizes with the checkpoint's own
tokenizer.json (truncated to max_seq_length, no padding), exactly as sentence-transformers does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): exact-enough GELU without scipy.
    sign = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-x * x))


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / np.sqrt(2.0)))


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


class ReferenceBert:
    def __init__(self, checkpoint: str | Path, *, pooling: str | None = None, max_seq_length: int | None = None):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        root = Path(checkpoint)
        self.config = json.loads((root / "config.json").read_text())
        st_config = json.loads((root / "sentence_bert_config.json").read_text())
        pooling_config = json.loads((root / "1_Pooling" / "config.json").read_text())
        self.pooling = pooling or ("cls" if pooling_config.get("pooling_mode_cls_token") else "mean")
        self.max_seq_length = max_seq_length or int(st_config["max_seq_length"])
        self.weights = {name.removeprefix("bert."): tensor.astype(np.float64)
                        for name, tensor in load_file(str(root / "model.safetensors")).items()
                        if tensor.dtype.kind == "f"}
        if (root / "tokenizer.json").exists():
            self.tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
        else:   # vocab.txt only (as bge ships it too): the tokenizers library's own BERT WordPiece pipeline
            from tokenizers.implementations import BertWordPieceTokenizer

            self.tokenizer = BertWordPieceTokenizer(str(root / "vocab.txt"), lowercase=True)
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.max_seq_length)

    def token_ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def embed_ids(self, ids: list[int]) -> np.ndarray:
        w = self.weights
        eps = float(self.config.get("layer_norm_eps", 1e-12))
        heads = int(self.config["num_attention_heads"])
        n = len(ids)
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
        dims = x.shape[1]
        head_dims = dims // heads
        for layer in range(int(self.config["num_hidden_layers"])):
            p = f"encoder.layer.{layer}."

            def dense(name: str, value: np.ndarray) -> np.ndarray:
                return value @ w[p + name + ".weight"].T + w[p + name + ".bias"]

            q = dense("attention.self.query", x).reshape(n, heads, head_dims).transpose(1, 0, 2)
            k = dense("attention.self.key", x).reshape(n, heads, head_dims).transpose(1, 0, 2)
            v = dense("attention.self.value", x).reshape(n, heads, head_dims).transpose(1, 0, 2)
            scores = q @ k.transpose(0, 2, 1) / np.sqrt(head_dims)
            scores -= scores.max(-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(-1, keepdims=True)
            context = (probs @ v).transpose(1, 0, 2).reshape(n, dims)
            x = _layer_norm(x + dense("attention.output.dense", context), w[p + "attention.output.LayerNorm.weight"],
                            w[p + "attention.output.LayerNorm.bias"], eps)
            hidden = _gelu(dense("intermediate.dense", x))
            x = _layer_norm(x + dense("output.dense", hidden), w[p + "output.LayerNorm.weight"],
                            w[p + "output.LayerNorm.bias"], eps)
        pooled = x[0] if self.pooling == "cls" else x.mean(0)
        return (pooled / np.linalg.norm(pooled)).astype(np.float32)

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.embed_ids(self.token_ids(text)) for text in texts])
