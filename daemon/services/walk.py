"""File discovery for ingestion: confinement to allowed roots, ignore rules, binary/size checks, decoding.

- **Confinement.** Every path is resolved (symlinks followed) before anything is read; a requested path whose
  real location is outside ``ingest.allowed_roots`` is refused (``Forbidden``); a symlink met while walking
  that leads outside is skipped with a reason.
- **Ignores.** A default list (VCS directories, ``node_modules``, virtualenvs, caches, build outputs) plus every
  ``.gitignore`` on the way down, with git's rules: ``!`` negation, trailing ``/`` for directories only, a
  pattern containing ``/`` anchored to its file's directory, ``**`` across directories.
- **Loops.** Directories are identified by ``(st_dev, st_ino)``: a symlink cycle is visited once.
- **Skips with reasons.** Binary files (NUL bytes or a known binary extension), files over
  ``ingest.max_file_bytes``, unreadable files and text in no encoding we can trust.

Pure Python and free of daemon state, so the CLI's ``--upload`` mode walks with the same rules.
"""

from __future__ import annotations

import codecs
import fnmatch
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_IGNORES = (
    ".git", ".hg", ".svn", ".bzr", "_darcs", "CVS",
    "node_modules", "bower_components", ".venv", "venv", ".virtualenv", "virtualenv", "env", ".env", ".tox",
    ".nox", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".hypothesis", ".cache",
    "build", "dist", "target", "out", ".next", ".nuxt", ".gradle", ".idea", ".vscode", "*.egg-info",
    ".eggs", "site-packages", ".DS_Store", "*.pyc", "*.pyo", "*.o", "*.so", "*.a", "*.class", "*.min.js",
    "*.lock", "package-lock.json",
)

BINARY_EXTENSIONS = frozenset("""
png jpg jpeg gif bmp ico webp tif tiff psd svgz heic avif mp3 mp4 m4a wav flac ogg opus mkv mov avi webm
zip gz tgz bz2 xz zst 7z rar tar jar war whl egg deb rpm apk dmg iso img bin exe dll so dylib o a lib class
pyc pyo pyd wasm ttf otf woff woff2 eot sqlite sqlite3 db mdb parquet arrow feather npy npz pkl pickle pt
pth onnx gguf safetensors h5 hdf5 docx xlsx pptx odt ods odp
""".split())

SNIFF_BYTES = 8192


@dataclass(frozen=True)
class FoundFile:
    path: str          # the path as the user named it (under the requested directory), absolute
    real_path: str     # the resolved path that is read
    size: int
    mtime: float


@dataclass
class WalkResult:
    files: list[FoundFile] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (path, reason)
    directories: list[str] = field(default_factory=list)           # requested directories (for pruning)


class OutsideRoots(Exception):
    """A requested path resolves outside every allowed root."""


def resolve_roots(roots: Iterable[str]) -> list[Path]:
    return [Path(os.path.realpath(os.path.expanduser(root))) for root in roots if root]


