"""What every ``pirag`` subcommand shares: --socket/--json options, the client, output and exit codes.

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


def common_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--socket", help="daemon socket (default: $PIRAG_SOCKET or the standard path)")
    common.add_argument("--json", action="store_true", help="machine-readable JSON output")
    common.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a reply (default 60)")
    return common


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
