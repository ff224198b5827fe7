"""Which components the daemon runs, in start order (stores first, services last)."""

from __future__ import annotations

from collections.abc import Callable

from .app import Component
from .config import Config


def build_components(config: Config, progress: Callable[[str], None]) -> list[Component]:
    """``progress`` reports long start-up steps (the first import of the default model) to the log,
    to ``status`` and to systemd (which then extends its start timeout)."""
    components: list[Component] = []
    if config.embed.model == "fake":
        from .embed.fake import FakeEmbedder

        components.append(FakeEmbedder())
    return components
