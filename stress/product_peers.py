"""The products a Pi owner would install instead of pirag, as MCP servers: how each is installed, configured
offline, started and called (``pirag-stress compare --products`` measures them, see products.py).

Each product is pinned and installed into its own virtual environment under the peers' cache directory
(``~/.cache/pirag/peers/<name>-<version>``, see peer_venv.py), once; an install that fails is
returned as the reason the peer is skipped. Its embedding model (all-MiniLM-L6-v2, exported to ONNX without
torch by onnx_export.py) is placed where the product looks for it, under a private HOME, and every download
switch is turned off (HF_HUB_OFFLINE and the products' own). A session is what an MCP host starts: one process
per session, stdio, spoken to by the official MCP SDK client.

pirag is driven the same way: ``pirag-mcp --socket ... --project ...`` against the live daemon.
"""

from __future__ import annotations

import json
import os
import re
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .onnx_export import cached_export, place
from .peer_venv import PeerUnavailable, PeerVenv

__all__ = ["PeerUnavailable", "Product", "PiragMcp", "products", "prepare_model"]

LOCK_ERRORS = re.compile(r"database is locked|database table is locked|SQLITE_BUSY|database is busy|"
                         r"locked by another|could not obtain lock|resource temporarily unavailable", re.I)
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "ANONYMIZED_TELEMETRY": "False", "DO_NOT_TRACK": "1", "POSTHOG_DISABLED": "1",
               "TOKENIZERS_PARALLELISM": "false"}


@dataclass
class Product(PeerVenv, ABC):
    """One MCP product: its pinned distribution (installed by PeerVenv), how to start one session, and its
    store/recall tools."""

    label: str = ""
    notes: list[str] = field(default_factory=list)

    # ---------------------------------------------------------------------------------------- sessions

    def prepare_home(self, home: Path, model_dir: Path) -> None:
        """Put the ONNX model where this product looks under ``home``."""

    @abstractmethod
    def command(self, home: Path, data: Path, namespace: str) -> tuple[str, list[str], dict[str, str]]:
        """The product's MCP server: (program, arguments, environment)."""

    def base_env(self, home: Path) -> dict[str, str]:
        """The caller's environment, offline, with a private HOME (thread counts are left at the product's own
        defaults: that is how a user runs it)."""
        env = {key: value for key, value in os.environ.items() if not key.startswith(("PIRAG_", "VIRTUAL_ENV"))}
        env.update(OFFLINE_ENV)
        env.update({"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"),
                    "XDG_CONFIG_HOME": str(home / ".config"), "XDG_DATA_HOME": str(home / ".local" / "share")})
        env["PATH"] = f"{self.venv / 'bin'}:{env.get('PATH', '')}"
        return env

    async def setup(self, session: Any, namespace: str) -> None:
        """Anything a namespace needs before the first store (a collection, a project)."""

    @abstractmethod
    def store_call(self, text: str, index: int, namespace: str) -> tuple[str, dict[str, Any]]:
        """The MCP tool call that stores memory ``index``: (tool, arguments)."""

    @abstractmethod
    def recall_call(self, query: str, k: int, namespace: str) -> tuple[str, dict[str, Any]]:
        """The MCP tool call that recalls ``k`` memories for ``query``: (tool, arguments)."""

    # LoCoMo ingest: turns per store call. 1 = one memory per call, as an agent stores; a product whose tool
    # takes a list and whose single calls are slow gets batches (that only helps it)
    locomo_batch = 1

    def store_batch_call(self, texts: list[str], first_index: int, namespace: str) -> tuple[str, dict[str, Any]]:
        """One call storing several memories; only products with ``locomo_batch > 1`` are asked for it."""
        raise TypeError(f"{type(self).__name__} stores one memory per call (locomo_batch = 1)")

    def result_keys(self, content: str, index: int, namespace: str) -> list[str]:
        """The strings that show memory ``index`` in a recall's text: its content, plain or JSON-escaped."""
        return list(dict.fromkeys([content, json.dumps(content)[1:-1],
                                   json.dumps(content, ensure_ascii=False)[1:-1]]))


class PiragMcp(Product):
    """pirag through ``pirag-mcp`` and the live daemon (``remember`` / ``recall``)."""

    def __init__(self, socket: str):
        super().__init__("pirag", "", "", label="pirag (pirag-mcp + daemon)")
        self.socket = socket

    def install(self, timeout: float | None = None) -> float:
        bridge = Path(sys.executable).with_name("pirag-mcp")
        if not bridge.exists():
            raise PeerUnavailable(f"pirag-mcp is not installed beside {sys.executable}")
        return 0.0

    def command(self, home: Path, data: Path, namespace: str) -> tuple[str, list[str], dict[str, str]]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PIRAG_")}
        return (str(Path(sys.executable).with_name("pirag-mcp")),
                ["--socket", self.socket, "--project", namespace], env)

    def store_call(self, text: str, index: int, namespace: str) -> tuple[str, dict[str, Any]]:
        return "remember", {"content": text, "max_chars": 200}

    def recall_call(self, query: str, k: int, namespace: str) -> tuple[str, dict[str, Any]]:
        return "recall", {"query": query, "k": k, "include_global": False, "max_chars": 200_000}


