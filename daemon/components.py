"""Which components the daemon runs, in start order: stores first, the model, then the services.

Stopping closes them in reverse order, so the services finish with the stores still open.
"""

from __future__ import annotations

from collections.abc import Callable

from .app import Component
from .config import Config


def build_components(config: Config, progress: Callable[[str], None]) -> list[Component]:
    """``progress`` reports long start-up steps (the first import of the default model) to the log,
    to ``status`` and to systemd (which then extends its start timeout)."""
    from .embed import build_embedder
    from .services.documents import DocumentService
    from .services.memory import MemoryService
    from .services.watch import WatchService
    from .store.sqlite_pool import Database
    from .store.vectors import VectorIndex

    db = Database(config)
    embed = build_embedder(config, config.state_path, progress)
    vectors = VectorIndex(config)
    memory = MemoryService(config, db, embed, vectors)
    documents = DocumentService(config, db, vectors, embed)
    watch = WatchService(config, db, documents)
    return [db, embed, vectors, memory, documents, watch]
