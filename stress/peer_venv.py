"""A peer installed into its own virtual environment under the peers' cache directory: pinned, installed once,
and an install that fails is the reason the peer is skipped (``PeerUnavailable``).

The products of ``pirag-stress compare --products`` (product_peers.py) and the sentence-transformers peer of the
embedding comparison (st_peer.py) are installed this way, so that neither torch nor a product's dependencies
ever enter pirag's own environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .onnx_export import peers_cache_dir

INSTALL_TIMEOUT_S = float(os.environ.get("PIRAG_PEERS_INSTALL_TIMEOUT", "1200"))   # per peer
# A peer that asks for torch must get the CPU build on this disk, never a CUDA build (machines/python.md).
CONSTRAINTS = "torch==2.13.0\n"


class PeerUnavailable(RuntimeError):
    """The peer cannot run here; the message is the reason shown as SKIPPED."""

def _python_version(python: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([python, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True,
                             text=True, timeout=30).stdout.split()
        return int(out[0]), int(out[1])
    except (OSError, subprocess.SubprocessError, IndexError, ValueError):
        return None


def _loads_sqlite_extensions(python: str) -> bool:
    probe = "import sqlite3; sqlite3.connect(':memory:').enable_load_extension(True)"
    try:
        return subprocess.run([python, "-c", probe], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _interpreters() -> list[str]:
    """Every Python on this machine worth trying for a peer venv, this one first."""
    found = [sys.executable, "/usr/bin/python3"]
    for name in ("python3.11", "python3.12", "python3.13"):
        found.extend(str(p) for p in (Path("/usr/bin") / name, Path("/usr/local/bin") / name) if p.exists())
        if shutil.which(name):
            found.append(shutil.which(name) or "")
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    if pyenv.is_dir():
        found.extend(str(p / "bin" / "python3") for p in sorted(pyenv.iterdir()) if (p / "bin" / "python3").exists())
    unique: list[str] = []
    for python in found:
        if python and os.access(python, os.X_OK) and python not in unique:
            unique.append(python)
    return unique


@dataclass
class PeerVenv:
    """One pinned distribution in its own venv (``<peers cache>/<name>-<version>``)."""

    name: str
    version: str
    requirement: str
    minimum_python: tuple[int, int] = (3, 10)
    needs_sqlite_extensions: bool = False
    # extra pins for dependencies that later releases broke (installed with the peer, same pip call)
    pins: tuple[str, ...] = ()

    @property
    def venv(self) -> Path:
        return peers_cache_dir() / f"{self.name}-{self.version}"

    @property
    def marker(self) -> Path:
        return self.venv / ".pirag-installed"

    def pick_python(self) -> str:
        rejected = []
        for python in _interpreters():
            version = _python_version(python)
            if version is None or version < self.minimum_python:
                rejected.append(f"{python} ({'.'.join(map(str, version)) if version else '?'})")
                continue
            if self.needs_sqlite_extensions and not _loads_sqlite_extensions(python):
                rejected.append(f"{python} (no loadable SQLite extensions)")
                continue
            return python
        need = f"Python >= {'.'.join(map(str, self.minimum_python))}" + (
            " built with loadable SQLite extensions" if self.needs_sqlite_extensions else "")
        raise PeerUnavailable(f"{self.requirement} needs {need}; none here: " + ", ".join(rejected))

    def install(self, timeout: float | None = None) -> float:
        """Install into the cache venv unless done before; returns the seconds it took (0 when cached)."""
        timeout = INSTALL_TIMEOUT_S if timeout is None else timeout
        if self.installed:
            return 0.0
        python = self.pick_python()
        started = time.monotonic()
        shutil.rmtree(self.venv, ignore_errors=True)
        self.venv.parent.mkdir(parents=True, exist_ok=True)
        constraints = self.venv.parent / "constraints.txt"
        constraints.write_text(CONSTRAINTS)
        log = self.venv.parent / f"{self.name}-{self.version}.install.log"
        steps = [[python, "-m", "venv", str(self.venv)],
                 [str(self.venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                  "-c", str(constraints), self.requirement, *self.pins]]
        with open(log, "w") as out:
            for step in steps:
                left = timeout - (time.monotonic() - started)
                try:
                    code = subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          timeout=max(1.0, left), env=dict(os.environ, PIP_NO_INPUT="1")).returncode
                except subprocess.TimeoutExpired:
                    raise PeerUnavailable(f"installing {self.requirement} took over {timeout:.0f} s "
                                          f"(log: {log})") from None
                if code != 0:
                    tail = [line for line in log.read_text(errors="replace").splitlines()
                            if line.strip() and not line.startswith("WARNING: Location")][-3:]
                    raise PeerUnavailable(f"installing {self.requirement} failed ({' | '.join(tail)[-400:]}; "
                                          f"log: {log})")
        self.marker.write_text(self.wanted)
        return time.monotonic() - started

    @property
    def wanted(self) -> str:
        """What the marker records: the requirement and its pins (a changed pin reinstalls)."""
        return " ".join((self.requirement, *self.pins))

    @property
    def installed(self) -> bool:
        return self.marker.exists() and self.marker.read_text().strip() == self.wanted

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"
