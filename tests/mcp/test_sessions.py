"""The MCP session ops on the real daemon's socket (raw frames, as any client in any language would send them),
and the pump's behaviour where the daemon is slow, refuses it, or is asked about relative paths."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from pirag.client.framing import frame, recv_frame

from .helpers import PIRAG_MCP, bridge_env, bridge_session, call_error, call_ok

INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}


class RawSession:
    """One connection speaking the session ops frame by frame."""

    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(str(path))
        self.next_id = 100

    def request(self, op: str, **args: Any) -> int:
        self.next_id += 1
        self.sock.sendall(frame(msgspec.msgpack.encode({"id": self.next_id, "op": op, "args": args})))
        return self.next_id

    def reply(self) -> dict[str, Any]:
        return msgspec.msgpack.decode(recv_frame(self.sock, 1 << 24))

    def message(self, session: int) -> dict[str, Any]:
        """The next MCP message of ``session``, decoded from its JSON text."""
        reply = self.reply()
        assert reply["id"] == session and "result" in reply, reply
        return json.loads(reply["result"]["message"]) | {"_answers": reply["result"].get("answers")}

    def close(self) -> None:
        self.sock.close()


def mcp_figures(daemon: Any) -> dict[str, Any]:
    with daemon.client() as client:
        status = client.status()
    return status.components["mcp"] | {"tasks": status.components["server"]["tasks"]}


def wait_for(predicate: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
    return value


def test_a_session_over_raw_frames_and_its_errors(daemon: Any) -> None:
    raw = RawSession(daemon.socket)
    try:
        session = raw.request("mcp_open", project="raw", cwd="/", socket=str(daemon.socket))
        opened = raw.reply()
        assert opened["id"] == session and opened["result"]["session"] == session
        raw.request("mcp_send", session=session, message=json.dumps(INITIALIZE))
        answer = raw.message(session)
        assert answer["_answers"] == 1 and answer["result"]["serverInfo"]["name"] == "pirag"
        assert answer["result"]["instructions"].endswith("The default project is 'raw'.")
        raw.request("mcp_send", session=session, message=json.dumps({"jsonrpc": "2.0",
                                                                     "method": "notifications/initialized"}))
        raw.request("mcp_send", session=session, message=json.dumps(
            {"jsonrpc": "2.0", "id": "s", "method": "tools/call", "params": {"name": "status", "arguments": {}}}))
        answer = raw.message(session)
        assert answer["_answers"] == "s" and answer["result"]["structuredContent"]["bridge"]["default_project"] == "raw"

        # bad input: a clear code, and the session and the daemon go on
        sent = raw.request("mcp_send", session=999, message="{}")
        error = raw.reply()
        assert error["id"] == sent and error["error"]["code"] == "not_found" and "999" in error["error"]["message"]
        sent = raw.request("mcp_send", session=session, message=12)
        error = raw.reply()
        assert error["id"] == sent and error["error"]["code"] == "invalid_argument"
        raw.request("mcp_send", session=session, message="this is not JSON")
        raw.request("mcp_send", session=session, message=json.dumps({"jsonrpc": "2.0", "id": 5, "method": "ping"}))
        answer = raw.message(session)
        if answer["_answers"] is None:   # what the SDK does with a bad line on stdio too: a log notification
            assert answer["method"] == "notifications/message" and answer["params"]["level"] == "error"
            answer = raw.message(session)
        assert answer["_answers"] == 5 and answer["result"] == {}

        sent = raw.request("mcp_close", session=session)
        assert raw.reply() == {"id": sent, "result": {"closed": True}}
        sent = raw.request("mcp_send", session=session, message="{}")
        assert raw.reply()["error"]["code"] == "not_found"
    finally:
        raw.close()
    with daemon.client() as client:
        assert "mcp_open" in client.hello().capabilities


def test_sessions_end_with_their_connections(daemon: Any) -> None:
    wait_for(lambda: mcp_figures(daemon)["sessions_open"] == 0)
    before = mcp_figures(daemon)
    raws = [RawSession(daemon.socket) for _ in range(5)]
    for raw in raws:
        session = raw.request("mcp_open", project="gone")
        raw.reply()
        raw.request("mcp_send", session=session, message=json.dumps(INITIALIZE))
        raw.message(session)
    during = mcp_figures(daemon)
    assert during["sessions_open"] == 5 and during["sessions_total"] == before["sessions_total"] + 5
    assert during["tasks"] > before["tasks"]
    for raw in raws:
        raw.close()
    after = wait_for(lambda: (figures := mcp_figures(daemon))["sessions_open"] == 0 and figures)
    assert wait_for(lambda: mcp_figures(daemon)["tasks"] <= before["tasks"]), (before, after)


def serve_silently(answer_open: bool) -> Iterator[Path]:
    """A socket that accepts connections and never answers (a daemon whose loop is stuck), or that opens the MCP
    session and then answers nothing (a daemon stuck in its MCP server)."""
    root = Path(tempfile.mkdtemp(prefix="pms-", dir="/tmp"))
    path = root / "s.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                connection = server.accept()[0]
            except TimeoutError:
                continue
            held.append(connection)
            if answer_open:
                connection.settimeout(10)
                request = msgspec.msgpack.decode(recv_frame(connection, 1 << 20))
                connection.sendall(frame(msgspec.msgpack.encode(
                    {"id": request["id"], "result": {"session": request["id"], "server_version": "mute"}})))

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield path
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    server.close()
    path.unlink()
    root.rmdir()


@pytest.fixture
def silent_socket() -> Iterator[Path]:
    yield from serve_silently(answer_open=False)


@pytest.fixture
def mute_daemon() -> Iterator[Path]:
    yield from serve_silently(answer_open=True)


def test_a_stuck_daemon_gets_initialize_and_tool_calls_answered(mute_daemon: Path) -> None:
    process = subprocess.Popen([PIRAG_MCP, "--socket", str(mute_daemon), "--timeout", "0.5"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=bridge_env())
    assert process.stdin is not None and process.stdout is not None
    try:
        for line in (INITIALIZE, {"jsonrpc": "2.0", "method": "notifications/initialized"},
                     {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "status", "arguments": {}}}):
            process.stdin.write(json.dumps(line).encode() + b"\n")
        process.stdin.flush()
        started = time.monotonic()
        answers = {message["id"]: message for message in (json.loads(process.stdout.readline()) for _ in range(2))}
        assert answers[1]["result"]["serverInfo"]["name"] == "pirag"          # from the snapshot, after 1 s
        assert answers[2]["result"]["isError"] is True
        assert "did not answer in time" in answers[2]["result"]["content"][0]["text"]
        assert time.monotonic() - started < 10
    finally:
        process.stdin.close()
        process.wait(timeout=10)


def test_initialize_is_answered_even_when_the_daemon_does_not_answer(silent_socket: Path) -> None:
    process = subprocess.Popen([PIRAG_MCP, "--socket", str(silent_socket)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=bridge_env())
    assert process.stdin is not None and process.stdout is not None
    try:
        started = time.monotonic()
        process.stdin.write(json.dumps(INITIALIZE).encode() + b"\n")
        process.stdin.flush()
        answer = json.loads(process.stdout.readline())
        waited = time.monotonic() - started
        assert answer["id"] == 1 and answer["result"]["serverInfo"]["name"] == "pirag"
        assert answer["result"]["protocolVersion"] == "2025-06-18"
        assert waited < 5, waited
    finally:
        process.stdin.close()
        process.wait(timeout=10)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_a_refusing_daemon_is_reported_with_its_code(daemon_factory: Any) -> None:
    handle = daemon_factory("mcpbusy", {"embed": {"model": "fake"}, "server": {"max_connections": 1}})
    with handle.client() as holder:      # the one connection the daemon accepts
        holder.ping()
        async with bridge_session(handle.socket) as session:   # initialize: answered from the snapshot
            message = await call_error(session, "status")
            assert "pirag daemon error (busy)" in message and "too many connections" in message
        holder.ping()


@pytest.mark.anyio
async def test_relative_ingest_paths_start_in_the_pump_directory(daemon_factory: Any) -> None:
    root = Path(tempfile.mkdtemp(prefix="pmr-", dir="/tmp"))
    (root / "notes").mkdir()
    (root / "notes" / "a.md").write_text("# A\n\nRelative paths start in the host's directory.\n")
    handle = daemon_factory("mcprel", {"embed": {"model": "fake"}, "ingest": {"allowed_roots": [str(root)]}})
    cwd = os.getcwd()
    os.chdir(root)   # the SDK client starts pirag-mcp in this process's directory
    try:
        async with bridge_session(handle.socket, "--project", "rel") as session:
            _, data = await call_ok(session, "ingest", paths=["notes"], wait=True)
            assert data["sources_added"] == 1
    finally:
        os.chdir(cwd)
        subprocess.run(["rm", "-rf", str(root)], check=False)


def test_the_daemon_loads_its_mcp_server_on_the_first_session_only(daemon_factory: Any) -> None:
    handle = daemon_factory("mcplazy", {"embed": {"model": "fake"}})
    figures = mcp_figures(handle)
    assert figures["sdk_loaded"] is False and figures["sessions_total"] == 0
    raw = RawSession(handle.socket)
    try:
        session = raw.request("mcp_open")
        raw.reply()
        raw.request("mcp_send", session=session, message=json.dumps(INITIALIZE))
        assert raw.message(session)["result"]["serverInfo"]["name"] == "pirag"
    finally:
        raw.close()
    figures = mcp_figures(handle)
    assert figures["sdk_loaded"] is True and figures["sdk_load_s"] > 0 and figures["sessions_total"] == 1


@pytest.mark.anyio
async def test_the_first_session_initializes_at_once_while_the_daemon_loads_its_server(daemon_factory: Any) -> None:
    """The first session makes the daemon load the SDK (seconds on a busy machine): the pump answers initialize
    from its snapshot after INITIALIZE_GRACE_S, swallows the daemon's late answer, and the session works."""
    handle = daemon_factory("mcpfirst", {"embed": {"model": "fake"}})
    assert mcp_figures(handle)["sdk_loaded"] is False
    started = time.monotonic()
    async with bridge_session(handle.socket, "--project", "first") as session:
        initialized_s = time.monotonic() - started
        _, data = await call_ok(session, "status")
        assert data["bridge"]["default_project"] == "first"
        tools = (await session.list_tools()).tools
        assert "recall" in {tool.name for tool in tools}
    assert initialized_s < 5, initialized_s
    assert mcp_figures(handle)["sdk_loaded"] is True
