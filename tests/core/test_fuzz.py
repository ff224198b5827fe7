"""Hypothesis throws random and mutated frames at the live daemon; it must keep answering ping.

``PIRAG_FUZZ_FRAMES`` sets how many (default 2,000, the CI size). The long run is 100,000 frames, not in CI:
``PIRAG_FUZZ_FRAMES=100000 python -m pytest tests/core/test_fuzz.py -q -s`` (about half an hour on a loaded
2-core machine; it prints the figures at the end).
"""

from __future__ import annotations

import os
import socket
import struct
import time

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pirag.client.framing import frame

from ..conftest import DaemonHandle

FRAMES = int(os.environ.get("PIRAG_FUZZ_FRAMES", "2000") or 2000)

VALID = [
    {"id": 1, "op": "ping", "args": {}},
    {"id": 2, "op": "hello", "args": {"protocol": 1, "client": "fuzz"}},
    {"id": 3, "op": "status", "args": {}},
]
msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 64) - 1) | st.floats() | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=20,
)


def _mutate(data: bytes, flips: list[tuple[int, int]], cut: int | None) -> bytes:
    buffer = bytearray(data)
    for position, value in flips:
        if buffer:
            buffer[position % len(buffer)] = value
    return bytes(buffer[:cut] if cut is not None else buffer)


frames = st.one_of(
    st.binary(max_size=64).map(frame),                                     # random bodies, honest lengths
    st.binary(min_size=1, max_size=64),                                    # random bytes, any length prefix
    st.builds(lambda v: frame(msgspec.msgpack.encode(v)), msgpack_values),  # valid msgpack, wrong shape
    st.builds(lambda op, args, rid: frame(msgspec.msgpack.encode({"id": rid, "op": op, "args": args})),
              st.sampled_from(["ping", "hello", "status", "nope", ""]), msgpack_values,
              st.integers(-5, (1 << 64) - 1) | st.text(max_size=3)),
    st.builds(lambda base, flips, cut: _mutate(frame(msgspec.msgpack.encode(base)), flips, cut),
              st.sampled_from(VALID), st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=4),
              st.none() | st.integers(0, 40)),
)


def _probe(path: str, data: bytes) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(0.02)  # frames with no reply (partial ones) cost at most this
    try:
        sock.connect(path)
        sock.sendall(data)
        try:
            sock.recv(4096)  # whatever comes back (a reply, an error frame or nothing) is fine
        except (TimeoutError, ConnectionResetError):
            pass
    finally:
        sock.close()


def test_random_and_mutated_frames_never_take_the_daemon_down(daemon: DaemonHandle) -> None:
    path = str(daemon.socket)
    sent = []
    pid = daemon.pid
    started = time.monotonic()

    @settings(max_examples=FRAMES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=frames)
    def throw(data: bytes) -> None:
        sent.append(len(data))
        _probe(path, data)

    throw()
    assert len(sent) >= FRAMES
    with daemon.client() as client:
        assert client.ping().pong
        status = client.status()
        assert status.pid == pid, "the daemon restarted: it crashed under the fuzzer"
        print(f"\nfuzz: {len(sent)} frames ({sum(sent)} bytes) in {time.monotonic() - started:.0f} s, daemon pid "
              f"{pid} alive, RSS {status.rss_bytes / 1e6:.0f} MB; errors by code {dict(status.errors_by_code)}")
        assert status.components["server"]["unexpected_loop_errors"] == 0
        assert status.errors_by_code.get("internal", 0) == 0
        assert status.errors_by_code.get("malformed_frame", 0) > 0
