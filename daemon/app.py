"""The application: the components the daemon owns and the table of op handlers they provide.

A component (the embedding engine, the stores, each service) starts in order, contributes handlers for the
ops it owns and figures for ``status``, and closes in reverse order. The server knows only this table:
it decodes a request, looks up ``handlers[op]`` and awaits it. Handlers raise the client's error classes
(``pirag.client.errors``) for bad input; anything else becomes ``internal``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pirag.client.protocol import Result

from .config import Config

log = logging.getLogger("pirag.app")


@dataclass(frozen=True)
class Peer:
    pid: int | None
    uid: int | None
    gid: int | None

    def describe(self) -> str:
        return f"pid={self.pid if self.pid is not None else '-'} uid={self.uid if self.uid is not None else '-'}"


@dataclass
class RequestContext:
    request_id: int
    op: str
    peer: Peer
    app: "App"


Handler = Callable[[Any, RequestContext], Awaitable[Result]]


class Component(Protocol):
    """What every part of the daemon offers the application."""

    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def stats(self) -> dict[str, Any]: ...

    def handlers(self) -> dict[str, Handler]: ...


@dataclass
class App:
    config: Config
    components: list[Component] = field(default_factory=list)
    handlers: dict[str, Handler] = field(default_factory=dict)

    def component(self, name: str) -> Any:
        for component in self.components:
            if component.name == name:
                return component
        raise KeyError(name)

    async def start(self, components: list[Component], on_start: Callable[[str], None] | None = None) -> None:
        """Start each component in order; on a failure close those already started and re-raise.
        ``on_start(name)`` is told which component is starting (``status`` shows it)."""
        for component in components:
            log.info("starting %s", component.name)
            if on_start is not None:
                on_start(component.name)
            try:
                await component.start()
            except BaseException:
                await self.close()
                raise
            self.components.append(component)
            for op, handler in component.handlers().items():
                if op in self.handlers:
                    raise RuntimeError(f"op {op!r} is handled twice ({component.name})")
                self.handlers[op] = handler

    async def close(self) -> None:
        while self.components:
            component = self.components.pop()
            try:
                await component.close()
            except Exception:
                log.exception("closing %s failed", component.name)
        self.handlers.clear()

    def stats(self) -> dict[str, dict[str, Any]]:
        figures: dict[str, dict[str, Any]] = {}
        for component in self.components:
            try:
                figures[component.name] = component.stats()
            except Exception as exc:  # a broken figure must not break status
                figures[component.name] = {"error": repr(exc)}
        return figures

    def reload(self, config: Config) -> None:
        """Hand a reloaded config to the components that accept one (``reload(config)``)."""
        self.config = config
        for component in self.components:
            reload = getattr(component, "reload", None)
            if reload is not None:
                reload(config)

