"""``pirag-stress``: one subcommand per benchmark or scenario, each in its own module (imported lazily)."""

from __future__ import annotations

import importlib
import sys

from pirag.client.errors import ConnectionFailed

# subcommand -> (module, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "ping": ("ping_bench", "ping round trip vs a bare uvloop+msgspec echo server (IPC floor)"),
    "embed-bench": ("embed_bench", "embedding throughput and latency vs naive llama-cpp-python (and torch)"),
    "ingest-bench": ("ingest_bench", "ingestion throughput and search latency over the socket"),
    "memory-bench": ("memory_bench", "remember/recall/log_episode/timeline latency and throughput"),
    "mcp-bench": ("mcp_bench", "MCP sessions: start-up, RSS, search via pirag-mcp, leak check, vs the old per-process bridge"),
    "concurrent": ("scenario_concurrent", "scenario: N clients at once on a realistic op mix"),
    "large-files": ("scenario_large_files", "scenario: 1 MB / 10 MB ingests while other clients search"),
    "load": ("scenario_load", "scenario: step the request rate up to the p99 knee"),
    "project-churn": ("scenario_churn", "scenario: create, fill, query, drop projects; nothing may be left"),
    "memory-leaks": ("scenario_leaks", "scenario: long mixed run, robust RSS slope per 10k ops"),
    "crash": ("scenario_crash", "scenario: SIGKILL the daemon (it starts its own) mid-ingest and mid-write, verify"),
    "anomaly-detection": ("scenario_anomaly", "scenario: inject faults, detect them with robust statistics"),
    "quick": ("scenario_quick", "all six scenarios, small (CI); `all` runs them at default size"),
    "all": ("scenario_all", "all six scenarios at default size (--quick: small)"),
    "latency": ("scenario_latency", "scenario: p50/p99 of interactive ops and loop lag, idle vs during 10 MB ingest"),
    "quality": ("quality", "retrieval quality (LoCoMo, code search, identifiers) per mode, R@k / MRR / p50"),
    "compare": ("compare", "pirag vs llama-cpp-python (naive, server), Chroma's server, sentence-transformers, echo"),
}


def usage() -> str:
    lines = ["usage: pirag-stress COMMAND [options]   (pirag-stress COMMAND --help for its options)", "",
             "commands:"]
    lines += [f"  {name:<18} {description}" for name, (_, description) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"pirag-stress: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"{__package__}.{COMMANDS[name][0]}")
    try:
        return int(module.main(rest) or 0)
    except ConnectionFailed as exc:     # no daemon at the socket: its message says where and how to start one
        print(f"pirag-stress: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
