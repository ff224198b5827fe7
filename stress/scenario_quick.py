"""``pirag-stress quick``: ``pirag-stress all --quick`` (every scenario small, with checks; the CI suite)."""

from __future__ import annotations

import sys

from .scenario_all import main as all_main


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return all_main(["--quick", *argv])
