"""Where the daemon's socket and state live (DESIGN.md: Operations / Paths). A leaf module: no imports of ours."""

from __future__ import annotations

import os
from pathlib import Path


def default_socket_path(env: dict[str, str] | None = None) -> Path:
    """``$PIRAG_SOCKET``, else ``$RUNTIME_DIRECTORY/pirag.sock`` (systemd), else
    ``$XDG_RUNTIME_DIR/pirag/pirag.sock``, else ``/run/pirag/pirag.sock`` when it exists (a system
    daemon), else ``/tmp/pirag-$UID/pirag.sock``."""
    env = os.environ if env is None else env
    if env.get("PIRAG_SOCKET"):
        return Path(env["PIRAG_SOCKET"])
    if env.get("RUNTIME_DIRECTORY"):
        return Path(env["RUNTIME_DIRECTORY"].split(":")[0]) / "pirag.sock"
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / "pirag" / "pirag.sock"
    system = Path("/run/pirag/pirag.sock")
    if system.exists():
        return system
    return Path(f"/tmp/pirag-{os.getuid()}") / "pirag.sock"


def default_state_dir(env: dict[str, str] | None = None) -> Path:
    """``$STATE_DIRECTORY`` (systemd), else ``$XDG_STATE_HOME/pirag``, else ``~/.local/state/pirag``."""
    env = os.environ if env is None else env
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    if env.get("XDG_STATE_HOME"):
        return Path(env["XDG_STATE_HOME"]) / "pirag"
    return Path.home() / ".local" / "state" / "pirag"
