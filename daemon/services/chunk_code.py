"""Source code segmentation: boundaries at top-level definitions, each segment named by its definition path.

Line-oriented rules per language (Python, JavaScript/TypeScript, Go, Rust, C/C++, shell), no parser: a
definition starts at a top-level line that matches the language's definition pattern; the comments,
decorators and attributes directly above it belong to it. Inside a definition, blank lines are soft cut
points, and for Python classes each method starts a sub-unit named ``class X > def m``. Anything between
definitions (imports, constants, statements) forms its own segments.

Returns plain tuples ``(lines, first_line, heading_path, hard)``; ``chunking.py`` turns them into segments.
"""

from __future__ import annotations

import re

_PY_DEF = re.compile(r"^(?:async\s+def|def|class)\s+([A-Za-z_]\w*)")
_PY_METHOD = re.compile(r"^(\s+)(?:async\s+def|def)\s+([A-Za-z_]\w*)")
_JS_DEF = re.compile(
    r"^(?:export\s+)?(?:default\s+)?(?:declare\s+)?(?:abstract\s+)?(?:async\s+)?"
    r"(function\*?|class|interface|type|enum|namespace|module|const|let|var)\s+([A-Za-z_$][\w$]*)")
_GO_DEF = re.compile(r"^(func|type|var|const)\s*(\([^)]*\)\s*)?([A-Za-z_]\w*)?")
_RUST_DEF = re.compile(
    r"^(?:pub(?:\([^)]*\))?\s+)?(?:default\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?(?:extern\s+\"[^\"]*\"\s+)?"
    r"(fn|struct|enum|trait|impl|mod|type|const|static|union|macro_rules!)\s*(?:<[^>]*>\s*)?([A-Za-z_][\w:<>, ]*)?")
_C_KEYWORD_DEF = re.compile(r"^(?:typedef\s+)?(struct|class|enum|union|namespace|template)\b\s*([A-Za-z_]\w*)?")
_C_FUNC = re.compile(r"^(?:[A-Za-z_][\w\s\*&:<>,]*?[\s\*&])?([A-Za-z_~][\w:~]*)\s*\([^;]*$")
_SH_FUNC = re.compile(r"^(?:function\s+([A-Za-z_][\w:.-]*)|([A-Za-z_][\w:.-]*)\s*\(\s*\))")

CODE_LANGUAGES: dict[str, str] = {
    "py": "python", "pyi": "python", "pyw": "python",
    "js": "js", "mjs": "js", "cjs": "js", "jsx": "js", "ts": "js", "tsx": "js", "mts": "js", "cts": "js",
    "go": "go", "rs": "rust",
    "c": "c", "h": "c", "cc": "c", "cpp": "c", "cxx": "c", "hpp": "c", "hh": "c", "hxx": "c", "ino": "c",
    "sh": "shell", "bash": "shell", "zsh": "shell", "ksh": "shell",
    # other languages: blank-line paragraphs, but kept as code (no Markdown rules)
    "java": "c", "kt": "c", "swift": "c", "cs": "c", "scala": "c", "php": "c", "rb": "other", "lua": "other",
    "pl": "other", "sql": "other", "toml": "other", "yaml": "other", "yml": "other", "json": "other",
    "ini": "other", "cfg": "other", "conf": "other", "css": "other", "scss": "other", "xml": "other",
    "makefile": "other", "dockerfile": "other", "cmake": "other", "r": "other", "jl": "other",
}

_COMMENT_PREFIX = {"python": ("#", "@"), "js": ("//", "/*", "*", "@"), "go": ("//", "/*", "*"),
                   "rust": ("//", "#[", "#!", "/*", "*"), "c": ("//", "/*", "*", "#define", "template"),
                   "shell": ("#",), "other": ()}


