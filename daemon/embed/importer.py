"""Checkpoint -> GGUF, without torch: ``pirag model import`` and the embedded default's first start.

The weights are read with ``safetensors`` (numpy) and written with the ``gguf`` package in llama.cpp's BERT layout
(the layout ``convert_hf_to_gguf.py`` writes: arch ``bert``, phantom-space WordPiece vocabulary, pooling type);
``q8_0`` and ``q4_k_m`` are produced from that f16 file by llama.cpp's own quantizer (``llama_model_quantize``).
pirag adds a few ``pirag.*`` keys: the sentence-transformers max sequence length (all-MiniLM-L6-v2 truncates at 256
although it has 512 positions), the tokenizer's normalizer settings and the source weights' sha256.

Every output is written to a temporary file in the destination directory and renamed into place, so a crash
never leaves a half-written model under the final name. ``describe(path)`` reads a GGUF file's metadata for
``pirag model info``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .checkpoint import Checkpoint, CheckpointError, load_weights, read_checkpoint
from .tokenizer import to_phantom

Progress = Callable[[str], None]

QUANTS = ("f16", "q8_0", "q4_k_m", "q4_0")
_FILE_TYPES = {"f16": 1, "q8_0": 7, "q4_k_m": 15, "q4_0": 2}          # llama_ftype / gguf.LlamaFileType
FILE_TYPE_NAMES = {0: "f32", 1: "f16", 2: "q4_0", 3: "q4_1", 7: "q8_0", 8: "q5_0", 9: "q5_1", 10: "q2_k",
                    11: "q3_k_s", 12: "q3_k_m", 13: "q3_k_l", 14: "q4_k_s", 15: "q4_k_m", 16: "q5_k_s",
                    17: "q5_k_m", 18: "q6_k", 32: "bf16"}
POOLING_TYPES = {"mean": 1, "cls": 2}                        # llama_pooling_type
POOLING_NAMES = {0: "none", 1: "mean", 2: "cls", 3: "last", 4: "rank"}

KEY_MAX_SEQ = "pirag.max_seq_length"
KEY_LOWERCASE = "pirag.tokenizer.lowercase"
KEY_STRIP_ACCENTS = "pirag.tokenizer.strip_accents"       # absent: follow lowercase
KEY_CHINESE = "pirag.tokenizer.chinese_chars"
KEY_SOURCE_SHA = "pirag.source.sha256"

# Hugging Face BertModel tensor names (without "bert.") -> llama.cpp GGUF names; {i} is the layer.
_TOP_LEVEL = {
    "embeddings.word_embeddings.weight": "token_embd.weight",
    "embeddings.position_embeddings.weight": "position_embd.weight",
    "embeddings.token_type_embeddings.weight": "token_types.weight",
    "embeddings.LayerNorm.weight": "token_embd_norm.weight",
    "embeddings.LayerNorm.bias": "token_embd_norm.bias",
}
_PER_LAYER = {
    "attention.self.query": "attn_q",
    "attention.self.key": "attn_k",
    "attention.self.value": "attn_v",
    "attention.output.dense": "attn_output",
    "attention.output.LayerNorm": "attn_output_norm",
    "intermediate.dense": "ffn_up",
    "output.dense": "ffn_down",
    "output.LayerNorm": "layer_output_norm",
}
# Present in checkpoints, unused by a sentence embedding (llama.cpp's converter drops them too).
_IGNORED_PREFIXES = ("pooler.", "cls.", "embeddings.position_ids")
# Kept in f32 (llama.cpp's quantizer keeps them unquantized as well).
_KEEP_F32 = ("position_embd.weight", "token_types.weight")


@dataclass(frozen=True)
class GGUFDescription:
    path: str
    architecture: str
    name: str
    dims: int
    layers: int
    heads: int
    vocab: int
    pooling: str
    max_tokens: int
    context_length: int
    quantization: str
    size_bytes: int
    source_sha256: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def map_tensor_name(name: str, layers: int) -> str | None:
    """The GGUF name of a checkpoint tensor, None for a tensor to drop; raises for one it does not know."""
    if name.startswith(_IGNORED_PREFIXES):
        return None
    if name in _TOP_LEVEL:
        return _TOP_LEVEL[name]
    parts = name.split(".")
    if len(parts) >= 5 and parts[0] == "encoder" and parts[1] == "layer" and parts[2].isdigit():
        layer = int(parts[2])
        inner, kind = ".".join(parts[3:-1]), parts[-1]
        if layer < layers and inner in _PER_LAYER and kind in ("weight", "bias"):
            return f"blk.{layer}.{_PER_LAYER[inner]}.{kind}"
    raise CheckpointError(f"unexpected tensor {name!r}: not part of a BERT encoder")


def import_checkpoint(source: str | Path, out: str | Path, *, quant: str = "q8_0", threads: int = 0,
                      progress: Progress | None = None, expected_sha256: str | None = None) -> GGUFDescription:
    """Convert ``source`` (a checkpoint directory) to the GGUF file ``out``; returns its description."""
    if quant not in QUANTS:
        raise ValueError(f"unknown quantization {quant!r}; choose one of {', '.join(QUANTS)}")
    say = progress or (lambda message: None)
    checkpoint = read_checkpoint(source)
    say(f"checking {checkpoint.weights_path.name} ({checkpoint.weights_path.stat().st_size / 1e6:.0f} MB)")
    source_sha = sha256_file(checkpoint.weights_path)
    if expected_sha256 is not None and source_sha != expected_sha256:
        raise CheckpointError(f"{checkpoint.weights_path}: sha256 {source_sha} does not match the pinned "
                              f"{expected_sha256}; refusing to use these weights")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, f16_tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".f16.tmp", dir=out.parent)
    os.close(handle)
    final_tmp = f16_tmp
    try:
        say(f"writing f16 GGUF ({checkpoint.config['num_hidden_layers']} layers, "
            f"{checkpoint.config['hidden_size']} dims, {checkpoint.pooling} pooling, "
            f"max {checkpoint.max_seq_length} tokens)")
        write_f16_gguf(checkpoint, f16_tmp, source_sha)
        if quant != "f16":
            handle, final_tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=f".{quant}.tmp", dir=out.parent)
            os.close(handle)
            say(f"quantizing to {quant}")
            quantize(f16_tmp, final_tmp, quant, threads=threads)
        with open(final_tmp, "rb+") as written:
            os.fsync(written.fileno())
        os.chmod(final_tmp, 0o644)          # mkstemp makes 0600; a model file is not a secret
        os.replace(final_tmp, out)
        _fsync_dir(out.parent)
        say(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
    finally:
        for leftover in {f16_tmp, final_tmp}:
            try:
                os.unlink(leftover)
            except FileNotFoundError:
                pass
    return describe(out)


def write_f16_gguf(checkpoint: Checkpoint, path: str | Path, source_sha256: str = "") -> None:
    import logging

    import gguf

    logging.getLogger("gguf").setLevel(logging.WARNING)     # its INFO lines name our temporary file
    config = checkpoint.config
    layers = int(config["num_hidden_layers"])
    weights = load_weights(checkpoint)
    tensors: list[tuple[str, np.ndarray]] = []
    for name, tensor in weights.items():
        gguf_name = map_tensor_name(name, layers)
        if gguf_name is None:
            continue
        tensors.append((gguf_name, tensor))
    expected = {f"blk.{i}.{part}.{kind}" for i in range(layers) for part in _PER_LAYER.values()
                for kind in ("weight", "bias")} | set(_TOP_LEVEL.values())
    missing = expected - {name for name, _ in tensors}
    if missing:
        raise CheckpointError(f"{checkpoint.weights_path}: missing tensors {', '.join(sorted(missing)[:5])}")
    vocab = checkpoint.tokenizer.vocab
    if len(vocab) != int(config["vocab_size"]):
        raise CheckpointError(f"{checkpoint.path}: tokenizer has {len(vocab)} tokens, config says "
                              f"{config['vocab_size']}")

    writer = gguf.GGUFWriter(str(path), "bert")
    writer.add_name(checkpoint.name)
    writer.add_context_length(int(config.get("max_position_embeddings", 512)))
    writer.add_embedding_length(int(config["hidden_size"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_block_count(layers)
    writer.add_head_count(int(config["num_attention_heads"]))
    writer.add_layer_norm_eps(float(config.get("layer_norm_eps", 1e-12)))
    writer.add_causal_attention(False)
    writer.add_pooling_type(gguf.PoolingType(POOLING_TYPES[checkpoint.pooling]))
    writer.add_file_type(_FILE_TYPES["f16"])
    writer.add_uint32(KEY_MAX_SEQ, checkpoint.max_seq_length)
    spec = checkpoint.tokenizer
    writer.add_bool(KEY_LOWERCASE, spec.lowercase)
    if spec.strip_accents is not None:
        writer.add_bool(KEY_STRIP_ACCENTS, bool(spec.strip_accents))
    writer.add_bool(KEY_CHINESE, spec.chinese_chars)
    if source_sha256:
        writer.add_string(KEY_SOURCE_SHA, source_sha256)

    special_ids = set(spec.special.values())
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([to_phantom(token) for token in vocab])
    writer.add_token_types([gguf.TokenType.CONTROL if i in special_ids else gguf.TokenType.NORMAL
                            for i in range(len(vocab))])
    writer.add_token_type_count(int(config.get("type_vocab_size", 2)))
    writer.add_bos_token_id(spec.special["[CLS]"])       # llama.cpp keeps [CLS] as BOS for BERT
    writer.add_sep_token_id(spec.special["[SEP]"])
    writer.add_pad_token_id(spec.special["[PAD]"])
    writer.add_unk_token_id(spec.special["[UNK]"])
    writer.add_mask_token_id(spec.special["[MASK]"])

    for name, tensor in tensors:
        if tensor.ndim >= 2 and name not in _KEEP_F32:
            tensor = tensor.astype(np.float16)
        else:
            tensor = tensor.astype(np.float32)
        writer.add_tensor(name, np.ascontiguousarray(tensor))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# q4_k_m for small BERT models: llama.cpp's Q4_K_M mix, with the value projections at q8_0 and the FFN down
# projections at q6_K (Q4_K_M itself gives "more bits" to half of those). On all-MiniLM-L6-v2 this moves the worst
# cosine against the reference from 0.974 (the empty input) to 0.990 for +0.8 MB (docs/EMBEDDINGS.md).
_Q4_K_M_OVERRIDES = (("attn_v", 8), ("ffn_down", 14))      # ggml types: 8 = Q8_0, 14 = Q6_K
# q4_0 (the Pi's repacked fast path, for the tensors left in it: attn_q, attn_k, attn_output): plain q4_0 gave a
# worst cosine of 0.909 (the empty input; 0.958 mean) against the reference; with the value projections and both
# FFN matrices at q8_0 the worst is 0.990 (24 docstrings, a long text, 3 empty inputs; measured 2026-12-01).
_Q4_0_OVERRIDES = (("attn_v", 8), ("ffn_down", 8), ("ffn_up", 8))
_OVERRIDES = {"q4_k_m": _Q4_K_M_OVERRIDES, "q4_0": _Q4_0_OVERRIDES}


def quantize(src: str | Path, dst: str | Path, quant: str, *, threads: int = 0) -> None:
    """llama.cpp's quantizer: f16 GGUF ``src`` -> ``dst`` in ``quant`` (q8_0, q4_k_m, q4_0)."""
    import ctypes

    import llama_cpp

    from .llama import quiet_llama_logs

    quiet_llama_logs()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = _FILE_TYPES[quant]
    params.nthread = threads or len(os.sched_getaffinity(0))
    overrides = None
    kept = _OVERRIDES.get(quant, ())
    if kept:
        overrides = (llama_cpp.llama_model_tensor_override * (len(kept) + 1))()
        for index, (pattern, ggml_type) in enumerate(kept):
            overrides[index].pattern = pattern.encode()
            overrides[index].type = ggml_type
        overrides[len(kept)].pattern = None          # the list ends with a NULL pattern
        params.tt_overrides = ctypes.cast(overrides, ctypes.POINTER(llama_cpp.llama_model_tensor_override))
    code = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if code != 0:
        raise RuntimeError(f"llama_model_quantize failed ({code}) for {quant}")


