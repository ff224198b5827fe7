"""pirag's client library: ``Client`` (blocking) and ``AsyncClient`` (asyncio).

It depends on msgspec alone; importing it never imports the daemon's heavy dependencies.

    from pirag.client import Client
    with Client() as pirag:           # socket from PIRAG_SOCKET or the default path
        print(pirag.status().uptime_s)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import errors
from .api_core import CoreMethods
from .api_documents import DocumentsMethods
from .api_embed import EmbedMethods
from .api_memory import MemoryMethods
from .api_watch import WatchMethods
from .errors import (
    Busy, Conflict, ConnectionFailed, Forbidden, FrameTooLarge, InternalError, InvalidArgument, MalformedFrame,
    NotFound, PiragError, ProtocolError, RequestTimeout, Timeout, Unavailable, UnknownOp,
)
from .errors import StorageError, StorageFull
from .paths import default_socket_path, default_state_dir
from .protocol import Args, OpSpec

# The transport (and asyncio with it, ~9 MiB with the ssl it loads) is imported when a client is made, and the
# version (importlib.metadata, ~5 MiB) when it is asked for, not with the package: pirag-mcp, which needs
# neither to relay a session, stays small.


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from .version import __version__

        return __version__
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Client(CoreMethods, EmbedMethods, DocumentsMethods, MemoryMethods, WatchMethods):
    """Blocking client. Thread-safe (calls are serialized); reconnects for idempotent calls."""

    def __init__(self, socket_path: str | Path | None = None, *, timeout: float | None = 30.0,
                 connect_timeout: float = 5.0):
        from .transport import SyncConnection

        self._conn = SyncConnection(socket_path, timeout=timeout, connect_timeout=connect_timeout)

    @property
    def socket_path(self) -> Path:
        return self._conn.path

    def connect(self) -> "Client":
        self._conn.connect()
        return self

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "Client":
        return self.connect()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(self, spec: OpSpec, args: Args) -> Any:
        return self._conn.call(spec, args)

    def call(self, op: str, args: Args) -> Any:
        """Call an op by name with its Args Struct (for generic tools)."""
        from .transport import spec_for

        return self._conn.call(spec_for(op), args)


class AsyncClient(CoreMethods, EmbedMethods, DocumentsMethods, MemoryMethods, WatchMethods):
    """asyncio client: many requests may be in flight on its one connection. Methods return awaitables."""

    def __init__(self, socket_path: str | Path | None = None, *, timeout: float | None = 30.0,
                 connect_timeout: float = 5.0, max_inflight: int = 64):
        from .transport import AsyncConnection

        self._conn = AsyncConnection(socket_path, timeout=timeout, connect_timeout=connect_timeout,
                                     max_inflight=max_inflight)

    @property
    def socket_path(self) -> Path:
        return self._conn.path

    async def connect(self) -> "AsyncClient":
        await self._conn.connect()
        return self

    async def close(self) -> None:
        await self._conn.close()

    async def __aenter__(self) -> "AsyncClient":
        return await self.connect()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _call(self, spec: OpSpec, args: Args) -> Any:
        return self._conn.call(spec, args)

    def call(self, op: str, args: Args) -> Any:
        from .transport import spec_for

        return self._conn.call(spec_for(op), args)


__all__ = [
    "AsyncClient", "Busy", "Client", "Conflict", "ConnectionFailed", "Forbidden", "FrameTooLarge", "InternalError",
    "InvalidArgument", "MalformedFrame", "NotFound", "PiragError", "ProtocolError", "RequestTimeout", "Timeout",
    "Unavailable", "UnknownOp", "StorageError", "StorageFull", "__version__", "default_socket_path", "default_state_dir", "errors",
]
