"""Fixtures of the vector-index and storage tests: the real default model imported once, outside any state dir.

The disk-full tests put the state directory on a small tmpfs; the model (~25 MB) must not live there, so every
daemon of these tests loads the same imported GGUF through ``embed.model``.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def model_path(short_tmp: Path) -> str:
    from pirag.daemon.embed.default_model import ensure_default_model

    return str(ensure_default_model(short_tmp / "model-home"))


@pytest.fixture(scope="session")
def real_model(model_path: str) -> dict:
    """The config section that makes a daemon use the real model imported above."""
    return {"embed": {"model": model_path}}
