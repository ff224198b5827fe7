"""Real texts for the embedding tests, read from files on the machine (the Python standard library's sources),
never invented: module docstrings of well-known modules, a long text that exceeds every model's max length, and
the empty / whitespace-only inputs whose behaviour is documented."""

from __future__ import annotations

import ast
import sysconfig
from pathlib import Path

# Modules present in every CPython 3.11+ install; each has a module docstring.
_MODULES = [
    "json/__init__.py", "argparse.py", "textwrap.py", "difflib.py", "heapq.py", "bisect.py", "fractions.py",
    "statistics.py", "shlex.py", "fnmatch.py", "glob.py", "tempfile.py", "shutil.py", "zipfile/__init__.py",
    "tarfile.py", "gzip.py", "csv.py", "configparser.py", "logging/__init__.py", "socket.py", "selectors.py",
    "asyncio/queues.py", "asyncio/locks.py", "concurrent/futures/_base.py", "sqlite3/__init__.py", "queue.py",
    "threading.py", "subprocess.py", "pathlib.py", "datetime.py", "calendar.py", "random.py", "uuid.py",
    "hashlib.py", "hmac.py", "base64.py", "pickle.py", "copy.py", "enum.py", "dataclasses.py", "functools.py",
    "inspect.py", "typing.py", "string.py", "locale.py", "gettext.py", "pprint.py", "reprlib.py", "ast.py",
]


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _first_paragraphs(doc: str, limit: int = 1200) -> str:
    text = " ".join(doc.split())
    return text[:limit]


def docstring_texts(count: int = 24) -> list[str]:
    """``count`` module docstrings (at least 80 characters each, whitespace collapsed, at most 1200 chars)."""
    texts: list[str] = []
    for relative in _MODULES:
        path = stdlib_dir() / relative
        try:
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        except (OSError, SyntaxError, ValueError):
            continue
        if doc and len(doc) >= 80:
            texts.append(_first_paragraphs(doc))
        if len(texts) == count:
            break
    if len(texts) < count:
        raise RuntimeError(f"only {len(texts)} stdlib docstrings found under {stdlib_dir()}")
    return texts


def long_text() -> str:
    """The start of argparse.py's source: far more than 512 tokens."""
    source = (stdlib_dir() / "argparse.py").read_text(encoding="utf-8")
    return source[:12000]


EMPTY_TEXTS = ["", "   ", "\n\t  \n"]
