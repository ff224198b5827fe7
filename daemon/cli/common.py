"""What every ``pirag`` subcommand shares: --socket/--json/--timeout options (before or after the subcommand), the client, output and exit codes.

Exit codes: 0 success, 1 the daemon reported an error, 2 usage error (argparse), 3 the daemon is unreachable.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

import msgspec

from pirag.client import Client
from pirag.client.errors import ConnectionFailed, PiragError, RequestTimeout

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


COMMON_DEFAULTS: dict[str, Any] = {"socket": None, "json": False, "timeout": 60.0}


def _add_common_options(parser: argparse.ArgumentParser, *, suppress_defaults: bool) -> None:
    def default(name: str) -> Any:
        return argparse.SUPPRESS if suppress_defaults else COMMON_DEFAULTS[name]

    parser.add_argument("--socket", default=default("socket"),
                        help="daemon socket (default: $PIRAG_SOCKET or the standard path)")
    parser.add_argument("--json", action="store_true", default=default("json"), help="machine-readable JSON output")
    parser.add_argument("--timeout", type=float, default=default("timeout"),
                        help="seconds to wait for a reply (default 60)")


def common_parser() -> argparse.ArgumentParser:
    """The common options as every subcommand accepts them (``pirag status --socket P``). Their defaults are
    suppressed here: the top-level parser (``add_global_options``) sets them, so ``pirag --socket P status``
    keeps P, and a value given after the subcommand wins."""
    common = argparse.ArgumentParser(add_help=False)
    _add_common_options(common, suppress_defaults=True)
    return common


def add_global_options(parser: argparse.ArgumentParser) -> None:
    """The same options before the subcommand, as git and systemctl accept them (``pirag --json status``)."""
    _add_common_options(parser, suppress_defaults=False)


def client_from(args: argparse.Namespace) -> Client:
    return Client(args.socket, timeout=args.timeout)


def to_builtins(value: Any) -> Any:
    return msgspec.to_builtins(value)


def emit(args: argparse.Namespace, value: Any, human: Callable[[Any], str] | None = None) -> None:
    """Print ``value`` as JSON with --json, else through ``human`` (or as indented JSON)."""
    if args.json or human is None:
        print(json.dumps(to_builtins(value), indent=None if args.json else 2, ensure_ascii=False))
    else:
        print(human(value))


def run_command(args: argparse.Namespace) -> int:
    """Run ``args.func(args)``; turn pirag errors into a one-line reason and an exit code."""
    try:
        result = args.func(args)
    except ConnectionFailed as exc:
        print(f"pirag: {exc.message}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except RequestTimeout as exc:
        print(f"pirag: {exc.message}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except PiragError as exc:
        print(f"pirag: {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    return EXIT_OK if result is None else int(result)