class McpMemoryService(Product):
    """mcp-memory-service-lite (doobidoo): ``memory server`` over stdio, sqlite-vec storage, ONNX embeddings."""

    def __init__(self) -> None:
        super().__init__("mcp-memory-service-lite", "12.4.0", "mcp-memory-service-lite==12.4.0",
                         needs_sqlite_extensions=True, label="mcp-memory-service-lite 12.4.0")

    def prepare_home(self, home: Path, model_dir: Path) -> None:
        place(model_dir, home / ".cache" / "mcp_memory" / "onnx_models" / "all-MiniLM-L6-v2")

    def command(self, home: Path, data: Path, namespace: str) -> tuple[str, list[str], dict[str, str]]:
        env = self.base_env(home)
        base = data / namespace
        env.update({"MCP_MEMORY_STORAGE_BACKEND": "sqlite_vec", "MCP_MEMORY_USE_ONNX": "1",
                    "MCP_MEMORY_ONNX_ALLOW_DOWNLOAD": "0", "MCP_MEMORY_BASE_DIR": str(base),
                    "MCP_MEMORY_SQLITE_PATH": str(base / "sqlite_vec.db"),
                    "MCP_MEMORY_BACKUPS_PATH": str(base / "backups"), "MCP_CONSOLIDATION_ENABLED": "false",
                    "MCP_MDNS_ENABLED": "false", "MCP_HTTP_ENABLED": "false", "LOG_LEVEL": "WARNING"})
        return str(self.venv / "bin" / "memory"), ["server"], env

    def store_call(self, text: str, index: int, namespace: str) -> tuple[str, dict[str, Any]]:
        return "memory_store", {"content": text, "tags": [namespace]}

    def recall_call(self, query: str, k: int, namespace: str) -> tuple[str, dict[str, Any]]:
        return "memory_search", {"query": query, "limit": k}


class ChromaMcp(Product):
    """chroma-mcp (chroma-core): a persistent Chroma directory, chromadb's default ONNX embedding function."""

    def __init__(self) -> None:
        # chroma-mcp 0.2.6 pins mcp==1.6.0, which imports a pydantic internal (eval_type_backport) that
        # pydantic 2.12 removed: with today's pydantic it dies at start; 2.11 is what it was released with
        super().__init__("chroma-mcp", "0.2.6", "chroma-mcp==0.2.6", label="chroma-mcp 0.2.6",
                         pins=("pydantic==2.11.10",))

    def prepare_home(self, home: Path, model_dir: Path) -> None:
        place(model_dir, home / ".cache" / "chroma" / "onnx_models" / "all-MiniLM-L6-v2")

    def command(self, home: Path, data: Path, namespace: str) -> tuple[str, list[str], dict[str, str]]:
        env = self.base_env(home)
        return (str(self.venv / "bin" / "chroma-mcp"),
                ["--client-type", "persistent", "--data-dir", str(data / "chroma")], env)

    async def setup(self, session: Any, namespace: str) -> None:
        result = await session.call_tool("chroma_create_collection", {"collection_name": namespace})
        text = " ".join(getattr(part, "text", "") for part in result.content)
        if result.isError and "already exists" not in text:
            raise RuntimeError(f"chroma_create_collection failed: {text[:300]}")

    # one chroma_add_documents call costs ~1 s here whatever its size (measured 2026-12-01: the tool builds
    # its client and embedding function per call), so LoCoMo's turns go in 50 per call
    locomo_batch = 50

    def store_call(self, text: str, index: int, namespace: str) -> tuple[str, dict[str, Any]]:
        return self.store_batch_call([text], index, namespace)

    def store_batch_call(self, texts: list[str], first_index: int, namespace: str) -> tuple[str, dict[str, Any]]:
        return "chroma_add_documents", {"collection_name": namespace, "documents": texts,
                                        "ids": [f"m{first_index + i}" for i in range(len(texts))]}

    def recall_call(self, query: str, k: int, namespace: str) -> tuple[str, dict[str, Any]]:
        return "chroma_query_documents", {"collection_name": namespace, "query_texts": [query], "n_results": k}


