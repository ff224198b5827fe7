"""``pirag serve`` with the documents stack guaranteed: used by the documents tests that start a real daemon.

It adds the ``db``, ``vectors`` and ``documents`` components when ``daemon/components.py`` does not build them
(yet), in the documented order, and runs the real server otherwise unchanged.
"""

from __future__ import annotations

import sys

from pirag.daemon import components as components_module

_original = components_module.build_components


def build(config, progress):
    built = list(_original(config, progress))
    names = {component.name for component in built}
    if "documents" in names:
        return built
    if "embed" not in names:
        if config.embed.model == "fake":
            from pirag.daemon.embed.fake import FakeEmbedder

            built.append(FakeEmbedder())
        else:
            from pirag.daemon.embed.engine import EmbedEngine

            built.append(EmbedEngine(config.embed, state_dir=config.state_path, progress=progress))
    by_name = {component.name: component for component in built}
    if "db" not in by_name:
        from pirag.daemon.store.sqlite_pool import Database

        by_name["db"] = Database(config)
        built.insert(0, by_name["db"])
    if "vectors" not in by_name:
        from pirag.daemon.store.vectors import VectorIndex

        by_name["vectors"] = VectorIndex(config)
        built.append(by_name["vectors"])
    from pirag.daemon.services.documents import DocumentService

    built.append(DocumentService(config, by_name["db"], by_name["vectors"], by_name["embed"]))
    return built


components_module.build_components = build

if __name__ == "__main__":
    from pirag.daemon.serve import serve

    args = sys.argv[1:]
    config = args[args.index("--config") + 1] if "--config" in args else None
    sys.exit(serve(config, None, None))
