"""Documentation is part of the product: these tests keep it true."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pirag.daemon import docgen

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("doc", sorted(docgen.TARGETS))
def test_generated_reference_is_up_to_date(doc: str) -> None:
    current = (REPO / "docs" / doc).read_text()
    assert docgen.render(doc, REPO / "docs") == current, f"docs/{doc} is stale: run `python -m pirag.daemon.docgen`"


def test_every_op_and_command_is_documented() -> None:
    from pirag.client.protocol import OPS

    protocol = (REPO / "docs" / "PROTOCOL.md").read_text()
    cli = (REPO / "docs" / "CLI.md").read_text()
    for op in OPS:
        assert f"### {op}\n" in protocol
    from pirag.daemon.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    for name in commands:
        assert f"### pirag {name}\n" in cli


def test_readme_links_and_commands_exist() -> None:
    readme = (REPO / "README.md").read_text()
    for target in re.findall(r"\]\(([^)#]+)\)", readme):
        if not target.startswith("http"):
            assert (REPO / target).exists(), f"README links to missing {target}"
    from pirag.daemon.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    for line in re.findall(r"^\.venv/bin/pirag (\S+)", readme, re.M):
        assert line in commands, f"README uses `pirag {line}`, which does not exist"
    for argv in re.findall(r"^\.venv/bin/pirag (.+)$", readme, re.M):
        parser.parse_args(_split(argv))  # every example parses (exits on an unknown option)


def _split(command: str) -> list[str]:
    import os
    import shlex

    return [os.path.expanduser(part) for part in shlex.split(command)]


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    blocks = re.findall(r"```\n(.*?)\n```", readme, re.S)
    assert "./quickstart.sh" in blocks[0]
    test_command = blocks[1].strip()
    assert test_command in ci.splitlines(), f"README's test command {test_command!r} is not a line of .ci/run"
