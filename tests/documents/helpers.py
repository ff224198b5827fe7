"""Shared helpers for the documents tests: configs on short temporary state dirs, in-process components."""

from __future__ import annotations

import msgspec

from pirag.daemon.config import Config, IngestConfig, StoreConfig


def make_config(state_dir, **sections) -> Config:
    """A Config whose state lives in ``state_dir``; ``sections`` override whole sections by keyword:
    ``ingest={"allowed_roots": [...]}``."""
    config = Config(state_dir=str(state_dir))
    replaced = {}
    for section, values in sections.items():
        current = getattr(config, section)
        replaced[section] = msgspec.structs.replace(current, **values)
    return msgspec.structs.replace(config, **replaced) if replaced else config


__all__ = ["make_config", "IngestConfig", "StoreConfig"]
