"""Run ``pirag serve`` with the memory stack added when ``daemon/components.py`` does not start it yet.

Test-only launcher: the real server, the real SQLite pool and the real Chroma index, with whatever embedder
the config names (``embed.model = "fake"`` for plumbing). Once the lead's ``build_components`` starts the
``memory`` component this adds nothing and is the same as ``pirag serve``.
Usage: python memory_daemon.py --config FILE
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    args = parser.parse_args()

    from pirag.daemon import components as components_module
    from pirag.daemon import serve as serve_module

    original = components_module.build_components

    def build(config: Any, progress: Any) -> list[Any]:
        components = original(config, progress)
        named = {component.name: component for component in components}
        if "memory" in named:
            return components
        embed = named.get("embed")
        if embed is None:
            from pirag.daemon.embed.fake import FakeEmbedder

            embed = FakeEmbedder()
            components.append(embed)
        db = named.get("db")
        if db is None:
            from pirag.daemon.store.sqlite_pool import Database

            db = Database(config)
            components.append(db)
        vectors = named.get("vectors")
        if vectors is None:
            from pirag.daemon.store.vectors import VectorIndex

            vectors = VectorIndex(config)
            components.append(vectors)
        from pirag.daemon.services.memory import MemoryService

        components.append(MemoryService(config, db, embed, vectors))
        return components

    serve_module.build_components = build
    return serve_module.serve(args.config, None, None)


if __name__ == "__main__":
    sys.exit(main())
