"""Shared measuring tools: percentiles, a raw frame client, a timed loop, table printing and waiting for a
daemon to be ready."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Sequence

import msgspec

HEADER = struct.Struct(">I")


def wait_ready(client, timeout: float = 180.0) -> None:
    """Poll ``status`` until the daemon says ``ready``: while it starts, status answers without the embed
    figures a benchmark reads (the model, its parameters)."""
    deadline = time.monotonic() + timeout
    while client.status().state != "ready":
        if time.monotonic() > deadline:
            raise RuntimeError(f"the daemon was not ready within {timeout:.0f} s")
        time.sleep(0.2)


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def summarize(latencies_s: Sequence[float], elapsed_s: float) -> dict[str, float]:
    return {
        "requests": len(latencies_s),
        "p50_us": round(percentile(latencies_s, 50) * 1e6, 1),
        "p99_us": round(percentile(latencies_s, 99) * 1e6, 1),
        "max_us": round(max(latencies_s) * 1e6, 1) if latencies_s else float("nan"),
        "rps": round(len(latencies_s) / elapsed_s, 1) if elapsed_s else 0.0,
    }


class RawClient:
    """The thinnest possible client: one connection, one request at a time. Used for both pirag and the
    echo baseline so that the client side costs the same in both."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.encode = msgspec.msgpack.Encoder().encode
        self.next_id = 0

    @classmethod
    async def connect(cls, path: str) -> "RawClient":
        reader, writer = await asyncio.open_unix_connection(path)
        return cls(reader, writer)

    async def call(self, op: str) -> bytes:
        self.next_id += 1
        body = self.encode({"id": self.next_id, "op": op, "args": {}})
        self.writer.write(HEADER.pack(len(body)) + body)
        (length,) = HEADER.unpack(await self.reader.readexactly(4))
        return await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def round_trips(path: str, clients: int, per_client: int, op: str = "ping", warmup: int = 200) -> dict[str, float]:
    """``clients`` connections, each doing ``per_client`` sequential round trips; latencies of all of them."""
    connections = [await RawClient.connect(path) for _ in range(clients)]
    for connection in connections:
        for _ in range(warmup // clients + 1):
            await connection.call(op)
    latencies: list[float] = []

    async def drive(connection: RawClient) -> None:
        clock = time.perf_counter
        for _ in range(per_client):
            started = clock()
            await connection.call(op)
            latencies.append(clock() - started)

    started = time.perf_counter()
    await asyncio.gather(*(drive(connection) for connection in connections))
    elapsed = time.perf_counter() - started
    for connection in connections:
        connection.close()
    return summarize(latencies, elapsed)


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    print(f"\n{title}")
    print("  ".join(str(cell).ljust(width) for cell, width in zip(header, widths)))
    print("  ".join("-" * width for width in widths))
    for row in rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))
