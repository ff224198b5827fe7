"""``pirag-stress compare``: pirag side by side with the peers a user could run instead, in one run.

    pirag-stress compare [--quick] [--socket PATH] [--json FILE]
    pirag-stress compare --products [--quick] [--allow-missing] ...   (MCP memory products: see products.py)

Against the live daemon (client library only; never daemon code) and, with the same GGUF file and the same
thread count as the daemon's pool (contexts x threads per context) and the daemon's llama.cpp model parameters
(``use_extra_bufts``, from its status: see ``llama_peer``; defaults would crash on Intel AMX hosts):

1. naive llama-cpp-python in-process: ``Llama(embedding=True)`` defaults, one text per call (in a child process);
2. llama-cpp-python's OpenAI-compatible server (``python -m llama_cpp.server --embedding true``, 127.0.0.1,
   started through ``llama_peer``'s launcher):
   throughput and latency under 1 and 20 concurrent clients, beside pirag's ``embed`` under the same load;
3. Chroma's own server (``chroma run``, 127.0.0.1) holding the same vectors as a pirag project of the same size,
   queried over HTTP with a ready query vector, beside pirag's ``search`` over its socket: cache miss (query
   embedding included), query vector cached but no result cache, and result cache hit;
4. sentence-transformers on the same checkpoint, batch 64 (only when torch is importable), and ONNX Runtime on a
   torch-free ONNX export of it (onnx_export.py), batch 32 and short queries, beside pirag's batch-32 ``embed``;
5. the bare uvloop + msgspec echo server over a Unix socket: the IPC floor under pirag's ``ping``.

Text is real: the Python standard library's sources on this machine, cut at line boundaries into chunks of
100-250 tokens (the model's own tokenizer). Every text carries a per-run tag so that no cache (pirag's
embedding cache included) ever answers a throughput measurement. Each peer is started and stopped here; a
peer that cannot run is reported as skipped with the reason, never dropped. Every loop is bounded in count and
in time. Absolute figures drift on a shared machine: read the ratios, measured minutes apart in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

from pirag.client import AsyncClient, Client
from pirag.client.paths import default_socket_path

from . import llama_peer, peers
from .ingest_bench import WORDS, stdlib_files
from .compare_report import PEER_NAMES, Report, compute_ratios, print_report
from .compare_search import search_phase
from .measure import ms, percentile, wait_ready
from .ping_bench import echo_vs_pirag
from .peer_venv import PeerUnavailable

QUICK = {"texts": 40, "collection": 200, "queries": 30, "pings": 2000, "rounds": 1, "max_seconds": 60.0}
FULL = {"texts": 80, "collection": 600, "queries": 100, "pings": 10000, "rounds": 2, "max_seconds": 150.0}


def latency_figures(latencies: list[float], elapsed: float, texts: int | None = None) -> dict[str, Any]:
    count = len(latencies) if texts is None else texts
    return {"requests": len(latencies), "texts": count, "seconds": round(elapsed, 3),
            "texts_per_s": round(count / elapsed, 2) if elapsed else 0.0,
            "p50_ms": ms(percentile(latencies, 50)), "p99_ms": ms(percentile(latencies, 99))}


# ------------------------------------------------------------------------------------------------- corpus

class Tokens:
    """Token counts with the daemon's own model vocabulary (llama.cpp, vocab only); chars/4 if unreadable."""

    def __init__(self, model_path: str):
        self.llm = None
        try:
            from llama_cpp import Llama

            from .llama_peer import load_cpu_backend

            load_cpu_backend()                   # a portable build loads no backend by itself
            self.llm = Llama(model_path=model_path, vocab_only=True, verbose=False)
            self.source = "model vocabulary"
        except Exception as exc:  # noqa: BLE001 - any failure falls back to an estimate, and says so
            self.source = f"estimated as chars/4 ({type(exc).__name__})"

    def __call__(self, text: str) -> int:
        if self.llm is None:
            return max(1, len(text) // 4)
        return len(self.llm.tokenize(text.encode("utf-8", "replace"), add_bos=False, special=False))


def build_chunks(count: int, tokens: Tokens, seed: int = 9, low: int = 100, high: int = 250) -> list[str]:
    """``count`` chunks of stdlib source, cut at line boundaries, each of ``low``-``high`` tokens."""
    files = [path for path in stdlib_files() if path.suffix == ".py"]
    random.Random(seed).shuffle(files)
    chunks: list[str] = []
    for path in files:
        try:
            lines = path.read_text("utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        current: list[str] = []
        size = 0
        target = random.Random(f"{seed}{path.name}").randint(low, high)
        for line in lines:
            cost = tokens(line) if line.strip() else 0
            if size + cost > high:
                if size >= low:
                    chunks.append("\n".join(current))
                current, size = [], 0
                target = random.Random(f"{seed}{path.name}{len(chunks)}").randint(low, high)
                if cost > high:
                    continue
            current.append(line)
            size += cost
            if size >= target:
                chunks.append("\n".join(current))
                current, size = [], 0
            if len(chunks) >= count:
                return chunks
    return chunks


def tagged(chunks: list[str], tag: str) -> list[str]:
    """The same texts made unique to one measurement (a one-line comment), so no cache answers them."""
    return [f"{chunk}\n# {tag}-{index}" for index, chunk in enumerate(chunks)]


# --------------------------------------------------------------------------------------------- measurements

async def pirag_embed_clients(socket: str, texts: list[str], clients: int, deadline: float) -> dict[str, Any]:
    """``clients`` connections, each embedding its share of ``texts`` one text per request."""
    connections = [await AsyncClient(socket, timeout=600).connect() for _ in range(clients)]
    latencies: list[float] = []

    async def drive(connection: AsyncClient, share: list[str]) -> None:
        for text in share:
            if time.monotonic() > deadline:
                return
            t0 = time.perf_counter()
            await connection.embed([text], format="f32")
            latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(drive(connection, texts[index::clients]) for index, connection in enumerate(connections)))
    elapsed = time.perf_counter() - started
    for connection in connections:
        await connection.close()
    return latency_figures(latencies, elapsed) | {"clients": clients}


async def pirag_embed_bulk(socket: str, texts: list[str], batch: int, deadline: float) -> dict[str, Any]:
    async with AsyncClient(socket, timeout=600) as client:
        latencies: list[float] = []
        done = 0
        started = time.perf_counter()
        for start in range(0, len(texts), batch):
            if time.monotonic() > deadline:
                break
            t0 = time.perf_counter()
            result = await client.embed(texts[start:start + batch], format="f32")
            latencies.append(time.perf_counter() - t0)
            done += result.count
        elapsed = time.perf_counter() - started
    return latency_figures(latencies, elapsed, texts=done) | {"batch": batch}


async def server_embed_clients(port: int, texts: list[str], clients: int, deadline: float) -> dict[str, Any]:
    """The llama-cpp-python server: ``clients`` keep-alive connections, one text per POST /v1/embeddings."""
    connections = [await peers.HttpConnection(port).connect() for _ in range(clients)]
    latencies: list[float] = []
    errors: list[str] = []

    async def drive(connection: peers.HttpConnection, share: list[str]) -> None:
        for text in share:
            if time.monotonic() > deadline:
                return
            t0 = time.perf_counter()
            status, body = await connection.request("POST", "/v1/embeddings", {"input": text})
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                errors.append(f"HTTP {status}: {body[:200]!r}")
                return

    started = time.perf_counter()
    await asyncio.gather(*(drive(connection, texts[index::clients]) for index, connection in enumerate(connections)))
    elapsed = time.perf_counter() - started
    for connection in connections:
        connection.close()
    if errors:
        raise RuntimeError(f"llama-cpp-python server answered {errors[0]}")
    return latency_figures(latencies, elapsed) | {"clients": clients}


def echo_floor(socket: str, pings: int) -> dict[str, Any]:
    return echo_vs_pirag(socket, pings, rounds=2)  # best of two alternating rounds


# ------------------------------------------------------------------------------------------------- the run

def machine() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key = line.split(":", 1)[0].strip().lower()
            if key in ("model name", "hardware") or (key == "model" and not line.split(":", 1)[1].strip().isdigit()):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = 0
    try:
        memory = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return {"host": platform.node(), "cpu": model, "arch": platform.machine(), "cpus": len(os.sched_getaffinity(0)),
            "memory_gib": round(memory / (1 << 30), 1), "python": platform.python_version(),
            "kernel": platform.release()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = dict(QUICK if args.quick else FULL)
    for key in ("texts", "collection", "queries", "pings", "rounds"):
        if getattr(args, key):
            sizes[key] = getattr(args, key)
    report = Report()
    data = report.data
    nonce = f"{os.getpid()}{int(time.time()) % 100000}"
    data.update({"time": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine(),
                 "command": "pirag-stress compare" + (" --quick" if args.quick else ""), "quick": args.quick,
                 "sizes": sizes, "load_average_start": [round(x, 2) for x in os.getloadavg()]})
    socket = args.socket

    with Client(socket, timeout=600) as client:
        wait_ready(client)
        status = client.status()
        embed = status.components.get("embed", {})
        model = embed.get("model", {})
        threads = int(embed.get("contexts", 1)) * int(embed.get("threads_per_context", 1))
        model_path = model.get("path", "")
        data["model"] = {"id": model.get("model_id"), "path": model_path, "dims": model.get("dims"),
                         "quantization": model.get("quantization"), "max_tokens": model.get("max_tokens")}
        data["threads"] = {"pirag_contexts": embed.get("contexts"), "pirag_threads_per_context":
                           embed.get("threads_per_context"), "peers": threads}
        data["pirag"]["config"] = {"flash_attn": embed.get("flash_attn"), "batch_tokens": embed.get("batch_tokens"),
                                   "embed_cache_capacity": embed.get("cache", {}).get("capacity")}
        model_readable = bool(model_path) and os.access(model_path, os.R_OK)
        model_params = llama_peer.daemon_model_params(embed)
        data["peer_model_params"] = model_params | {"source": "the daemon's status"}
        default_model = str(model.get("model_id", "")).startswith("all-MiniLM-L6-v2")
        print(f"pirag {status.version} pid {status.pid}: model {model.get('model_id')} "
              f"({model.get('quantization')}), {embed.get('contexts')} context(s) x "
              f"{embed.get('threads_per_context')} thread(s); peers get {threads} thread(s)", flush=True)

        tokens = Tokens(model_path) if model_readable else Tokens("")
        need = max(sizes["texts"], sizes["collection"])
        base = build_chunks(need, tokens)
        counts = [tokens(chunk) for chunk in base[:200]]
        data["corpus"] = {"source": f"{sysconfig.get_paths()['stdlib']} (*.py)", "chunks": len(base),
                          "tokens_mean": round(sum(counts) / max(1, len(counts)), 1),
                          "tokens_min": min(counts, default=0), "tokens_max": max(counts, default=0),
                          "token_counts": tokens.source}
        texts = base[:sizes["texts"]]
        warmup = tagged(base[-3:], f"w{nonce}")
        print(f"corpus: {len(base)} chunks of stdlib source, {data['corpus']['tokens_mean']} tokens on average "
              f"({tokens.source})", flush=True)
        cache_before = dict(embed.get("cache", {}))

        # 5. the IPC floor
        print("[1/5] IPC floor: pirag ping vs a bare uvloop+msgspec echo server", flush=True)
        try:
            floor = echo_floor(socket, sizes["pings"])
            report.peer_ok("echo_floor", floor["echo"])
            data["pirag"]["ping"] = floor["pirag"]
            data["ratios"]["ping_p50_pirag_over_echo"] = {
                clients: round(floor["pirag"][clients]["p50_us"] / floor["echo"][clients]["p50_us"], 2)
                for clients in floor["pirag"]}
        except Exception as exc:  # noqa: BLE001
            report.peer_skipped("echo_floor", f"{type(exc).__name__}: {exc}")

        max_s = sizes["max_seconds"]
        short_queries = [" ".join(random.Random(i).sample(WORDS, 5)) + f" q{nonce}{i}" for i in range(20)]
        query_latencies = []
        for query in short_queries:
            t0 = time.perf_counter()
            client.embed([query])
            query_latencies.append(time.perf_counter() - t0)
        data["pirag"]["short_query_embed_p50_ms"] = ms(percentile(query_latencies, 50))

        # 1. naive llama-cpp-python in-process (the daemon sits idle meanwhile)
        print(f"[2/5] embedding {len(texts)} texts: naive llama-cpp-python in-process, one text per call", flush=True)
        if not peers.module_available("llama_cpp"):
            report.peer_skipped("llama_cpp_naive", "llama-cpp-python is not installed")
        elif not model_readable:
            report.peer_skipped("llama_cpp_naive", f"the daemon's model file is not readable here: {model_path!r}")
        else:
            try:
                figures = peers.run_child("naive", {
                    "model": model_path, "threads": threads, "warmup": warmup, **model_params,
                    "texts": tagged(texts, f"n{nonce}"), "max_seconds": max_s,
                    "queries": [q + " naive" for q in short_queries]}, timeout=max_s + 120)
                if threads > 1:
                    # the same peer with one thread, as a second opinion: on a loaded machine llama.cpp's
                    # spinning thread barriers can make 2 threads far slower than 1
                    try:
                        figures["one_thread"] = peers.run_child("naive", {
                            "model": model_path, "threads": 1, "warmup": warmup, **model_params,
                            "texts": tagged(texts, f"n1{nonce}"), "max_seconds": max_s,
                            "queries": [q + " naive1" for q in short_queries]}, timeout=max_s + 120)
                    except Exception as exc:  # noqa: BLE001
                        figures["one_thread"] = {"error": str(exc)}
                report.peer_ok("llama_cpp_naive", figures)
            except Exception as exc:  # noqa: BLE001
                report.peer_skipped("llama_cpp_naive", str(exc))

        # 2. llama-cpp-python's OpenAI-compatible server vs pirag, 1 and 20 clients, alternated round by round
        print("[3/5] llama-cpp-python server (127.0.0.1) and pirag, 1 and 20 clients, alternated", flush=True)
        best: dict[tuple[str, int], dict[str, Any]] = {}

        def keep(name: str, clients: int, figures: dict[str, Any]) -> None:
            if (name, clients) not in best or figures["texts_per_s"] > best[name, clients]["texts_per_s"]:
                best[name, clients] = figures

        def pirag_round(round_number: int, clients: int) -> None:
            keep("pirag", clients, asyncio.run(pirag_embed_clients(
                socket, tagged(texts, f"p{clients}r{round_number}{nonce}"), clients, time.monotonic() + max_s)))

        missing = peers.llama_server_missing()
        server_up = False
        if missing:
            report.peer_skipped("llama_cpp_server", missing)
        elif not model_readable:
            report.peer_skipped("llama_cpp_server", f"the daemon's model file is not readable here: {model_path!r}")
        else:
            port = peers.free_port()
            argv = llama_peer.server_argv(sys.executable, model_params["use_extra_bufts"], [
                "--model", model_path, "--embedding", "true", "--host", "127.0.0.1", "--port", str(port),
                "--n_threads", str(threads), "--n_threads_batch", str(threads)])
            with tempfile.TemporaryDirectory(prefix="cmp-llama-", dir="/tmp") as directory:
                try:
                    with peers.ServerPeer("llama_cpp_server", argv, port, "/v1/models", Path(directory), 120) as peer:
                        server_up = True

                        async def warm() -> None:
                            connection = await peers.HttpConnection(port).connect()
                            for text in warmup:
                                await connection.request("POST", "/v1/embeddings", {"input": text})
                            connection.close()
                        asyncio.run(warm())
                        for round_number in range(sizes["rounds"]):
                            for clients in (1, 20):
                                keep("server", clients, asyncio.run(server_embed_clients(
                                    port, tagged(texts, f"s{clients}r{round_number}{nonce}"), clients,
                                    time.monotonic() + max_s)))
                                pirag_round(round_number, clients)
                        report.peer_ok("llama_cpp_server", {"1_client": best["server", 1],
                                                            "20_clients": best["server", 20]},
                                       argv=" ".join(argv[1:]), start_s=round(peer.start_s, 2),
                                       rounds=sizes["rounds"], model_params=model_params)
                except Exception as exc:  # noqa: BLE001
                    report.peer_skipped("llama_cpp_server", str(exc))
        if ("pirag", 20) not in best:
            print("      pirag alone, 1 and 20 clients", flush=True)
            for round_number in range(sizes["rounds"]):
                for clients in (1, 20):
                    pirag_round(round_number + (100 if server_up else 0), clients)
        data["pirag"]["embed_1_client"] = best["pirag", 1] | {"rounds": sizes["rounds"], "best": "texts/s"}
        data["pirag"]["embed_20_clients"] = best["pirag", 20] | {"rounds": sizes["rounds"], "best": "texts/s"}
        print("      pirag, batches of 64 per request", flush=True)
        data["pirag"]["embed_bulk_64"] = asyncio.run(
            pirag_embed_bulk(socket, tagged(texts, f"pb{nonce}"), 64, time.monotonic() + max_s))

        # 4. sentence-transformers on the same checkpoint
        print("[4/5] sentence-transformers, batch 64", flush=True)
        st_python = ""
        if not default_model:
            report.peer_skipped("sentence_transformers", f"the daemon runs {model.get('model_id')!r}, not the "
                                "embedded default: no sentence-transformers checkpoint of it here")
        else:
            try:
                st_python = peers.st_python()
            except PeerUnavailable as exc:
                report.peer_skipped("sentence_transformers", f"torch / sentence-transformers: {exc}")
        if st_python:
            with tempfile.TemporaryDirectory(prefix="cmp-st-", dir="/tmp") as directory:
                try:
                    checkpoint = peers.st_checkpoint(Path(directory))
                    figures = peers.run_child("st", {"checkpoint": str(checkpoint), "threads": threads,
                                                     "warmup": warmup, "texts": tagged(texts, f"t{nonce}")},
                                              timeout=max_s + 180, python=st_python)
                    first = figures.pop("first_vectors")
                    reference = client.embed(tagged(texts, f"t{nonce}")[:len(first)]).rows()
                    figures["cosine_vs_pirag_min"] = round(min(
                        sum(a * b for a, b in zip(u, v)) for u, v in zip(first, reference)), 5)
                    report.peer_ok("sentence_transformers", figures)
                except Exception as exc:  # noqa: BLE001
                    report.peer_skipped("sentence_transformers", str(exc))

        # 4b. ONNX Runtime on the torch-free ONNX export of the same checkpoint, batches of 32
        print("[4/5] ONNX Runtime (torch-free export of the same checkpoint), batch 32, and pirag batch 32",
              flush=True)
        data["pirag"]["embed_bulk_32"] = asyncio.run(
            pirag_embed_bulk(socket, tagged(texts, f"p32{nonce}"), 32, time.monotonic() + max_s))
        onnx_peer(client, report, texts, warmup, short_queries, threads, nonce, max_s, default_model,
                  int(model.get("max_tokens") or 256))

        status_after = client.status()
        cache_after = status_after.components.get("embed", {}).get("cache", {})
        data["pirag"]["embed_cache_hits_during_embedding"] = (cache_after.get("hits", 0)
                                                              - cache_before.get("hits", 0))

        # 3. search: pirag vs Chroma's own server on the same vectors
        print(f"[5/5] search over {sizes['collection']} chunks: pirag socket vs chroma run over HTTP", flush=True)
        search_phase(client, socket, report, tagged(base[:sizes["collection"]], f"c{nonce}"), sizes, nonce, max_s,
                     args.chroma)

    data["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    for name in PEER_NAMES:
        data["peers"].setdefault(name, {"status": "skipped", "reason": "not reached", "figures": {}})
    compute_ratios(report)
    return data


def onnx_peer(client: Client, report: Report, texts: list[str], warmup: list[str], queries: list[str], threads: int,
              nonce: str, max_s: float, default_model: bool, max_tokens: int) -> None:
    """ONNX Runtime (what chromadb's default embedding function, fastembed and mcp-memory-service-lite run)."""
    if not peers.module_available("onnxruntime") or not peers.module_available("onnx"):
        report.peer_skipped("onnxruntime", "onnx / onnxruntime are not installed: pip install 'pirag[compare]'")
        return
    if not default_model:
        report.peer_skipped("onnxruntime", "the daemon does not run the embedded all-MiniLM-L6-v2 default: no "
                            "checkpoint of its model here to export")
        return
    try:
        from .onnx_export import cached_export

        model_dir = cached_export()
        figures = peers.run_child("onnx", {"model_dir": str(model_dir), "threads": threads, "warmup": warmup,
                                           "texts": tagged(texts, f"o{nonce}"), "batch": 32, "max_seconds": max_s,
                                           "max_tokens": max_tokens, "queries": [q + " onnx" for q in queries]},
                                  timeout=max_s + 180)
        first = figures.pop("first_vectors")
        reference = client.embed(tagged(texts, f"o{nonce}")[:len(first)]).rows()
        figures["cosine_vs_pirag_min"] = round(min(sum(a * b for a, b in zip(u, v))
                                                   for u, v in zip(first, reference)), 5)
        report.peer_ok("onnxruntime", figures, model_dir=str(model_dir))
    except Exception as exc:  # noqa: BLE001
        report.peer_skipped("onnxruntime", str(exc))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--techniques" in argv:
        from . import techniques

        return techniques.main([arg for arg in argv if arg != "--techniques"])
    parser = argparse.ArgumentParser(prog="pirag-stress compare", description=__doc__.split("\n\n")[0],
                                     epilog="pirag-stress compare --techniques --help: each technique with and "
                                     "without it (temporary daemons)")
    parser.add_argument("--socket", default=str(default_socket_path()))
    parser.add_argument("--quick", action="store_true", help=f"small sizes {QUICK} (default {FULL})")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--texts", type=int, help="texts per embedding measurement")
    parser.add_argument("--collection", type=int, help="chunks in the search collection")
    parser.add_argument("--queries", type=int, help="search queries per measurement")
    parser.add_argument("--pings", type=int, help="ping round trips per measurement (IPC floor)")
    parser.add_argument("--rounds", type=int, help="alternated pirag/server rounds (best of each is kept)")
    parser.add_argument("--chroma", help="the chroma command to run (default: beside this Python, else on PATH)")
    parser.add_argument("--products", action="store_true",
                        help="instead: pirag vs the MCP memory products (mcp-memory-service-lite, chroma-mcp, "
                        "basic-memory) through their MCP tools; see products.py")
    from . import products

    products.add_arguments(parser.add_argument_group("--products options"))
    args = parser.parse_args(argv)
    if args.products:
        return products.main(args)
    data = run(args)
    print_report(data)
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=2))
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
