"""Client methods for the core ops. Shared by ``Client`` (returns results) and ``AsyncClient`` (returns
awaitables): each method only builds the Args and hands them to ``self._call``."""

from __future__ import annotations

from typing import Any

from .protocol import PROTOCOL_VERSION
from .protocol.core import HELLO, PING, STATUS, HelloArgs, HelloResult, PingArgs, StatusArgs, StatusResult


class CoreMethods:
    _call: Any

    def hello(self, client: str = "pirag-client") -> HelloResult:
        """Handshake: the daemon's protocol version, version, capabilities (op names) and limits."""
        return self._call(HELLO, HelloArgs(protocol=PROTOCOL_VERSION, client=client))

    def ping(self) -> Any:
        """Round trip that does no work."""
        return self._call(PING, PingArgs())

    def status(self) -> StatusResult:
        """Daemon figures (see ``StatusResult``)."""
        return self._call(STATUS, StatusArgs())
