"""Which components the daemon runs, in start order (stores first, services last)."""

from __future__ import annotations

from .app import Component
from .config import Config


def build_components(config: Config) -> list[Component]:
    components: list[Component] = []
    return components
