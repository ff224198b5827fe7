"""The ``pirag`` command line. Each ``cmd_*.py`` module in this package adds its subcommands through
``register(subparsers, common)``; they are discovered here, so adding a command touches no shared file.

Most subcommands are client calls (they import only ``pirag.client``); ``serve`` and ``model`` run daemon code
and import it lazily, so ``pirag status`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from .common import add_global_options, common_parser, run_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pirag", description="pirag: a local retrieval-augmented memory service.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_global_options(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    common = common_parser()
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module_info.name.startswith("cmd_"):
            module = importlib.import_module(f"{__name__}.{module_info.name}")
            module.register(subparsers, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run_command(args)
    except BrokenPipeError:
        # `pirag status | head -2`: the reader has what it wanted. Point stdout at /dev/null so that the
        # interpreter's final flush does not raise again, and exit as a filter does when its reader goes.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