class BasicMemory(Product):
    """basic-memory: Markdown notes in a project directory, SQLite FTS5 + fastembed vectors (hybrid search)."""

    FASTEMBED_REPO = "models--Qdrant--all-MiniLM-L6-v2-onnx"
    REVISION = "pirag-export"

    def __init__(self) -> None:
        super().__init__("basic-memory", "0.24.1", "basic-memory==0.24.1", minimum_python=(3, 12),
                         label="basic-memory 0.24.1")

    def prepare_home(self, home: Path, model_dir: Path) -> None:
        # fastembed reads the Hugging Face hub cache layout (refs/main -> snapshots/<revision>/...)
        repo = home / "fastembed_cache" / self.FASTEMBED_REPO
        place(model_dir, repo / "snapshots" / self.REVISION, with_onnx_subdir=False)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(self.REVISION)

    def command(self, home: Path, data: Path, namespace: str) -> tuple[str, list[str], dict[str, str]]:
        env = self.base_env(home)
        project = data / namespace / "notes"     # one project per namespace: LoCoMo conversations stay apart
        project.mkdir(parents=True, exist_ok=True)
        # BASIC_MEMORY_HOME makes the default "main" project; BASIC_MEMORY_CONFIG_DIR keeps config and the
        # SQLite index private to this run
        env.update({"BASIC_MEMORY_HOME": str(project), "BASIC_MEMORY_CONFIG_DIR": str(data / namespace / "config"),
                    "BASIC_MEMORY_SEMANTIC_EMBEDDING_MODEL": "sentence-transformers/all-MiniLM-L6-v2",
                    "BASIC_MEMORY_SEMANTIC_EMBEDDING_CACHE_DIR": str(home / "fastembed_cache"),
                    "FASTEMBED_CACHE_PATH": str(home / "fastembed_cache"),
                    "BASIC_MEMORY_SEMANTIC_EMBEDDING_THREADS": "1",
                    "BASIC_MEMORY_LOG_LEVEL": "WARNING", "BASIC_MEMORY_NO_PROMOS": "1",
                    "BASIC_MEMORY_CLOUD_MODE": "false"})
        return str(self.venv / "bin" / "basic-memory"), ["mcp"], env

    def store_call(self, text: str, index: int, namespace: str) -> tuple[str, dict[str, Any]]:
        return "write_note", {"title": self.title(index, namespace), "content": text, "directory": namespace}

    @staticmethod
    def title(index: int, namespace: str) -> str:
        return f"note-{namespace}-{index:05d}"

    def result_keys(self, content: str, index: int, namespace: str) -> list[str]:
        # search_notes answers with titles and snippets, not whole notes: the title names the memory
        return [self.title(index, namespace)] if index >= 0 else []

    def recall_call(self, query: str, k: int, namespace: str) -> tuple[str, dict[str, Any]]:
        return "search_notes", {"query": query, "page_size": k}


def products() -> list[Product]:
    return [McpMemoryService(), ChromaMcp(), BasicMemory()]


def prepare_model() -> Path:
    """The cached ONNX export every product is given (raises PeerUnavailable when it cannot be made)."""
    try:
        return cached_export()
    except Exception as exc:  # noqa: BLE001 - any failure is the reason every ONNX peer is skipped
        raise PeerUnavailable(f"the ONNX export of all-MiniLM-L6-v2 failed: {type(exc).__name__}: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    """``python -m pirag.stress.product_peers install``: install every product and the sentence-transformers peer now
    (CI does it before the tests)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv != ["install"]:
        print("usage: python -m pirag.stress.product_peers install", file=sys.stderr)
        return 2
    failed = 0
    for product in products():
        try:
            seconds = product.install()
            print(f"{product.requirement}: {'already installed' if not seconds else f'installed in {seconds:.0f} s'}"
                  f" ({product.venv})", flush=True)
        except PeerUnavailable as exc:
            failed += 1
            print(f"{product.requirement}: NOT INSTALLED: {exc}", flush=True)
    from .peers import SENTENCE_TRANSFORMERS     # the embedding comparison's torch peer, in its own venv too
    try:
        seconds = SENTENCE_TRANSFORMERS.install()
        done = "already installed" if not seconds else f"installed in {seconds:.0f} s"
        print(f"{SENTENCE_TRANSFORMERS.requirement}: {done} ({SENTENCE_TRANSFORMERS.venv})", flush=True)
    except PeerUnavailable as exc:
        failed += 1
        print(f"{SENTENCE_TRANSFORMERS.requirement}: NOT INSTALLED: {exc}", flush=True)
    try:
        print(f"ONNX export: {prepare_model()}")
    except PeerUnavailable as exc:
        failed += 1
        print(f"ONNX export: FAILED: {exc}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
