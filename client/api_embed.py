"""Client methods for the embed ops (see api_core.py for the pattern)."""

from __future__ import annotations

from typing import Any


class EmbedMethods:
    _call: Any
