"""``pirag-mcp``: pirag's MCP server on stdio, for AI agents: a pump between the host's stdio and the daemon.

The MCP server itself runs in the daemon (the official SDK, ``pirag.daemon.mcp``). This process opens an MCP
session on the daemon's socket (``mcp_open``; pirag's own msgpack frames, client/protocol/mcp.py), relays every
line the host writes as one ``mcp_send`` and writes every message of the session back as one line. It imports
neither the SDK nor pydantic, so it starts in tens of milliseconds and weighs a few MiB.

It reads just enough of the host's messages (their ``id`` and ``method``) to:
- keep the host's ``initialize`` (and whether ``notifications/initialized`` followed) and replay them to the new
  session after the daemon came back, swallowing the replayed answer;
- know which requests are open on the session, and answer them when the connection is lost;
- answer by itself while there is no session (``mcp_fallback``: initialize and the lists from the snapshot of the
  daemon's server, a tool call with where it looked and how to start the daemon). ``initialize`` is answered
  that way too when the daemon has not answered it within ``INITIALIZE_GRACE_S`` (a daemon still loading its
  MCP server for the first session), so a host never gives up during the handshake.

Nothing but the protocol goes to stdout: the protocol gets a private copy of file descriptor 1, and fd 1 itself
(``print``, stray C output) is pointed at stderr, where the logs go too.

    pirag-mcp [--socket PATH] [--project NAME] [--timeout S] [--log-level LEVEL]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from . import mcp_fallback
from .framing import FrameTooLargeError, read_frame
from .paths import default_socket_path
from .protocol.mcp import MCP_OPEN, MCP_SEND, McpMessage, McpOpenArgs, McpSendArgs
# The client library's request encoding and reply decoding: the pump's frames are any client's frames.
from .transport import CLIENT_MAX_FRAME, _encode_request, _reply_decoder
from .version import __version__

log = logging.getLogger("pirag.mcp")

INITIALIZE_GRACE_S = 1.0        # the daemon's answer to initialize is waited for this long, then the snapshot's
OPEN_TIMEOUT_S = 2.0            # a daemon that accepts but does not open a session within this is stuck
SESSION = 1                       # the id of the mcp_open request, which names the session on its connection
INITIALIZED = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})
_message_decoder = msgspec.msgpack.Decoder(McpMessage)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pirag-mcp", description="MCP server (stdio) that gives AI agents pirag's documents and memory as tools.")
    parser.add_argument("--socket", type=Path, default=None,
                        help="the daemon's socket (default: $PIRAG_SOCKET, else the standard path)")
    parser.add_argument("--project", default=os.environ.get("PIRAG_PROJECT", ""),
                        help="default project for tools called without one (default: $PIRAG_PROJECT)")
    parser.add_argument("--timeout", type=float, default=float(os.environ.get("PIRAG_MCP_TIMEOUT", "120")),
                        help="seconds to wait for one daemon reply (default: 120)")
    parser.add_argument("--log-level", default=os.environ.get("PIRAG_MCP_LOG_LEVEL", "WARNING"),
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log level on stderr (default: WARNING)")
    parser.add_argument("--version", action="version", version=f"pirag-mcp {__version__}")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return make_parser().parse_args(argv)


@dataclass(frozen=True)
class PumpSettings:
    socket: Path
    project: str = ""
    timeout: float = 120.0


def _key(request_id: Any) -> str:
    """A JSON-RPC id as a dict key: 1 and "1" are different ids."""
    return json.dumps(request_id)


class LinkFailed(Exception):
    """No session: its text is the tool error a call gets meanwhile."""


class Link:
    """One connection to the daemon carrying one MCP session; ``on_end(link, reason)`` once when it is over."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 on_message: Callable[[McpMessage], None], on_end: Callable[["Link", str], None]):
        self.writer = writer
        self.on_message = on_message
        self.on_end = on_end
        self.closed = False
        self._ids = itertools.count(SESSION + 1)
        self._reader_task = asyncio.create_task(self._read(reader))

    @classmethod
    async def open(cls, settings: PumpSettings, on_message: Callable[[McpMessage], None],
                   on_end: Callable[["Link", str], None]) -> "Link":
        """Connect and open the session; ``LinkFailed`` (with the tool error to show) when that fails."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, str(settings.socket))
        except OSError as exc:
            sock.close()
            raise LinkFailed(mcp_fallback.unreachable(settings.socket, exc.strerror or str(exc))) from exc
        try:
            await loop.sock_sendall(sock, _encode_request(MCP_OPEN, SESSION, McpOpenArgs(
                project=settings.project, cwd=os.getcwd(), socket=str(settings.socket), timeout=settings.timeout,
                client=f"pirag-mcp {__version__} pid {os.getpid()}")))
        except OSError:
            pass   # the daemon refused the connection (busy, forbidden) and closed: its reason is still readable
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=1 << 20)
        # Wait for the open's answer before relaying anything: a daemon that refuses the connection (busy,
        # forbidden) says why in one frame and closes, and a write racing that close would lose the reason.
        try:
            body = await asyncio.wait_for(read_frame(reader, CLIENT_MAX_FRAME), OPEN_TIMEOUT_S)
            reply = _reply_decoder.decode(body) if body is not None else None
        except asyncio.TimeoutError as exc:
            writer.close()
            raise LinkFailed(mcp_fallback.unreachable(
                settings.socket, f"it accepted the connection but did not answer within {OPEN_TIMEOUT_S} s")) from exc
        except (OSError, asyncio.IncompleteReadError, msgspec.DecodeError, FrameTooLargeError) as exc:
            writer.close()
            raise LinkFailed(mcp_fallback.unreachable(settings.socket, f"{type(exc).__name__}: {exc}")) from exc
        if reply is None or reply.error is not None:
            writer.close()
            if reply is None:
                raise LinkFailed(mcp_fallback.unreachable(settings.socket, "it closed the connection"))
            raise LinkFailed(f"pirag daemon error ({reply.error.code}): {reply.error.message}")
        return cls(reader, writer, on_message, on_end)

    def send(self, message: str) -> None:
        if not self.closed:
            self.writer.write(_encode_request(MCP_SEND, next(self._ids), McpSendArgs(session=SESSION,
                                                                                      message=message)))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        reason = "the daemon closed the connection"
        try:
            while (body := await read_frame(reader, CLIENT_MAX_FRAME)) is not None:
                reply = _reply_decoder.decode(body)
                if reply.error is not None:
                    # Refused (busy, forbidden), the session ended (unavailable), or a message refused: done.
                    reason = f"pirag daemon error ({reply.error.code}): {reply.error.message}"
                    break
                if reply.id == SESSION:
                    self.on_message(_message_decoder.decode(reply.result))
        except (OSError, asyncio.IncompleteReadError, msgspec.DecodeError, FrameTooLargeError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        finally:
            self._close_writer()
            self.on_end(self, reason)

    def _close_writer(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()

    async def aclose(self) -> None:
        self._close_writer()
        self._reader_task.cancel()
        try:
            await self._reader_task
        except asyncio.CancelledError:
            pass


class Pump:
    """Host lines to the daemon's session and back; answers by itself while there is no session."""

    def __init__(self, settings: PumpSettings, out: BinaryIO):
        self.settings = settings
        self.out = out
        self.link: Link | None = None
        self.initialize: dict[str, Any] | None = None   # the host's initialize request, replayed to new sessions
        self.initialized = False                       # the host sent notifications/initialized
        self.pending: dict[str, tuple[Any, str]] = {}  # host requests open on the session: key -> (id, method)
        self.swallow: set[str] = set()                 # answers the host must not see (replays, late initialize)
        self.down_reason = ""                          # the tool error while there is no session
        self._connecting: asyncio.Future[Link | None] | None = None
        self._replays = itertools.count(1)

    async def run(self, stdin: BinaryIO) -> None:
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[bytes | None] = asyncio.Queue()

        def read() -> None:   # a thread: works for pipes, files and terminals alike
            try:
                for line in stdin:
                    loop.call_soon_threadsafe(lines.put_nowait, line)
            finally:
                try:
                    loop.call_soon_threadsafe(lines.put_nowait, None)
                except RuntimeError:   # the loop is already closed
                    pass

        threading.Thread(target=read, name="stdin", daemon=True).start()
        # Connect while the host starts up (the daemon starts loading its MCP server); the first message waits.
        self._connecting = asyncio.ensure_future(self._open())
        try:
            while (line := await lines.get()) is not None:
                await self.handle(line)
        finally:
            link, self.link = self.link, None   # the host is gone: nothing is answered any more
            if link is None and self._connecting is not None:
                link = await self._connecting
            if link is not None:
                await link.aclose()

    async def handle(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").strip()
        if not text:
            return
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        method = message.get("method") if isinstance(message, dict) else None
        if method == "initialize":
            self.initialize, self.initialized = message, False
        elif method == "notifications/initialized":
            self.initialized = True
        link = await self.connect(replay=method != "initialize")
        if link is None:
            self.answer_locally(message, self.down_reason)
            return
        if isinstance(message, dict) and "id" in message and isinstance(method, str):
            self.pending[_key(message["id"])] = (message["id"], method)
            if method == "initialize":
                asyncio.get_running_loop().call_later(INITIALIZE_GRACE_S, self._initialize_late, message["id"])
        link.send(text)

    async def connect(self, replay: bool) -> Link | None:
        """The current session, or a new one (the host's initialize replayed into it); None if unreachable."""
        if self.link is not None:
            return self.link
        attempt, self._connecting = self._connecting or asyncio.ensure_future(self._open()), None
        link = await attempt
        if link is not None and link.closed:   # the start-up attempt's link ended before it was used
            link = await self._open()
        self.link = link
        if link is None:
            return None
        log.info("MCP session opened on the daemon at %s", self.settings.socket)
        if replay and self.initialize is not None:
            replay_id = f"pirag-mcp-replay-{next(self._replays)}"
            self.swallow.add(_key(replay_id))
            self.link.send(json.dumps(dict(self.initialize, id=replay_id)))
            if self.initialized:
                self.link.send(INITIALIZED)
            log.info("replayed the host's initialize to the new session")
        return self.link

    async def _open(self) -> Link | None:
        try:
            return await Link.open(self.settings, self._from_daemon, self._ended)
        except LinkFailed as exc:
            self.down_reason = str(exc)
            log.debug("no MCP session: %s", exc)
            return None

    def _from_daemon(self, message: McpMessage) -> None:
        if message.answers is not None:
            key = _key(message.answers)
            if key in self.swallow:
                self.swallow.discard(key)
                return
            self.pending.pop(key, None)
        self.write(message.message)

    def _ended(self, link: Link, reason: str) -> None:
        if link is not self.link:
            return
        self.link = None
        log.info("MCP session on %s ended: %s", self.settings.socket, reason)
        failure = reason if reason.startswith("pirag daemon error") else mcp_fallback.lost(self.settings.socket,
                                                                                           reason)
        pending, self.pending = self.pending, {}
        self.swallow.clear()
        for request_id, method in pending.values():
            self.answer_locally({"jsonrpc": "2.0", "id": request_id, "method": method}, failure)

    def _initialize_late(self, request_id: Any) -> None:
        key = _key(request_id)
        if self.pending.get(key, (None, ""))[1] != "initialize":
            return
        del self.pending[key]
        self.swallow.add(key)
        log.info("the daemon did not answer initialize within %.1f s: answered from the snapshot", INITIALIZE_GRACE_S)
        assert self.initialize is not None
        self.answer_locally(self.initialize, "")

    def answer_locally(self, message: Any, tool_error: str) -> None:
        if not isinstance(message, dict):
            self.write(json.dumps(mcp_fallback.error(None, mcp_fallback.PARSE_ERROR, "not a JSON-RPC message")))
            return
        reply = mcp_fallback.answer(message, self.settings.project, tool_error)
        if reply is not None:
            self.write(json.dumps(reply))

    def write(self, line: str) -> None:
        self.out.write(line.encode("utf-8") + b"\n")
        self.out.flush()


def _take_stdout() -> BinaryIO:
    """A private stream on the original stdout for the protocol; fd 1 and ``sys.stdout`` now go to stderr."""
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return open(protocol_fd, "wb")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level,
                        format="pirag-mcp | %(levelname)s | %(name)s | %(message)s")
    settings = PumpSettings(socket=args.socket or default_socket_path(), project=args.project, timeout=args.timeout)
    protocol_out = _take_stdout()
    log.info("relaying MCP on stdio to the daemon at %s; default project %r", settings.socket, settings.project)
    try:
        asyncio.run(Pump(settings, protocol_out).run(sys.stdin.buffer))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
