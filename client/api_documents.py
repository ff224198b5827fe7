"""Client methods for the documents ops (see api_core.py for the pattern)."""

from __future__ import annotations

from typing import Any


class DocumentsMethods:
    _call: Any
