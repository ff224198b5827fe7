"""The real daemon over the real socket: every error code, bad frames, multiplexing, vanishing clients."""

from __future__ import annotations

import asyncio
import socket
import struct
import time

import msgspec
import pytest

from pirag.client import AsyncClient, Client, errors
from pirag.client.framing import frame, recv_frame
from pirag.client.protocol import RawReply

from ..conftest import DaemonHandle, wait_until

_decode = msgspec.msgpack.Decoder(RawReply).decode


def raw_connect(daemon: DaemonHandle) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(daemon.socket))
    return sock


def exchange(sock: socket.socket, message: object | bytes) -> RawReply:
    body = message if isinstance(message, bytes) else msgspec.msgpack.encode(message)
    sock.sendall(frame(body))
    return _decode(recv_frame(sock, 1 << 20))


def closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, TimeoutError):
        return False


def test_hello_ping_status(client: Client) -> None:
    hello = client.hello()
    assert hello.protocol == 1 and {"hello", "ping", "status"} <= set(hello.capabilities)
    assert hello.limits["max_frame_bytes"] > 0
    assert client.ping().pong is True
    status = client.status()
    assert status.requests_by_op.get("hello", 0) >= 1
    assert status.rss_bytes > 10 << 20 and status.uptime_s > 0 and status.connections >= 1
    assert status.components["server"]["ready"] is True


def test_unknown_op_keeps_the_connection(daemon: DaemonHandle) -> None:
    with raw_connect(daemon) as sock:
        reply = exchange(sock, {"id": 7, "op": "teleport", "args": {}})
        assert reply.id == 7 and reply.error.code == "unknown_op" and "teleport" in reply.error.message
        assert exchange(sock, {"id": 8, "op": "ping", "args": {}}).error is None


@pytest.mark.parametrize("message, field", [
    ({"id": "seven", "op": "ping", "args": {}}, "$.id"),
    ({"id": 1, "op": "hello", "args": {"protocol": "one"}}, "$.args.protocol"),
    ({"id": 1, "op": "hello", "args": []}, "$.args"),
    ({"id": -1, "op": "ping"}, "$.id"),
    ([1, 2, 3], "map"),
    ({"op": 5}, "op"),
])
def test_wrong_types_are_invalid_argument_naming_the_field(daemon: DaemonHandle, message: object, field: str) -> None:
    with raw_connect(daemon) as sock:
        reply = exchange(sock, message)
        assert reply.error is not None and reply.error.code == "invalid_argument"
        assert field in reply.error.message
        assert exchange(sock, {"id": 2, "op": "ping"}).error is None  # still in sync


def test_unknown_fields_are_ignored(daemon: DaemonHandle) -> None:
    with raw_connect(daemon) as sock:
        reply = exchange(sock, {"id": 1, "op": "ping", "args": {"future": [1, 2]}, "trace": "abc"})
        assert reply.error is None


def test_garbage_bytes_get_malformed_frame_then_close(daemon: DaemonHandle) -> None:
    with raw_connect(daemon) as sock:
        reply = exchange(sock, b"\xc1\xc1\xc1 not msgpack")
        assert reply.id is None and reply.error.code == "malformed_frame"
        assert closed_by_peer(sock)


def test_truncated_msgpack_is_malformed(daemon: DaemonHandle) -> None:
    body = msgspec.msgpack.encode({"id": 1, "op": "ping", "args": {}})[:-3]
    with raw_connect(daemon) as sock:
        assert exchange(sock, body).error.code == "malformed_frame"


def test_huge_frame_is_refused_before_its_body(daemon: DaemonHandle) -> None:
    limit = daemon.client().hello().limits["max_frame_bytes"]
    with raw_connect(daemon) as sock:
        sock.sendall(struct.pack(">I", limit + 1))  # announce, send no body: the reply must not wait for it
        reply = _decode(recv_frame(sock, 1 << 20))
        assert reply.error.code == "frame_too_large" and reply.error.details["limit"] == limit
        assert closed_by_peer(sock)
    with raw_connect(daemon) as sock:
        sock.sendall(struct.pack(">I", 0xFFFFFFFF))
        assert _decode(recv_frame(sock, 1 << 20)).error.code == "frame_too_large"


def test_container_caps_refuse_huge_lists_cheaply(daemon: DaemonHandle) -> None:
    # 200k tiny items in one list: far over the protocol cap of 4096 items per list.
    with raw_connect(daemon) as sock:
        reply = exchange(sock, {"id": 1, "op": "hello", "args": {"client": "x" * 300_000}})
        assert reply.error is None  # an unknown-length client name is fine within the frame limit...
    with raw_connect(daemon) as sock:
        reply = exchange(sock, {"id": 1, "op": "status", "args": {"ignored": list(range(200_000))}})
        assert reply.error is None  # ...and unknown fields are skipped, not built


def test_empty_and_zero_length_frames(daemon: DaemonHandle) -> None:
    with raw_connect(daemon) as sock:
        assert exchange(sock, b"").error.code == "malformed_frame"


def test_stalled_half_frame_is_closed(daemon_factory) -> None:
    handle = daemon_factory("slowloris", {"embed": {"model": "fake"}, "server": {"frame_timeout_s": 0.5}})
    with raw_connect(handle) as sock:
        sock.sendall(struct.pack(">I", 100) + b"\x81")  # 1 of 100 body bytes, then nothing
        started = time.monotonic()
        assert closed_by_peer(sock)
        assert time.monotonic() - started < 5
    with handle.client() as client:
        assert client.ping().pong
        assert client.status().errors_by_code.get("frame_timeout", 0) >= 1


