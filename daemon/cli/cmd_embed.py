"""``pirag embed``: vectors from the daemon's model, for local programs and scripts (a client call)."""

from __future__ import annotations

import argparse
import json
import sys

from .common import EXIT_USAGE, client_from


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "embed", parents=[common], help="embed texts with the daemon's model",
        description="Embed texts given as arguments, or one per line on stdin when there are none. Vectors are "
                    "L2-normalized; texts longer than the model's max length are truncated like "
                    "sentence-transformers does; an empty or whitespace-only text gets the vector of the empty "
                    "sequence. Output: one line per text (dims and the first values), or with --json "
                    '{"model_id", "dims", "vectors"}.')
    p.add_argument("texts", nargs="*", help="texts to embed (default: one per line on stdin)")
    p.set_defaults(func=_embed)


def _embed(args: argparse.Namespace) -> int | None:
    texts = list(args.texts)
    if not texts:
        if sys.stdin.isatty():
            print("pirag embed: give texts as arguments or one per line on stdin", file=sys.stderr)
            return EXIT_USAGE
        texts = [line.rstrip("\r\n") for line in sys.stdin]
    with client_from(args) as client:
        result = client.embed(texts, format="f32")
    rows = result.rows()
    if args.json:
        json.dump({"model_id": result.model_id, "dims": result.dims, "vectors": rows}, sys.stdout)
        sys.stdout.write("\n")
        return None
    print(f"model {result.model_id}, {result.dims} dims, {result.count} vector(s)")
    for text, row in zip(texts, rows):
        preview = " ".join(f"{value:+.4f}" for value in row[:6])
        label = text if len(text) <= 40 else text[:37] + "..."
        print(f"[{preview} ...]  {label!r}")
    return None
