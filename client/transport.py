"""Connections to the daemon: a blocking one and an asyncio one, both speaking framed msgpack.

The async connection keeps a reader task that matches replies to requests by id, so many requests can be
in flight on one socket. Both reconnect once and retry a call whose op is idempotent when the connection
drops; a non-idempotent call is never retried (it may have been applied).
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import threading
from pathlib import Path
from typing import Any

import msgspec

from . import errors
from .framing import FrameTooLargeError, frame, read_frame, recv_frame
from .paths import default_socket_path
from .protocol import OPS, Args, OpSpec, RawReply

_encoder = msgspec.msgpack.Encoder()
_reply_decoder = msgspec.msgpack.Decoder(RawReply)
_result_decoders: dict[str, msgspec.msgpack.Decoder] = {}

# Replies can be large (search results, exports); the client's own cap guards against a broken peer only.
CLIENT_MAX_FRAME = 256 << 20


def _result_decoder(spec: OpSpec) -> msgspec.msgpack.Decoder:
    decoder = _result_decoders.get(spec.name)
    if decoder is None:
        decoder = _result_decoders[spec.name] = msgspec.msgpack.Decoder(spec.result)
    return decoder


def _encode_request(spec: OpSpec, request_id: int, args: Args) -> bytes:
    return frame(_encoder.encode({"id": request_id, "op": spec.name, "args": args}))


def _unpack(spec: OpSpec, reply: RawReply) -> Any:
    if reply.error is not None:
        raise errors.error_from_wire(reply.error.code, reply.error.message, reply.error.details)
    if not reply.result:
        raise errors.ProtocolError(f"reply to {spec.name} carries neither result nor error")
    try:
        return _result_decoder(spec).decode(reply.result)
    except msgspec.DecodeError as exc:
        raise errors.ProtocolError(f"cannot decode the result of {spec.name}: {exc}") from exc


def _connect_error(path: Path, exc: OSError) -> errors.ConnectionFailed:
    return errors.ConnectionFailed(
        f"cannot connect to the pirag daemon at {path}: {exc.strerror or exc}. "
        "Start it with `pirag serve` (or `systemctl start pirag`), or point PIRAG_SOCKET / --socket at it.",
        details={"socket": str(path)},
    )


class SyncConnection:
    """One blocking connection; calls are serialized by a lock, so one object may be shared by threads."""

    def __init__(self, path: str | Path | None = None, *, timeout: float | None = 30.0, connect_timeout: float = 5.0):
        self.path = Path(path) if path is not None else default_socket_path()
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._sock: socket.socket | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def connect(self) -> None:
        if self._sock is not None:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.connect_timeout)
        try:
            sock.connect(str(self.path))
        except OSError as exc:
            sock.close()
            raise _connect_error(self.path, exc) from exc
        sock.settimeout(self.timeout)
        self._sock = sock

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def call(self, spec: OpSpec, args: Args) -> Any:
        with self._lock:
            try:
                return self._call_once(spec, args)
            except errors.ConnectionFailed:
                if not spec.idempotent:
                    raise
                self.close()
                return self._call_once(spec, args)

    def _call_once(self, spec: OpSpec, args: Args) -> Any:
        self.connect()
        assert self._sock is not None
        request_id = next(self._ids)
        try:
            try:
                self._sock.sendall(_encode_request(spec, request_id, args))
            except BrokenPipeError:
                pass  # the daemon may have refused us (busy, forbidden) and closed: its error frame is readable
            while True:
                reply = _reply_decoder.decode(recv_frame(self._sock, CLIENT_MAX_FRAME))
                if reply.id == request_id or reply.id is None:
                    break
        except TimeoutError as exc:
            self.close()
            raise errors.RequestTimeout(f"{spec.name}: no reply within {self.timeout} s") from exc
        except (OSError, EOFError) as exc:
            self.close()
            raise errors.ConnectionFailed(f"connection to {self.path} lost during {spec.name}: {exc}") from exc
        except (msgspec.DecodeError, FrameTooLargeError) as exc:
            self.close()
            raise errors.ProtocolError(f"bad reply to {spec.name}: {exc}") from exc
        if reply.id is None and reply.error is not None:
            # A connection-level error (the daemon closes after it).
            self.close()
        return _unpack(spec, reply)


class AsyncConnection:
    """One asyncio connection with many requests in flight, replies matched by id."""

    def __init__(self, path: str | Path | None = None, *, timeout: float | None = 30.0, connect_timeout: float = 5.0,
                 max_inflight: int = 64):
        self.path = Path(path) if path is not None else default_socket_path()
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        # Stay within the daemon's per-connection limit (64 by default) instead of collecting busy errors.
        self._slots = asyncio.Semaphore(max_inflight)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[RawReply]] = {}
        self._ids = itertools.count(1)
        self._connect_lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def connect(self) -> None:
        async with self._connect_lock:
            if self.connected:
                return
            try:
                self._reader, self._writer = await asyncio.wait_for(
                    asyncio.open_unix_connection(str(self.path), limit=1 << 20), self.connect_timeout)
            except (OSError, asyncio.TimeoutError) as exc:
                if isinstance(exc, OSError):
                    raise _connect_error(self.path, exc) from exc
                raise errors.ConnectionFailed(f"connecting to {self.path} timed out") from exc
            self._reader_task = asyncio.create_task(self._read_replies(self._reader))

    async def _read_replies(self, reader: asyncio.StreamReader) -> None:
        failure: BaseException = errors.ConnectionFailed(f"connection to {self.path} closed by the daemon")
        try:
            while True:
                body = await read_frame(reader, CLIENT_MAX_FRAME)
                if body is None:
                    break
                reply = _reply_decoder.decode(body)
                if reply.id is None:
                    # Connection-level error: it concerns every request in flight.
                    if reply.error is not None:
                        failure = errors.error_from_wire(reply.error.code, reply.error.message, reply.error.details)
                    continue
                future = self._pending.pop(reply.id, None)
                if future is not None and not future.done():
                    future.set_result(reply)
        except (OSError, asyncio.IncompleteReadError, msgspec.DecodeError, FrameTooLargeError) as exc:
            failure = errors.ConnectionFailed(f"connection to {self.path} lost: {exc}")
        finally:
            pending, self._pending = self._pending, {}
            for future in pending.values():
                if not future.done():
                    future.set_exception(failure)
            if self._writer is not None:
                self._writer.close()
            self._writer = None

    async def close(self) -> None:
        writer, task = self._writer, self._reader_task
        self._writer = None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
        if task is not None:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    async def call(self, spec: OpSpec, args: Args) -> Any:
        async with self._slots:
            try:
                return await self._call_once(spec, args)
            except errors.ConnectionFailed:
                if not spec.idempotent:
                    raise
                return await self._call_once(spec, args)

    async def _call_once(self, spec: OpSpec, args: Args) -> Any:
        await self.connect()
        assert self._writer is not None
        request_id = next(self._ids)
        future: asyncio.Future[RawReply] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            self._writer.write(_encode_request(spec, request_id, args))
            await self._writer.drain()
            reply = await asyncio.wait_for(future, self.timeout)
        except asyncio.TimeoutError as exc:
            raise errors.RequestTimeout(f"{spec.name}: no reply within {self.timeout} s") from exc
        except (OSError, AttributeError) as exc:
            raise errors.ConnectionFailed(f"connection to {self.path} lost during {spec.name}: {exc}") from exc
        finally:
            self._pending.pop(request_id, None)
        return _unpack(spec, reply)


def spec_for(name: str) -> OpSpec:
    try:
        return OPS[name]
    except KeyError as exc:
        raise errors.UnknownOp(f"this client does not know the op {name!r}") from exc
