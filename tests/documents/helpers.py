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


class FakeApp:
    """Just enough of ``App`` for handlers: ``component(name)``."""

    def __init__(self, components):
        self._components = {component.name: component for component in components}

    def component(self, name):
        return self._components[name]


class FakeContext:
    def __init__(self, app):
        self.app = app
        self.request_id = 0
        self.op = ""
        self.peer = None


class Stack:
    """db + vectors + embed + documents, started in process (plumbing tests with the fake embedder)."""

    def __init__(self, config, embed=None):
        from pirag.daemon.embed.fake import FakeEmbedder
        from pirag.daemon.services.documents import DocumentService
        from pirag.daemon.store.sqlite_pool import Database
        from pirag.daemon.store.vectors import VectorIndex

        self.config = config
        self.db = Database(config)
        self.vectors = VectorIndex(config)
        self.embed = embed or CountingEmbedder(FakeEmbedder())
        self.documents = DocumentService(config, self.db, self.vectors, self.embed)
        self.components = [self.db, self.embed, self.vectors, self.documents]
        self.ctx = FakeContext(FakeApp(self.components))

    async def __aenter__(self):
        for component in self.components:
            await component.start()
        return self

    async def __aexit__(self, *exc):
        for component in reversed(self.components):
            await component.close()

    async def call(self, op, args):
        return await self.documents.handlers()[op](args, self.ctx)


class CountingEmbedder:
    """Wraps an embedder and counts the texts it embedded (to prove what was re-embedded)."""

    name = "embed"

    def __init__(self, inner):
        self.inner = inner
        self.model = inner.model
        self.texts: list[str] = []

    async def start(self):
        await self.inner.start()
        self.model = self.inner.model

    async def close(self):
        await self.inner.close()

    def stats(self):
        return self.inner.stats()

    def handlers(self):
        return {}

    def count_tokens(self, texts):
        return self.inner.count_tokens(texts)

    async def embed(self, texts):
        self.texts.extend(texts)
        return await self.inner.embed(texts)
