"""The sentence-transformers peer of ``pirag-stress compare``, run as a script by the Python of the venv that
has torch (``python st_peer.py REQUEST.json``; one ``RESULT {json}`` line on stdout).

It is a file of its own, importing nothing but the standard library at the top, because that venv
(peers.SENTENCE_TRANSFORMERS, see peer_venv.py) holds torch and sentence-transformers, not pirag.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


def measure(request: dict[str, Any]) -> dict[str, Any]:
    """sentence-transformers the way its users run it: ``encode(batch_size=64)``, normalised, torch threads =
    the daemon's. The first ``keep`` (4) vectors come back, to check them against the caller's."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(int(request["threads"]))
    started = time.perf_counter()
    model = SentenceTransformer(request["checkpoint"], device="cpu")
    load_s = time.perf_counter() - started
    model.encode(request["warmup"], batch_size=64, normalize_embeddings=True)
    texts: list[str] = request["texts"]
    started = time.perf_counter()
    vectors = model.encode(texts, batch_size=64, normalize_embeddings=True)
    elapsed = time.perf_counter() - started
    import sentence_transformers

    return {"load_s": round(load_s, 3), "texts": len(texts), "seconds": elapsed, "texts_per_s": len(texts) / elapsed,
            "torch": torch.__version__, "sentence_transformers": sentence_transformers.__version__,
            "python": sys.executable, "threads": torch.get_num_threads(), "batch_size": 64,
            "first_vectors": [[float(x) for x in row] for row in vectors[:int(request.get("keep", 4))]]}


def main(argv: list[str]) -> int:
    request = json.loads(Path(argv[0]).read_text())
    sys.stdout.write("RESULT " + json.dumps(measure(request)) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
