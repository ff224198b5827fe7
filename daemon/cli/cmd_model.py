"""``pirag model import`` and ``pirag model info``: embedding model files (runs daemon code, no daemon needed)."""

from __future__ import annotations

import argparse
import json
import sys

from .common import EXIT_ERROR, EXIT_USAGE

MODEL_HELP = """\
pirag embeds text with a GGUF model file (BERT family: mean or CLS pooling). With embed.model empty it uses
the embedded default, all-MiniLM-L6-v2 (Q8_0, 384 dims), imported once into the state directory.

On a Raspberry Pi 5 the recommended model is bge-small-en-v1.5 in Q4_K_M (384 dims, 512 tokens, CLS pooling):

  1. Download a bge-small-en-v1.5 Q4_K_M GGUF file (e.g. from the Hugging Face hub), or make one from the
     sentence-transformers checkpoint directory on any machine, without torch:
         pirag model import ./bge-small-en-v1.5 --out bge-small-en-v1.5.Q4_K_M.gguf --quant q4_k_m
  2. Check it:      pirag model info bge-small-en-v1.5.Q4_K_M.gguf
  3. Put it where the daemon can read it, e.g. /var/lib/pirag/models/, and set in /etc/pirag/pirag.toml:
         [embed]
         model = "/var/lib/pirag/models/bge-small-en-v1.5.Q4_K_M.gguf"
  4. Restart the daemon (sudo systemctl restart pirag); `pirag status` shows the model id, dims and load time.

Vectors from different models are not comparable: after changing the model, re-embed what was ingested
(`pirag reindex`). See docs/EMBEDDINGS.md.
"""


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    model = subparsers.add_parser("model", parents=[common], help="import and inspect embedding model files",
                                  description=MODEL_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    model.set_defaults(func=lambda args: _help(model))
    commands = model.add_subparsers(dest="model_command", metavar="COMMAND")

    p = commands.add_parser(
        "import", parents=[common], help="convert a sentence-transformers checkpoint to GGUF (no torch needed)",
        description="Convert a BERT-family sentence-transformers checkpoint directory (model.safetensors, "
                    "config.json, tokenizer.json or vocab.txt, 1_Pooling/config.json, sentence_bert_config.json) "
                    "to a GGUF file llama.cpp loads. Pooling and max sequence length come from the checkpoint.")
    p.add_argument("source", metavar="SRC", help="the checkpoint directory")
    p.add_argument("--out", required=True, metavar="FILE", help="the GGUF file to write")
    p.add_argument("--quant", choices=["f16", "q8_0", "q4_k_m", "q4_0"], default="q8_0",
                   help="weights format (default q8_0; q4_k_m or q4_0 for a Pi: q4_0 uses llama.cpp's repacked "
                        "ARM path on a Pi 5)")
    p.set_defaults(func=_import)

    p = commands.add_parser("info", parents=[common], help="describe a GGUF model file",
                            description="Print a GGUF file's architecture, dimensions, pooling, max tokens, "
                                        "quantization and size.")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=_info)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return EXIT_USAGE


def _import(args: argparse.Namespace) -> int | None:
    from pirag.daemon.embed.checkpoint import CheckpointError
    from pirag.daemon.embed.importer import import_checkpoint

    progress = (lambda message: None) if args.json else (lambda message: print(message, file=sys.stderr))
    try:
        description = import_checkpoint(args.source, args.out, quant=args.quant, progress=progress)
    except CheckpointError as exc:
        print(f"pirag model import: {exc}", file=sys.stderr)
        return EXIT_ERROR
    _print_description(args, description)
    return None


def _info(args: argparse.Namespace) -> int | None:
    from pirag.daemon.embed.importer import describe

    try:
        description = describe(args.file)
    except (OSError, ValueError) as exc:
        print(f"pirag model info: {exc}", file=sys.stderr)
        return EXIT_ERROR
    _print_description(args, description)
    return None


def _print_description(args: argparse.Namespace, description) -> None:  # noqa: ANN001
    data = description.as_dict()
    if args.json:
        print(json.dumps(data))
        return
    data["size"] = f"{description.size_bytes / 1e6:.1f} MB"
    for key in ("path", "name", "architecture", "dims", "layers", "heads", "vocab", "pooling", "max_tokens",
                "context_length", "quantization", "size", "source_sha256"):
        if data.get(key) not in ("", None):
            print(f"{key:>15}: {data[key]}")