def is_under(path: Path, roots: list[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


class _IgnoreRule:
    __slots__ = ("negate", "dir_only", "regex")

    def __init__(self, pattern: str):
        self.negate = pattern.startswith("!")
        if self.negate:
            pattern = pattern[1:]
        self.dir_only = pattern.endswith("/")
        pattern = pattern.rstrip("/")
        anchored = "/" in pattern
        pattern = pattern.lstrip("/")
        self.regex = re.compile(_glob_to_regex(pattern, anchored))

    def matches(self, relative: str, is_dir: bool) -> bool:
        if self.dir_only and not is_dir:
            return False
        return self.regex.match(relative) is not None


def _glob_to_regex(pattern: str, anchored: bool) -> str:
    out = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**/", index):
            out.append("(?:.*/)?")
            index += 3
            continue
        if pattern.startswith("/**", index) and index + 3 == len(pattern):
            out.append("/.*")
            index += 3
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.find("]", index + 1)
            if end == -1:
                out.append(re.escape(char))
            else:
                body = pattern[index + 1:end].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                index = end
        elif char == "\\" and index + 1 < len(pattern):
            index += 1
            out.append(re.escape(pattern[index]))
        else:
            out.append(re.escape(char))
        index += 1
    body = "".join(out)
    return ("^" if anchored else "^(?:.*/)?") + body + "$"


class IgnoreStack:
    """The ignore rules in force in one directory: defaults, then each ``.gitignore`` from the top down."""

    def __init__(self, layers: list[tuple[Path, list[_IgnoreRule]]]):
        self.layers = layers

    @classmethod
    def defaults(cls, base: Path) -> "IgnoreStack":
        return cls([(base, [_IgnoreRule(pattern) for pattern in DEFAULT_IGNORES])])

    def enter(self, directory: Path) -> "IgnoreStack":
        gitignore = directory / ".gitignore"
        try:
            lines = gitignore.read_text("utf-8", errors="replace").splitlines()
        except OSError:
            return self
        rules = []
        for line in lines:
            line = line.rstrip()
            if not line or line.startswith("#"):
                continue
            rules.append(_IgnoreRule(line.replace("\\#", "#")))
        return IgnoreStack(self.layers + [(directory, rules)]) if rules else self

    def ignored(self, path: Path, is_dir: bool) -> bool:
        verdict = False
        for base, rules in self.layers:
            try:
                relative = path.relative_to(base).as_posix()
            except ValueError:
                relative = path.name
            for rule in rules:
                if rule.matches(relative, is_dir):
                    verdict = not rule.negate
        return verdict


def walk(paths: Iterable[str], allowed_roots: list[Path] | None, max_file_bytes: int) -> WalkResult:
    """Find the files to ingest under ``paths``; ``allowed_roots`` None means no confinement (client side).

    Raises ``OutsideRoots`` naming the first requested path outside the roots. Requested paths that do not
    exist raise ``FileNotFoundError``.
    """
    result = WalkResult()
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[str] = set()
    for requested in paths:
        given = Path(os.path.abspath(os.path.expanduser(requested)))
        real = Path(os.path.realpath(given))
        if allowed_roots is not None and not is_under(real, allowed_roots):
            raise OutsideRoots(str(given))
        if not real.exists():
            raise FileNotFoundError(str(given))
        if real.is_dir():
            result.directories.append(str(given))
            _walk_dir(given, real, IgnoreStack.defaults(given).enter(real), allowed_roots, max_file_bytes,
                      result, seen_dirs, seen_files)
        else:
            _consider_file(given, real, allowed_roots, max_file_bytes, result, seen_files)
    return result


def walk_under(root: str, targets: Iterable[str], allowed_roots: list[Path] | None,
               max_file_bytes: int) -> tuple[WalkResult, set[tuple[int, int]], list[str]]:
    """Walk ``targets`` (files or directories inside the directory ``root``) with the rules a walk of ``root``
    applies to them: the defaults and every ``.gitignore`` from ``root`` down (the watch service re-reads only
    what changed, and must end where a full ingest of ``root`` would).

    Returns the walk, the ``(st_dev, st_ino)`` of every directory visited, and the targets that are ignored
    or gone (their sources no longer belong in the project).
    """
    result = WalkResult()
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[str] = set()
    absent: list[str] = []
    root_given = Path(os.path.abspath(root))
    root_real = Path(os.path.realpath(root_given))
    for target in targets:
        given = Path(os.path.abspath(target))
        try:
            parts = given.relative_to(root_given).parts
        except ValueError:
            absent.append(str(given))
            continue
        ignores = IgnoreStack.defaults(root_given).enter(root_real)
        real = root_real
        ignored = False
        for index, part in enumerate(parts):
            logical = real / part
            try:
                is_dir = logical.is_dir()
            except OSError:
                is_dir = False
            last = index == len(parts) - 1
            if ignores.ignored(logical, is_dir):
                ignored = True
                break
            real = Path(os.path.realpath(logical)) if logical.is_symlink() else logical
            if not last:
                if not is_dir:
                    ignored = True   # a parent that is no directory (any more): the target is gone
                    break
                ignores = ignores.enter(real)
        if ignored or not real.exists():
            absent.append(str(given))
            continue
        if allowed_roots is not None and not is_under(real, allowed_roots):
            result.skipped.append((str(given), "symlink leads outside the allowed roots"))
            absent.append(str(given))
        elif real.is_dir():
            _walk_dir(given, real, ignores.enter(real) if parts else ignores, allowed_roots, max_file_bytes,
                      result, seen_dirs, seen_files)
        else:
            _consider_file(given, real, allowed_roots, max_file_bytes, result, seen_files)
    return result, seen_dirs, absent


def _walk_dir(given: Path, real: Path, ignores: IgnoreStack, roots: list[Path] | None, max_bytes: int,
              result: WalkResult, seen_dirs: set[tuple[int, int]], seen_files: set[str]) -> None:
    try:
        info = real.stat()
    except OSError as exc:
        result.skipped.append((str(given), f"unreadable directory: {exc.strerror}"))
        return
    key = (info.st_dev, info.st_ino)
    if key in seen_dirs:
        result.skipped.append((str(given), "directory already visited (symlink loop or duplicate)"))
        return
    seen_dirs.add(key)
    try:
        entries = sorted(os.scandir(real), key=lambda entry: entry.name)
    except OSError as exc:
        result.skipped.append((str(given), f"unreadable directory: {exc.strerror}"))
        return
    for entry in entries:
        child_given = given / entry.name
        child_logical = real / entry.name
        try:
            is_link = entry.is_symlink()
            is_dir = entry.is_dir(follow_symlinks=True)
        except OSError:
            is_link, is_dir = True, False
        if ignores.ignored(child_logical, is_dir):
            continue
        child_real = Path(os.path.realpath(child_logical)) if is_link else child_logical
        if is_link:
            if not child_real.exists():
                result.skipped.append((str(child_given), "broken symlink"))
                continue
            if roots is not None and not is_under(child_real, roots):
                result.skipped.append((str(child_given), "symlink leads outside the allowed roots"))
                continue
        if is_dir:
            _walk_dir(child_given, child_real, ignores.enter(child_real), roots, max_bytes, result, seen_dirs,
                      seen_files)
        else:
            _consider_file(child_given, child_real, roots, max_bytes, result, seen_files)


def _consider_file(given: Path, real: Path, roots: list[Path] | None, max_bytes: int, result: WalkResult,
                   seen_files: set[str]) -> None:
    try:
        info = real.stat()
    except OSError as exc:
        result.skipped.append((str(given), f"unreadable: {exc.strerror}"))
        return
    if not stat.S_ISREG(info.st_mode):
        result.skipped.append((str(given), "not a regular file"))
        return
    if str(given) in seen_files:
        return
    if info.st_size > max_bytes:
        result.skipped.append((str(given), f"larger than ingest.max_file_bytes ({info.st_size} > {max_bytes})"))
        return
    extension = real.suffix.lower().lstrip(".")
    if extension in BINARY_EXTENSIONS:
        result.skipped.append((str(given), f"binary file type (.{extension})"))
        return
    seen_files.add(str(given))
    result.files.append(FoundFile(path=str(given), real_path=str(real), size=info.st_size, mtime=info.st_mtime))


def iter_file_bytes(files: Iterable[FoundFile]) -> Iterator[tuple[FoundFile, bytes | None, str]]:
    for found in files:
        try:
            with open(found.real_path, "rb") as handle:
                yield found, handle.read(), ""
        except OSError as exc:
            yield found, None, f"unreadable: {exc.strerror}"


def decode_text(data: bytes) -> tuple[str | None, str]:
    """Decode file bytes to text: ``(text, note)``; ``(None, reason)`` when it is binary or undecodable.

    UTF-8 (with or without BOM) and BOM-marked UTF-16/32 are decoded; other bytes are tried as cp1252 and
    accepted only when they look like text (few control characters). NUL bytes without a BOM mean binary.
    """
    for bom, encoding in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                          (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                          (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            try:
                return data.decode(encoding), ""
            except UnicodeDecodeError:
                return None, f"invalid {encoding} despite its byte-order mark"
    if b"\x00" in data[:SNIFF_BYTES]:
        return None, "binary content (NUL bytes)"
    try:
        text = data.decode("utf-8")
        note = ""
    except UnicodeDecodeError:
        try:
            text = data.decode("cp1252")
        except UnicodeDecodeError:
            return None, "not UTF-8 and not decodable as cp1252"
        note = "decoded as cp1252 (not valid UTF-8)"
    sample = text[:SNIFF_BYTES]
    controls = sum(1 for char in sample if ord(char) < 32 and char not in "\t\n\r\f\v\x1b")
    if controls > max(2, len(sample) // 100):
        return None, "binary content (control characters)" if not note else "not UTF-8 text (looks binary)"
    return text, note


def looks_binary(data: bytes) -> bool:
    return b"\x00" in data[:SNIFF_BYTES]


def match_glob(path: str, pattern: str) -> bool:
    """Path filter for search: ``*`` within a name, ``**`` across directories; a pattern without ``/``
    matches the file name anywhere."""
    if "/" not in pattern:
        return fnmatch.fnmatchcase(os.path.basename(path), pattern)
    return re.match(_glob_to_regex(pattern.lstrip("/"), anchored=pattern.startswith("/")),
                    path.lstrip("/")) is not None
