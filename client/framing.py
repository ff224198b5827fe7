"""Framing: a 4-byte big-endian unsigned length, then that many bytes of one msgpack document.

Two small functions for asyncio streams and two for blocking sockets. EOF between frames is a clean
goodbye (``None``); EOF inside a frame is an error.
"""

from __future__ import annotations

import socket
import struct
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

HEADER = struct.Struct(">I")
HEADER_SIZE = HEADER.size


class FrameTooLargeError(Exception):
    """The announced length exceeds the limit; the body was not read."""

    def __init__(self, length: int, limit: int):
        super().__init__(f"frame of {length} bytes exceeds the limit of {limit} bytes")
        self.length = length
        self.limit = limit


def frame(payload: bytes) -> bytes:
    """Prefix ``payload`` with its length."""
    return HEADER.pack(len(payload)) + payload


async def read_frame(reader: asyncio.StreamReader, max_bytes: int) -> bytes | None:
    """Read one frame body; ``None`` on a clean EOF before a header.

    Raises ``asyncio.IncompleteReadError`` when the peer closes inside a frame and
    ``FrameTooLargeError`` (before reading the body) when the length is over ``max_bytes``.
    """
    # Imported here, not at the top: asyncio (and the ssl it loads, ~9 MiB) is for asyncio callers only;
    # pirag-mcp uses the blocking functions and stays small.
    from asyncio import IncompleteReadError

    try:
        header = await reader.readexactly(HEADER_SIZE)
    except IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise
    (length,) = HEADER.unpack(header)
    if length > max_bytes:
        raise FrameTooLargeError(length, max_bytes)
    return await reader.readexactly(length)


def recv_exactly(sock: socket.socket, count: int) -> bytes:
    """Blocking read of exactly ``count`` bytes; ``EOFError`` if the peer closes first."""
    chunks = []
    remaining = count
    while remaining:
        chunk = sock.recv(min(remaining, 1 << 20))
        if not chunk:
            raise EOFError(f"connection closed with {remaining} of {count} bytes unread")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def recv_frame(sock: socket.socket, max_bytes: int) -> bytes:
    """Blocking read of one frame body."""
    (length,) = HEADER.unpack(recv_exactly(sock, HEADER_SIZE))
    if length > max_bytes:
        raise FrameTooLargeError(length, max_bytes)
    return recv_exactly(sock, length)