def _definition(line: str, language: str) -> str | None:
    """The definition's label when ``line`` starts a top-level definition, else None."""
    if not line or line[0].isspace():
        return None
    if language == "python":
        match = _PY_DEF.match(line)
        return f"{line.split()[0] if not line.startswith('async') else 'async def'} {match.group(1)}" if match else None
    if language == "js":
        match = _JS_DEF.match(line)
        if not match:
            return None
        kind, name = match.group(1), match.group(2)
        if kind in {"const", "let", "var"} and not re.search(r"=\s*(?:async\s*)?(?:function|\(|[A-Za-z_$][\w$]*\s*=>|class)",
                                                              line):
            return None
        return f"{kind} {name}"
    if language == "go":
        match = _GO_DEF.match(line)
        if not match:
            return None
        receiver = (match.group(2) or "").strip()
        return " ".join(part for part in (match.group(1), receiver, match.group(3) or "") if part)
    if language == "rust":
        match = _RUST_DEF.match(line)
        if not match:
            return None
        return f"{match.group(1)} {(match.group(2) or '').strip()}".strip()
    if language == "c":
        if line.startswith(("#", "}", "//", "/*", "*")):
            return None
        match = _C_KEYWORD_DEF.match(line)
        if match and (match.group(1) != "template" and ("{" in line or not line.rstrip().endswith(";"))):
            return f"{match.group(1)} {match.group(2) or ''}".strip()
        if match and match.group(1) == "template":
            return "template"
        match = _C_FUNC.match(line)
        if match and not line.rstrip().endswith(";") and not re.match(r"^(?:return|if|else|for|while|switch)\b", line):
            return f"{match.group(1)}()"
        return None
    if language == "shell":
        match = _SH_FUNC.match(line)
        return f"function {match.group(1) or match.group(2)}" if match else None
    return None


def _is_comment(line: str, language: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not line[:1].isspace() and stripped.startswith(_COMMENT_PREFIX[language] or ("\0",))


def segment_code(text: str, file_type: str) -> list[tuple[list[str], int, tuple[str, ...], bool]]:
    language = CODE_LANGUAGES.get(file_type, "other")
    lines = text.splitlines()
    # 1. the start line and label of every top-level unit (leading comments/decorators pulled in)
    starts: list[tuple[int, str]] = []
    for index, line in enumerate(lines):
        label = _definition(line, language)
        if label is None:
            continue
        begin = index
        while begin > 0 and _is_comment(lines[begin - 1], language) and (not starts or begin - 1 > starts[-1][0]):
            begin -= 1
        if starts and begin <= starts[-1][0]:
            continue
        starts.append((begin, label))
    # 2. units: the code before the first definition, then one unit per definition
    units: list[tuple[int, int, tuple[str, ...]]] = []
    if starts and starts[0][0] > 0:
        units.append((0, starts[0][0], ()))
    for begin, label in starts:
        units.append((begin, -1, (label,)))
    fixed: list[tuple[int, int, tuple[str, ...]]] = []
    for position, (begin, end, label) in enumerate(units):
        if end == -1:
            end = units[position + 1][0] if position + 1 < len(units) else len(lines)
        fixed.append((begin, end, label))
    if not fixed:
        fixed = [(0, len(lines), ())]
    # 3. each unit cut into blank-line paragraphs (Python methods become named sub-units)
    segments: list[tuple[list[str], int, tuple[str, ...], bool]] = []
    for begin, end, label in fixed:
        first = True
        sub_label = label
        current: list[str] = []
        current_start = begin
        current_label = label
        depth = 0
        for index in range(begin, end):
            line = lines[index]
            if language == "python" and label and label[0].startswith("class "):
                method = _PY_METHOD.match(line)
                if method and len(method.group(1)) <= 4:
                    if current:
                        segments.append((current, current_start + 1, current_label, first))
                        first, current = False, []
                    sub_label = (label[0], f"def {method.group(2)}")
            if line.strip():
                if not current:
                    current_start, current_label = index, sub_label
                current.append(line)
                depth += _bracket_balance(line)
            elif current and depth <= 0:  # a blank line inside an open bracket (a long literal) does not cut
                segments.append((current, current_start + 1, current_label, first))
                first, current, depth = False, [], 0
        if current:
            segments.append((current, current_start + 1, current_label, first))
    return segments


def _bracket_balance(line: str) -> int:
    return line.count("(") + line.count("[") - line.count(")") - line.count("]")
