"""Generates the reference parts of the documentation from the code, so they cannot drift:
the operations table of ``docs/PROTOCOL.md`` (from the op registry) and ``docs/CLI.md`` (from argparse).

``python -m pirag.daemon.docgen`` rewrites them; ``tests/test_docs.py`` fails when they are out of date.
Hand-written text stays outside the ``<!-- generated:... -->`` markers.
"""

from __future__ import annotations

import argparse
import re
import sys
import typing
from pathlib import Path
from typing import Any

import msgspec

from pirag.client.protocol import OPS

def docs_dir() -> Path:
    """The source tree's docs/ (from a checkout: the working directory or next to this package)."""
    for candidate in (Path.cwd() / "docs", Path(__file__).resolve().parent.parent / "docs"):
        if (candidate / "PROTOCOL.md").exists():
            return candidate
    raise FileNotFoundError("run this from the repository root: docs/PROTOCOL.md not found")
BEGIN, END = "<!-- generated:{name} begin -->", "<!-- generated:{name} end -->"


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *metadata = typing.get_args(annotation)
        limits = []
        for meta in metadata:
            if isinstance(meta, msgspec.Meta):
                for key in ("min_length", "max_length", "ge", "gt", "le", "lt"):
                    value = getattr(meta, key, None)
                    if value is not None:
                        limits.append(f"{key}={value}")
        return _type_name(base) + (f" ({', '.join(limits)})" if limits else "")
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " \\| ".join(_type_name(arg) for arg in typing.get_args(annotation))
    if origin is typing.Literal:
        return " \\| ".join(repr(arg) for arg in typing.get_args(annotation))
    if origin in (list, tuple, set, frozenset):
        args = typing.get_args(annotation)
        return f"{origin.__name__}[{_type_name(args[0]) if args else 'any'}]"
    if origin is dict:
        key, value = typing.get_args(annotation) or (Any, Any)
        return f"map[{_type_name(key)}, {_type_name(value)}]"
    if annotation is type(None):
        return "nil"
    if annotation is Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


def _fields(struct: type[msgspec.Struct]) -> list[str]:
    rows = []
    for field in msgspec.structs.fields(struct):
        if field.required:
            default = "required"
        elif field.default is not msgspec.NODEFAULT:
            default = f"default `{field.default!r}`"
        else:
            default = "default empty"
        rows.append(f"| `{field.encode_name}` | {_type_name(field.type)} | {default} |")
    return rows


def _nested_structs(struct: type[msgspec.Struct], seen: set[type]) -> list[type[msgspec.Struct]]:
    found = []
    for field in msgspec.structs.fields(struct):
        for candidate in _walk_types(field.type):
            if candidate not in seen:
                seen.add(candidate)
                found.append(candidate)
                found.extend(_nested_structs(candidate, seen))
    return found


def _walk_types(annotation: Any) -> list[type[msgspec.Struct]]:
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return [annotation]
    return [t for arg in typing.get_args(annotation) for t in _walk_types(arg)]


def operations_reference() -> str:
    lines = ["| op | idempotent | what it does |", "|---|---|---|"]
    lines += [f"| [`{name}`](#{name.replace('_', '-')}) | {'yes' if spec.idempotent else 'no'} | {spec.summary} |"
              for name, spec in sorted(OPS.items())]
    seen: set[type] = set()
    for name, spec in sorted(OPS.items()):
        lines += ["", f"### {name}", "", spec.summary, "", f"Arguments (`{spec.args.__name__}`):", ""]
        arg_rows = _fields(spec.args)
        lines += (["| field | type | |", "|---|---|---|", *arg_rows] if arg_rows else ["none"])
        lines += ["", f"Result (`{spec.result.__name__}`):", "", "| field | type | |", "|---|---|---|",
                  *_fields(spec.result)]
        for nested in _nested_structs(spec.result, seen) + _nested_structs(spec.args, seen):
            lines += ["", f"`{nested.__name__}`:", "", "| field | type | |", "|---|---|---|", *_fields(nested)]
    return "\n".join(lines)


def cli_reference() -> str:
    from pirag.daemon.cli import build_parser

    parser = build_parser()
    subparsers = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    helps = {choice.dest: choice.help for choice in subparsers._choices_actions}
    lines = ["| command | what it does |", "|---|---|"]
    lines += [f"| [`pirag {name}`](#pirag-{name}) | {helps.get(name) or ''} |" for name in sorted(subparsers.choices)]
    for name, sub in sorted(subparsers.choices.items()):
        sub.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=100)
        usage = sub.format_help().strip()
        lines += ["", f"### pirag {name}", "", "```", usage, "```"]
    return "\n".join(lines)


def replace_section(text: str, name: str, body: str) -> str:
    begin, end = BEGIN.format(name=name), END.format(name=name)
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise ValueError(f"markers for {name!r} not found")
    return pattern.sub(lambda _: f"{begin}\n{body}\n{end}", text)


TARGETS = {"PROTOCOL.md": ("operations", operations_reference), "CLI.md": ("commands", cli_reference)}


def render(doc: str, docs: Path | None = None) -> str:
    name, make = TARGETS[doc]
    return replace_section(((docs or docs_dir()) / doc).read_text(), name, make())


def main() -> int:
    docs = docs_dir()
    for doc in TARGETS:
        (docs / doc).write_text(render(doc, docs))
        print(f"wrote docs/{doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
