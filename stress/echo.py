"""The IPC floor: a bare uvloop server that answers length-prefixed msgspec msgpack frames, nothing else.

Run as ``python -m pirag.stress.echo SOCKET``; it prints ``ready`` once listening. pirag's ``ping`` is compared
against it: same framing, same msgpack library, same event loop, no dispatch, limits, logging or metrics.
"""

from __future__ import annotations

import asyncio
import os
import struct
import sys

import msgspec

HEADER = struct.Struct(">I")


class _Request(msgspec.Struct):
    id: int
    op: str


def serve(path: str) -> None:
    import uvloop

    decode = msgspec.msgpack.Decoder(_Request).decode
    encode = msgspec.msgpack.Encoder().encode

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                (length,) = HEADER.unpack(await reader.readexactly(4))
                request = decode(await reader.readexactly(length))
                body = encode({"id": request.id, "result": {"pong": True}})
                writer.write(HEADER.pack(len(body)) + body)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        if os.path.exists(path):
            os.unlink(path)
        server = await asyncio.start_unix_server(handle, path)
        print("ready", flush=True)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


if __name__ == "__main__":
    serve(sys.argv[1])
