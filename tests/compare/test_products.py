"""The products head-to-head (issue 15): the torch-free ONNX export against the numpy reference, the mapping of
returned text back to LoCoMo turns, and ``pirag-stress compare --products --quick`` against a real daemon and the
real products, each installed (once, lazily) in its own venv under the peers' cache directory.

Figures are printed, never asserted on (shared machines); what is asserted is that every product that could
run here ran, with figures, and that a skipped one says why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pirag.stress.product_peers import BasicMemory, ChromaMcp, McpMemoryService, products
from pirag.stress.products import FIGURES, rank_turns

STRESS = str(Path(sys.executable).with_name("pirag-stress"))


def test_onnx_export_matches_the_numpy_reference(tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    from tokenizers import Tokenizer

    from pirag.stress.onnx_export import checkpoint_dir, export
    from tests.embed.reference import ReferenceBert

    checkpoint = checkpoint_dir()
    model = export(checkpoint, tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in session.get_outputs()] == ["last_hidden_state"]
    texts = ["hello", "The daemon keeps the embedding model warm; requests are coalesced into micro-batches.",
             "Ünïcödé and punctuation — do they survive?", "word " * 400]   # the last one is truncated to 256
    reference = ReferenceBert(checkpoint).embed(texts)
    tokenizer = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=256)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")      # one padded batch: the mask must do its job
    encoded = tokenizer.encode_batch(texts)
    ids = np.array([e.ids for e in encoded], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
    hidden = session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
    assert hidden.shape == (len(texts), ids.shape[1], 384)
    # the peers' pooling: mean over the attention mask, then L2 normalisation
    pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    cosines = (pooled * reference).sum(1)
    print("cosine vs numpy reference:", cosines)
    assert cosines.min() >= 0.9999


def test_returned_text_maps_back_to_turns() -> None:
    needles = [("D1:1", ["A: Yes"]), ("D1:2", ["A: Yes, I did"]), ("D1:3", ["B: no"]), ("D1:4", ["C: absent"])]
    text = '{"documents": [["B: no", "A: Yes, I did", "A: Yes"]]}'
    assert rank_turns(text, needles) == ["D1:3", "D1:2", "D1:1"]
    assert rank_turns("", needles) == []
    # JSON-escaped spellings are found too
    escaped = McpMemoryService().result_keys('She said "hi" — naïve', 0, "ns")
    assert rank_turns(json.dumps({"t": 'She said "hi" — naïve'}), [("D2:1", escaped)]) == ["D2:1"]
    # basic-memory answers with titles: the title names the memory
    assert BasicMemory().result_keys("anything", 7, "ns") == ["note-ns-00007"]


def test_every_product_is_pinned_in_its_own_cache_venv() -> None:
    names = {product.name: product for product in products()}
    assert set(names) == {"mcp-memory-service-lite", "chroma-mcp", "basic-memory"}
    for product in names.values():
        assert product.requirement == f"{product.name}=={product.version}"
        assert product.venv.name == f"{product.name}-{product.version}"
    assert isinstance(names["chroma-mcp"], ChromaMcp)


def test_compare_products_quick(real_daemon: Any, tmp_path: Path) -> None:
    out = tmp_path / "products.json"
    process = subprocess.run([STRESS, "compare", "--products", "--quick", "--allow-missing", "--socket",
                              str(real_daemon.socket), "--json", str(out), "--memories", "15", "--queries", "10",
                              "--locomo-turns", "40", "--locomo-questions", "12"],
                             capture_output=True, text=True, timeout=3600,
                             # a product not installed yet is installed now, each within 15 minutes
                             env=dict(os.environ, PIRAG_PEERS_INSTALL_TIMEOUT="900"))
    print(process.stdout[-8000:])
    assert process.returncode == 0, process.stderr[-4000:]
    report = json.loads(out.read_text())
    assert "pirag vs MCP memory products" in process.stdout
    assert set(report["products"]) == {"pirag", "mcp-memory-service-lite", "chroma-mcp", "basic-memory"}
    pirag = report["products"]["pirag"]
    assert pirag["status"] == "ok", pirag["reason"]
    for name, entry in report["products"].items():
        if entry["status"] != "ok":
            # only an install this machine could not do may skip a product; an installed one must run
            assert entry["reason"].startswith(("installing", f"{entry['requirement']} needs")), (name, entry["reason"])
            continue
        figures = entry["figures"]
        for label, path, _ in FIGURES:
            assert figures[path[0]][path[1]] is not None, (name, label)
        assert figures["startup"]["spawn_to_initialize_ms"] > 0
        assert figures["rss_5_sessions"]["processes"] >= figures["rss_1_session"]["processes"] + 4, name
        assert figures["store_1_session"]["ok"] + figures["store_1_session"]["errors"] == 15, name
        assert figures["recall"]["queries"] >= 1, name
        assert figures["locomo"]["questions"] >= 1 and figures["locomo"]["turns_stored"] >= 1, name
    assert pirag["figures"]["store_5_sessions"]["errors"] == 0
    assert pirag["figures"]["locomo"]["recall_at_10"] > 0
    assert set(report["targets"]) >= {"recall p50 <= 0.5x the best product's",
                                      "0 errors from 5 concurrent writing sessions"}
