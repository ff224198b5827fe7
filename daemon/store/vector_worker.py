"""The vector-index worker process: every Chroma call of the daemon runs here, never in the daemon itself.

Chroma's Rust upsert holds the GIL for its whole run, and on a full disk one upsert never returned and froze
the daemon (DESIGN.md: Threads, processes and the event loop). In a process of its own a slow call only slows
the index, and a stuck or crashed one is killed and replaced by the supervisor in ``vectors.py``.

This module owns both ends of the worker's wire and the worker's side of it:

- **Framing.** 4-byte big-endian length, then one msgpack map (msgspec). Requests ``{id, op, args}``; replies
  ``{id, result}`` or ``{id, error: {kind, type, message}}``. Vectors travel as ``{"data": bytes, "shape":
  [n, d]}`` of little-endian float32, never as lists of floats.
- **Error kinds.** ``not_found``, ``storage_full``, ``storage_error`` (read-only, I/O error) or ``failed``:
  the supervisor turns them into the client's error classes with the directory and its free bytes.
- **The Chroma client.** An embedded ``PersistentClient`` at the given path (``chroma``) or an ``HttpClient``
  (``chroma-http``); a directory that cannot be opened is moved aside (``chroma.broken-<time>``) and started
  afresh; segment directories of deleted collections are removed (chroma-core/chroma#5259). After a drop the
  supervisor replaces this process: only a process exit gives back what Chroma keeps of a dropped collection
  (chroma-core/chroma#3296).

Started as ``python -m pirag.daemon.store.vector_worker --fd N --settings JSON`` (a fresh interpreter: the
daemon is threaded, so fork is not an option). It exits when the socket closes or its parent dies.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import sqlite3
import struct
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from .. import memtrim

log = logging.getLogger("pirag.vector_worker")

HEADER = struct.Struct(">I")
MAX_FRAME = 512 << 20          # a rebuild batch of 5461 x 4096-dim vectors still fits
DEFAULT_MAX_BATCH = 5461       # chromadb 1.5's documented default

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()
# Chroma 1.5's persisted HNSW header (hnsw-local-persisted segments): a format version, then hnswlib's fields.
_HNSW_HEADER = struct.Struct("<iQQQQQQiiQQQdQ")
_UUID_DIR = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


# -- the wire (both ends) -------------------------------------------------------------------------------------

def encode_frame(message: dict[str, Any]) -> bytes:
    body = _encoder.encode(message)
    return HEADER.pack(len(body)) + body


def decode_body(body: bytes) -> dict[str, Any]:
    return _decoder.decode(body)


def pack_vectors(vectors: np.ndarray) -> dict[str, Any]:
    matrix = np.ascontiguousarray(vectors, dtype="<f4")
    return {"data": matrix.tobytes(), "shape": list(matrix.shape)}


def unpack_vectors(packed: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(packed["data"], dtype="<f4").reshape(packed["shape"])


def error_kind(exc: BaseException) -> str:
    """Sort a Chroma/OS failure into the kinds the supervisor maps to stable error codes."""
    text = f"{type(exc).__name__} {exc}".lower()
    errno_value = getattr(exc, "errno", None)
    if errno_value in (28, 122) or "disk is full" in text or "no space left" in text or "quota" in text:
        return "storage_full"
    if errno_value in (5, 30) or "readonly" in text or "read-only" in text or "disk i/o error" in text:
        return "storage_error"
    if "notfound" in text.replace(" ", "") or "does not exist" in text or "not found" in text:
        return "not_found"
    return "failed"


# -- the worker's side ------------------------------------------------------------------------------------------

class ChromaHost:
    """The Chroma client and its open collections; one method per op of the wire."""

    def __init__(self, settings: dict[str, Any]):
        self.backend: str = settings["backend"]
        self.path = Path(settings["path"])
        self.host: str = settings.get("host", "127.0.0.1")
        self.port: int = int(settings.get("port", 8000))
        self.client: Any = None
        self.collections: dict[str, Any] = {}
        self.max_batch = DEFAULT_MAX_BATCH
        self.dirs_removed = 0
        self.set_aside_dirs = 0
        # glibc keeps what Chroma frees (a compaction drops a whole collection) in its malloc arenas: trimmed
        # between two requests every trim_interval_s (server.malloc_trim_interval_s), as the daemon does
        self.trim_interval_s = float(settings.get("trim_interval_s", 0.0))
        self.trims = 0
        self._last_trim = time.monotonic()

    # lifecycle

    def open(self) -> dict[str, Any]:
        import chromadb
        from chromadb.config import Settings

        settings = Settings(anonymized_telemetry=False, allow_reset=False)
        if self.backend == "chroma-http":
            self.client = chromadb.HttpClient(host=self.host, port=self.port, settings=settings)
        else:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o750)
            try:
                self.client = chromadb.PersistentClient(path=str(self.path), settings=settings)
                self.client.list_collections()
            except Exception as exc:
                if error_kind(exc) in ("storage_full", "storage_error"):
                    raise  # not damage: moving the index aside would not help
                aside = self.path.with_name(f"chroma.broken-{int(time.time())}")
                log.error("cannot open %s (%s); moving it to %s and starting an empty index (it is rebuilt "
                          "from SQLite)", self.path, exc, aside)
                self.client = None
                _forget_shared_system(str(self.path))
                self.path.rename(aside)
                self.path.mkdir(mode=0o750)
                self.set_aside_dirs += 1
                self.client = chromadb.PersistentClient(path=str(self.path), settings=settings)
            self._remove_orphan_segment_dirs()
        try:
            self.max_batch = int(self.client.get_max_batch_size())
        except Exception:  # older servers: keep the documented default
            self.max_batch = DEFAULT_MAX_BATCH
        return self.info()

    def info(self) -> dict[str, Any]:
        return {"max_batch": self.max_batch, "pid": os.getpid(), "dirs_removed": self.dirs_removed,
                "set_aside_dirs": self.set_aside_dirs, "trims": self.trims}

    def maybe_trim(self) -> None:
        """Between two requests (the daemon waits for none meanwhile): ``malloc_trim(0)`` once the interval
        has passed since the last one. A few milliseconds."""
        if self.trim_interval_s <= 0 or time.monotonic() - self._last_trim < self.trim_interval_s:
            return
        self._last_trim = time.monotonic()
        if memtrim.trim():
            self.trims += 1

    def close(self) -> None:
        self.collections.clear()
        client, self.client = self.client, None
        if client is not None:
            try:  # releases the sqlite/HNSW handles of the embedded system (or the HTTP session)
                client.close()
            except Exception:
                log.debug("closing the Chroma client failed", exc_info=True)

    def _collection(self, name: str, create: bool) -> Any:
        collection = self.collections.get(name)
        if collection is not None:
            return collection
        if create:
            collection = self.client.get_or_create_collection(name, metadata={"hnsw:space": "cosine"})
        else:
            try:
                collection = self.client.get_collection(name)
            except Exception as exc:
                if error_kind(exc) == "not_found":
                    return None
                raise
        self.collections[name] = collection
        return collection

    # ops

    def op_upsert(self, name: str, ids: list[str], vectors: dict[str, Any],
                  metadatas: list[dict[str, Any]] | None) -> None:
        matrix = unpack_vectors(vectors)
        collection = self._collection(name, create=True)
        step = self.max_batch
        for start in range(0, len(ids), step):
            part = slice(start, start + step)
            if metadatas is not None:
                collection.upsert(ids=ids[part], embeddings=matrix[part], metadatas=metadatas[part])
            else:
                collection.upsert(ids=ids[part], embeddings=matrix[part])

    def op_query_many(self, name: str, vectors: dict[str, Any], k: int,
                      where: dict[str, Any] | None) -> list[list[tuple[str, float]]]:
        """Several query vectors in one Chroma call: one hit list each, nearest first."""
        matrix = unpack_vectors(vectors)
        matrix = matrix.reshape(-1, matrix.shape[-1])
        collection = self._collection(name, create=False)
        if collection is None or k <= 0:
            return [[] for _ in range(len(matrix))]
        result = collection.query(query_embeddings=matrix, n_results=k, where=where, include=["distances"])
        ids = result["ids"] or [[] for _ in range(len(matrix))]
        distances = result.get("distances") or [[0.0] * len(row) for row in ids]
        return [[(id_, float(distance)) for id_, distance in zip(row_ids, row_distances)]
                for row_ids, row_distances in zip(ids, distances)]

    def op_delete(self, name: str, ids: list[str]) -> None:
        collection = self._collection(name, create=False)
        if collection is None:
            return
        for start in range(0, len(ids), self.max_batch):
            collection.delete(ids=ids[start:start + self.max_batch])

    def op_count(self, name: str) -> int:
        collection = self._collection(name, create=False)
        return 0 if collection is None else int(collection.count())

    def op_drop(self, name: str) -> dict[str, Any]:
        """Delete the collection. Chroma's embedded (Rust) frontend keeps a deleted collection's HNSW files open,
        and its memory, with no eviction API (chroma-core/chroma#3296, #3336), and closing and re-opening the
        client gave the descriptors back but not the memory: the supervisor replaces this process after a drop,
        and its successor's ``open`` removes the segment directory (chroma-core/chroma#5259)."""
        self.collections.pop(name, None)
        try:
            self.client.delete_collection(name)
        except Exception as exc:
            if error_kind(exc) != "not_found":
                raise
        return self.info()

    def op_check(self, name: str) -> list[str]:
        """What is wrong with the collection's HNSW files on disk; empty when nothing is (or none exist yet).

        Chroma counts from its catalogue and loads the graph lazily, so a truncated or garbled HNSW file
        passes ``count`` and then answers queries wrongly or crashes this process; its sizes give it away first.
        """
        if self.backend != "chroma":
            return []
        catalogue = self.path / "chroma.sqlite3"
        try:
            conn = sqlite3.connect(f"file:{catalogue}?mode=ro", uri=True, timeout=5)
            try:
                rows = conn.execute("SELECT s.id FROM segments s JOIN collections c ON s.collection = c.id "
                                    "WHERE c.name = ? AND s.scope = 'VECTOR'", (name,)).fetchall()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            return [f"Chroma's catalogue cannot be read: {exc}"]
        problems: list[str] = []
        for (segment_id,) in rows:
            problems.extend(hnsw_problems(self.path / segment_id))
        return problems

    def op_list(self) -> list[str]:
        return [collection.name for collection in self.client.list_collections()]

    def op_info(self) -> dict[str, Any]:
        return self.info()

    def op_stall(self, seconds: float) -> None:
        """Test-only: behave like the upsert that never returned on a full disk."""
        time.sleep(seconds)

    def _remove_orphan_segment_dirs(self) -> None:
        """Remove segment directories that Chroma's catalogue no longer knows (chroma-core/chroma#5259)."""
        catalogue = self.path / "chroma.sqlite3"
        if not catalogue.exists():
            return
        try:
            conn = sqlite3.connect(f"file:{catalogue}?mode=ro", uri=True, timeout=5)
            try:
                live = {row[0] for row in conn.execute("SELECT id FROM segments")}
            finally:
                conn.close()
        except sqlite3.Error:
            log.warning("cannot read Chroma's catalogue; leaving segment directories alone", exc_info=True)
            return
        for entry in self.path.iterdir():
            if entry.is_dir() and _UUID_DIR.match(entry.name) and entry.name not in live:
                shutil.rmtree(entry, ignore_errors=True)
                self.dirs_removed += 1
                log.info("removed the leftover segment directory %s", entry.name)


def hnsw_problems(directory: Path) -> list[str]:
    """Inconsistencies between a persisted HNSW segment's header and the sizes of its files."""
    names = ("header.bin", "data_level0.bin", "length.bin", "link_lists.bin")
    present = [name for name in names if (directory / name).exists()]
    if not present:
        return []  # not persisted yet (Chroma writes the files once enough vectors arrived)
    missing = [name for name in names if name not in present]
    if missing:
        return [f"{directory.name}: missing {', '.join(missing)}"]
    header = (directory / "header.bin").read_bytes()
    if len(header) != _HNSW_HEADER.size:
        return [f"{directory.name}/header.bin is {len(header)} bytes, not {_HNSW_HEADER.size}"]
    (_, offset_level0, max_elements, count, element_size, label_offset, data_offset, max_level, entry_point,
     max_m, max_m0, m, mult, _ef) = _HNSW_HEADER.unpack(header)
    sane = (offset_level0 == 0 and count <= max_elements < 1 << 40 and 0 < element_size < 1 << 24
            and label_offset < element_size and data_offset < element_size and -1 <= max_level < 64
            and (0 <= entry_point < count if count else entry_point == -1) and 0 < m <= max_m0 < 1 << 16 and max_m < 1 << 16
            and math.isfinite(mult) and 0 < mult < 16)
    if not sane:
        return [f"{directory.name}/header.bin holds impossible values"]
    problems = []
    data_size = (directory / "data_level0.bin").stat().st_size
    if data_size not in (count * element_size, max_elements * element_size):
        problems.append(f"{directory.name}/data_level0.bin is {data_size} bytes, the header says "
                        f"{count} x {element_size}")
    lengths_size = (directory / "length.bin").stat().st_size   # one float32 norm per element
    if lengths_size not in (4 * count, 4 * max_elements):
        problems.append(f"{directory.name}/length.bin is {lengths_size} bytes for {count} elements")
    # link_lists.bin: per element a uint32 byte size, then that many bytes of upper-level links
    links = (directory / "link_lists.bin").read_bytes()
    position = entries = 0
    while entries < count and position + 4 <= len(links):
        position += 4 + int.from_bytes(links[position:position + 4], "little")
        entries += 1
    if entries != count or position != len(links):
        problems.append(f"{directory.name}/link_lists.bin is {len(links)} bytes; its {count} entries need "
                        f"{position if position <= len(links) else 'more'}")
    return problems


def _forget_shared_system(identifier: str) -> None:
    # chromadb caches one System per directory; one that failed to start stays cached and broken
    # (and its stop() raises), so a fresh client on the same path would inherit it.
    from chromadb.api.shared_system_client import SharedSystemClient

    SharedSystemClient._identifier_to_system.pop(identifier, None)  # noqa: SLF001
    SharedSystemClient._identifier_to_refcount.pop(identifier, None)  # noqa: SLF001


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(min(size - len(chunks), 1 << 20))
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)


