"""Client methods for the memory ops (see api_core.py for the pattern)."""

from __future__ import annotations

from typing import Any


class MemoryMethods:
    _call: Any