def test_too_many_connections_is_busy(daemon_factory) -> None:
    handle = daemon_factory("busy", {"embed": {"model": "fake"}, "server": {"max_connections": 3}})
    held = [raw_connect(handle) for _ in range(3)]
    try:
        for sock in held:
            assert exchange(sock, {"id": 1, "op": "ping"}).error is None
        with raw_connect(handle) as extra:
            reply = _decode(recv_frame(extra, 1 << 20))
            assert reply.error.code == "busy"
        with pytest.raises(errors.Busy):
            Client(handle.socket).status()
    finally:
        for sock in held:
            sock.close()
    wait_until(lambda: Client(handle.socket).ping())


def test_too_many_in_flight_is_busy(daemon_factory) -> None:
    handle = daemon_factory("inflight", {"embed": {"model": "fake"},
                                         "server": {"max_inflight_per_connection": 1}})
    with raw_connect(handle) as sock:
        # ping/hello/status are answered inline; an op served by a task is what in-flight limits count.
        burst = b"".join(frame(msgspec.msgpack.encode({"id": i, "op": "embed", "args": {"texts": ["x"]}}))
                         for i in range(1, 201))
        sock.sendall(burst)
        codes = [(_decode(recv_frame(sock, 1 << 20))).error.code for _ in range(200)]
        assert "busy" in codes
        assert set(codes) <= {"busy", "unavailable"}  # the fake-model daemon serves no embed op
        assert exchange(sock, {"id": 999, "op": "ping"}).error is None


def _ping_as(uid: int, path: str) -> str:
    """Fork, drop to ``uid``, ping over a raw socket; the error code (or "ok") comes back through a pipe."""
    import os

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no pytest, no exceptions escaping
        outcome = "error"
        try:
            os.setgid(uid)
            os.setgroups([])
            os.setuid(uid)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(5)
            sock.connect(path)
            try:
                sock.sendall(frame(msgspec.msgpack.encode({"id": 1, "op": "ping"})))
            except BrokenPipeError:
                pass  # refused and closed already; the error frame is still in our receive queue
            reply = _decode(recv_frame(sock, 1 << 20))
            outcome = reply.error.code if reply.error else "ok"
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            outcome = f"exception {exc!r}"
        os.write(write_end, outcome.encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as pipe:
        return pipe.read().decode()


def test_forbidden_peer_is_refused_and_logged(daemon_factory, short_tmp) -> None:
    import os

    if os.getuid() != 0:
        pytest.skip("needs root to connect as another uid")
    handle = daemon_factory("peers", {"embed": {"model": "fake"},
                                      "server": {"check_peers": True, "allowed_uids": [65533]}})
    for directory in (short_tmp, handle.root):
        os.chmod(directory, 0o755)  # let the other uid reach the socket: the peer check must be what stops it
    os.chmod(handle.socket, 0o666)
    assert _ping_as(65534, str(handle.socket)) == "forbidden"
    assert _ping_as(65533, str(handle.socket)) == "ok"
    assert "refused peer" in handle.log_text() and "uid=65534" in handle.log_text()
    with handle.client() as client:  # the daemon's own uid is always allowed
        assert client.ping().pong
        assert client.status().errors_by_code["forbidden"] >= 1


def test_many_requests_in_flight_on_one_connection(daemon: DaemonHandle) -> None:
    async def main() -> None:
        async with AsyncClient(daemon.socket) as client:
            results = await asyncio.gather(*(client.ping() if i % 2 else client.status() for i in range(300)))
            assert len(results) == 300
            assert all(r.pong for r in results[1::2])
            assert all(r.pid == results[0].pid for r in results[0::2])

    asyncio.run(main())


def test_client_vanishing_mid_request_leaves_the_daemon_serving(daemon: DaemonHandle) -> None:
    for _ in range(20):
        sock = raw_connect(daemon)
        sock.sendall(frame(msgspec.msgpack.encode({"id": 1, "op": "status"})) + struct.pack(">I", 50) + b"\x82")
        sock.close()  # one request in flight, one half frame, gone
    for _ in range(20):
        sock = raw_connect(daemon)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST instead of FIN
        sock.sendall(frame(msgspec.msgpack.encode({"id": 1, "op": "status"})))
        sock.close()
    with daemon.client() as client:
        assert wait_until(lambda: client.status().connections == 1)
        assert client.status().inflight <= 1


def test_idempotent_calls_reconnect_after_a_drop(daemon: DaemonHandle) -> None:
    with daemon.client() as client:
        assert client.ping().pong
        client._conn._sock.shutdown(socket.SHUT_RDWR)  # the connection breaks under the client
        assert client.ping().pong

    async def main() -> None:
        async with AsyncClient(daemon.socket) as aclient:
            await aclient.ping()
            aclient._conn._writer.transport.abort()
            await asyncio.sleep(0.05)
            assert (await aclient.status()).pid > 0

    asyncio.run(main())


def test_unreachable_daemon_is_a_clear_connection_error(short_tmp) -> None:
    with pytest.raises(errors.ConnectionFailed) as caught:
        Client(short_tmp / "nobody.sock", connect_timeout=1).ping()
    assert "pirag serve" in caught.value.message and "nobody.sock" in caught.value.message