def serve(sock: socket.socket, host: ChromaHost) -> None:
    """Answer requests one at a time until the socket closes or a ``close`` request arrives."""
    while True:
        header = _read_exactly(sock, HEADER.size)
        if header is None:
            return
        (length,) = HEADER.unpack(header)
        if length > MAX_FRAME:
            log.error("a %d-byte request frame is over the limit; exiting", length)
            return
        body = _read_exactly(sock, length)
        if body is None:
            return
        request = decode_body(body)
        op, request_id = request.get("op"), request.get("id")
        if op == "close":
            host.close()
            sock.sendall(encode_frame({"id": request_id, "result": None}))
            return
        try:
            handler = getattr(host, f"op_{op}", None) if op != "open" else host.open
            if handler is None:
                raise ValueError(f"unknown vector-index op {op!r}")
            reply: dict[str, Any] = {"id": request_id, "result": handler(**request.get("args", {}))}
        except Exception as exc:
            kind = error_kind(exc)
            if kind != "not_found":
                log.warning("%s failed: %s: %s", op, type(exc).__name__, exc)
            reply = {"id": request_id, "error": {"kind": kind, "type": type(exc).__name__, "message": str(exc)}}
        sock.sendall(encode_frame(reply))
        host.maybe_trim()


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: if the daemon is killed (kill -9, OOM) while this worker is busy, the worker goes too
    # instead of holding the Chroma directory open for a daemon that restarts.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pirag-vector-worker")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--settings", required=True)
    parser.add_argument("--log-level", default="info")
    options = parser.parse_args(argv)
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the daemon decides when this process ends
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    from ..log import setup_logging

    setup_logging(options.log_level)
    settings = json.loads(options.settings)
    memtrim.limit_arenas(int(settings.get("arena_max", 0)))   # before Chroma's threads exist (memtrim.py)
    # Imported before the first request: a worker started to replace a running one (``VectorIndex._recycle``)
    # does its slow part while the old one still serves.
    import chromadb  # noqa: F401

    sock = socket.socket(fileno=options.fd)
    host = ChromaHost(settings)
    try:
        serve(sock, host)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the daemon went away (or stopped waiting for a reply): nothing left to answer
    finally:
        host.close()
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
