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

    async def embed(self, texts, **kwargs):
        self.texts.extend(texts)
        return await self.inner.embed(texts, **kwargs)


def write_config(path, config: dict) -> None:
    lines = [f"{key} = {_toml(value)}" for key, value in config.items() if not isinstance(value, dict)]
    for section, values in config.items():
        if isinstance(values, dict):
            lines.append(f"\n[{section}]")
            lines.extend(f"{key} = {_toml(value)}" for key, value in values.items())
    path.write_text("\n".join(lines) + "\n")


def _toml(value) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    return "[" + ", ".join(_toml(item) for item in value) + "]"


class RealDaemon:
    """A real ``pirag serve`` process (with the documents stack) on a short socket under /tmp."""

    def __init__(self, root, config: dict):
        import pathlib

        self.root = pathlib.Path(root)
        self.socket = self.root / "s.sock"
        self.config = {"state_dir": str(self.root / "state"), **config}
        self.config.setdefault("server", {})["socket"] = str(self.socket)
        self.config.setdefault("log", {}).setdefault("metrics_interval_s", 0)
        self.config_path = self.root / "pirag.toml"
        self.log_path = self.root / "daemon.log"
        self.process = None

    def start(self, timeout: float = 120.0) -> "RealDaemon":
        import os
        import subprocess
        import sys
        import time

        from pirag.client import Client

        write_config(self.config_path, self.config)
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        log = open(self.log_path, "ab")
        pirag = os.path.join(os.path.dirname(sys.executable), "pirag")
        self.process = subprocess.Popen([pirag, "serve", "--config", str(self.config_path)], cwd=repo,
                                        stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.process.returncode}:\n{self.log_path.read_text()[-3000:]}")
            try:
                with Client(self.socket, timeout=5) as client:
                    client.ping()
                    if "search" in client.hello().capabilities:
                        return self
            except Exception:
                time.sleep(0.1)
        raise TimeoutError(f"daemon did not start:\n{self.log_path.read_text()[-3000:]}")

    def client(self, timeout: float = 120.0):
        from pirag.client import Client

        return Client(self.socket, timeout=timeout)

    def kill(self) -> None:
        import signal

        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def stop(self) -> None:
        import signal

        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except Exception:
                self.kill()