def _fsync_dir(path: Path) -> None:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def read_metadata(path: str | Path) -> dict[str, object]:
    """Scalar metadata and the token list of a GGUF file (``tokenizer.ggml.tokens`` as a list of str)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    metadata: dict[str, object] = {}
    for key, reader_field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        if key == "tokenizer.ggml.tokens":
            metadata[key] = reader_field.contents()
        elif reader_field.types and reader_field.types[0] != gguf.GGUFValueType.ARRAY:
            metadata[key] = reader_field.contents()
    return metadata


def describe(path: str | Path) -> GGUFDescription:
    """What ``pirag model info`` prints; raises ValueError for a file that is not a BERT-family GGUF."""
    path = Path(path)
    try:
        metadata = read_metadata(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable GGUF file: {exc}") from exc
    architecture = str(metadata.get("general.architecture", "?"))
    prefix = architecture

    def number(key: str, default: int = 0) -> int:
        value = metadata.get(f"{prefix}.{key}", default)
        return int(value) if value is not None else default

    context_length = number("context_length")
    max_tokens = int(metadata.get(KEY_MAX_SEQ, context_length) or context_length)
    file_type = metadata.get("general.file_type")
    tokens = metadata.get("tokenizer.ggml.tokens") or []
    return GGUFDescription(
        path=str(path),
        architecture=architecture,
        name=str(metadata.get("general.name", "")),
        dims=number("embedding_length"),
        layers=number("block_count"),
        heads=number("attention.head_count"),
        vocab=len(tokens),
        pooling=POOLING_NAMES.get(number("pooling_type", 0), "?"),
        max_tokens=max_tokens,
        context_length=context_length,
        quantization=FILE_TYPE_NAMES.get(int(file_type), str(file_type)) if file_type is not None else "?",
        size_bytes=path.stat().st_size,
        source_sha256=str(metadata.get(KEY_SOURCE_SHA, "")),
    )
