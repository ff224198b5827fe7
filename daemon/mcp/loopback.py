"""The daemon calls of an MCP session's tools, made in-process: frames through ``Server.dispatch``, no socket.

A ``LoopbackConnection`` stands where a client's connection would: the tools' requests are encoded as the client
library encodes them and handed to the server's ``dispatch``, so they meet the same decoding, limits (in flight
per connection and in all), peer (the MCP session's connection's), handlers, metrics and request log as any
client's; the reply frame comes back through ``send`` and resolves the call's future. One mechanism for every
op, the core ones (``status``) included, and the tools see exactly the results a client would decode.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING, Any

from pirag.client import errors
from pirag.client.framing import HEADER_SIZE
from pirag.client.protocol import Args, OpSpec, RawReply
# The client library's own request encoding and reply decoding, so a loopback call is byte for byte a client's.
from pirag.client.transport import _encode_request, _reply_decoder, _unpack

from ..app import Peer

if TYPE_CHECKING:
    from ..server import Server


class LoopbackConnection:
    """What ``Server.dispatch`` needs of a connection (``peer``, ``label``, ``tasks``, ``send``, ``refuse``),
    with futures instead of a socket."""

    def __init__(self, server: "Server", peer: Peer, label: str, timeout: float):
        self.server = server
        self.peer = peer
        self.label = label
        self.timeout = timeout
        self.tasks: set[asyncio.Task[None]] = set()
        self.closed = False
        self._pending: dict[int, asyncio.Future[RawReply]] = {}
        self._ids = itertools.count(1)

    def send(self, data: bytes) -> None:
        reply = _reply_decoder.decode(memoryview(data)[HEADER_SIZE:])
        future = self._pending.pop(reply.id, None) if reply.id is not None else None
        if future is not None and not future.done():
            future.set_result(reply)

    def refuse(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        # Only a malformed frame is refused, and these frames are the client library's own encoding.
        self._fail(errors.error_from_wire(code, message, details or {}))

    async def call(self, spec: OpSpec, args: Args) -> Any:
        if self.closed:
            raise errors.ConnectionFailed("the MCP session has ended")
        request_id = next(self._ids)
        future: asyncio.Future[RawReply] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            self.server.dispatch(self, memoryview(_encode_request(spec, request_id, args))[HEADER_SIZE:])
            reply = await asyncio.wait_for(future, self.timeout)
        except asyncio.TimeoutError as exc:
            raise errors.RequestTimeout(f"{spec.name}: no reply within {self.timeout} s") from exc
        finally:
            self._pending.pop(request_id, None)
        return _unpack(spec, reply)

    def close(self) -> None:
        """The session ended: its calls still running are cancelled. Their callers are the session's own
        tasks, cancelled with it (a future failed here would be an exception nobody retrieves)."""
        self.closed = True
        for task in list(self.tasks):
            task.cancel()

    def _fail(self, exc: BaseException) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(exc)
