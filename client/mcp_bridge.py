"""``pirag-mcp``: pirag's MCP server on stdio, for AI agents: a pump between the host's stdio and the daemon.

The MCP server itself runs in the daemon (the official SDK, ``pirag.daemon.mcp``). This process opens an MCP
session on the daemon's socket (``mcp_open``; pirag's own msgpack frames, client/protocol/mcp.py), relays every
line the host writes as one ``mcp_send`` and writes every message of the session back as one line. It imports
neither the SDK nor pydantic (nor asyncio: two threads, the host's lines on one, the daemon's frames on the
other), so it starts in tens of milliseconds and weighs little more than the interpreter.

It reads just enough of the host's messages (their ``id`` and ``method``) to:
- keep the host's ``initialize`` (and whether ``notifications/initialized`` followed) and replay them to the new
  session after the daemon came back, swallowing the replayed answer;
- know which requests are open on the session, and answer them when the connection is lost;
- answer by itself while there is no session (``mcp_fallback``: initialize and the lists from the snapshot of the
  daemon's server, a tool call with where it looked and how to start the daemon). ``initialize`` is answered
  that way too when the daemon has not answered it within ``INITIALIZE_GRACE_S`` (a daemon still loading its
  MCP server for the first session), so a host never gives up during the handshake; any other request the
  daemon leaves unanswered for ``--timeout`` plus a margin gets a "did not answer in time" error.

Nothing but the protocol goes to stdout: the protocol gets a private copy of file descriptor 1, and fd 1 itself
(``print``, stray C output) is pointed at stderr, where the logs go too.

    pirag-mcp [--socket PATH] [--project NAME] [--timeout S] [--log-level LEVEL]
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from . import mcp_fallback
from .framing import FrameTooLargeError, frame, recv_frame
from .paths import default_socket_path
from .protocol import Args, OpSpec, RawReply
from .protocol.mcp import MCP_OPEN, MCP_SEND, McpMessage, McpOpenArgs, McpSendArgs

log = logging.getLogger("pirag.mcp")

INITIALIZE_GRACE_S = 1.0        # the daemon's answer to initialize is waited for this long, then the snapshot's
OPEN_TIMEOUT_S = 2.0            # a daemon that accepts but does not open a session within this is stuck
STUCK_MARGIN_S = 10.0           # a request unanswered for --timeout plus this (at most): the daemon is stuck
MAX_FRAME = 256 << 20           # the client library's cap on a reply (a guard against a broken peer only)
SESSION = 1                     # the id of the mcp_open request, which names the session on its connection
INITIALIZED = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})
_encoder = msgspec.msgpack.Encoder()
_reply_decoder = msgspec.msgpack.Decoder(RawReply)
_message_decoder = msgspec.msgpack.Decoder(McpMessage)


def encode_request(spec: OpSpec, request_id: int, args: Args) -> bytes:
    """One request frame, as the client library's transport encodes it (not imported: it imports asyncio)."""
    return frame(_encoder.encode({"id": request_id, "op": spec.name, "args": args}))


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
    parser.add_argument("--version", action=_Version, nargs=0, help="print the version and exit")
    return parser


class _Version(argparse.Action):
    """--version, reading the version only when asked (importlib.metadata weighs ~5 MiB)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        from .version import __version__

        print(f"pirag-mcp {__version__}")
        parser.exit()


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
    """One connection to the daemon carrying one MCP session, read by a thread of its own (``start``);
    ``on_end(link, reason)`` is called once, from that thread, when the connection is over."""

    def __init__(self, sock: socket.socket, on_message: Callable[[McpMessage], None],
                 on_end: Callable[["Link", str], None]):
        self.sock = sock
        self.on_message = on_message
        self.on_end = on_end
        self.closed = False
        self._ids = itertools.count(SESSION + 1)
        self._send_lock = threading.Lock()

    @classmethod
    def open(cls, settings: PumpSettings, on_message: Callable[[McpMessage], None],
             on_end: Callable[["Link", str], None]) -> "Link":
        """Connect and open the session, waiting for the daemon's answer; ``LinkFailed`` with the tool error
        to show when that fails."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(OPEN_TIMEOUT_S)
        try:
            sock.connect(str(settings.socket))
        except OSError as exc:
            sock.close()
            raise LinkFailed(mcp_fallback.unreachable(settings.socket, exc.strerror or str(exc))) from exc
        try:
            sock.sendall(encode_request(MCP_OPEN, SESSION, McpOpenArgs(
                project=settings.project, cwd=os.getcwd(), socket=str(settings.socket), timeout=settings.timeout,
                client=f"pirag-mcp pid {os.getpid()}")))
        except OSError:
            pass   # the daemon refused the connection (busy, forbidden) and closed: its reason is still readable
        try:
            reply = _reply_decoder.decode(recv_frame(sock, MAX_FRAME))
        except TimeoutError as exc:
            sock.close()
            raise LinkFailed(mcp_fallback.unreachable(
                settings.socket, f"it accepted the connection but did not answer within {OPEN_TIMEOUT_S} s")) from exc
        except (OSError, EOFError, msgspec.DecodeError, FrameTooLargeError) as exc:
            sock.close()
            raise LinkFailed(mcp_fallback.unreachable(settings.socket, f"{type(exc).__name__}: {exc}")) from exc
        if reply.error is not None:
            sock.close()
            raise LinkFailed(f"pirag daemon error ({reply.error.code}): {reply.error.message}")
        sock.settimeout(None)
        return cls(sock, on_message, on_end)

    def start(self) -> None:
        threading.Thread(target=self._read, name="pirag-mcp-daemon", daemon=True).start()

    def send(self, message: str) -> None:
        with self._send_lock:
            if self.closed:
                return
            try:
                self.sock.sendall(encode_request(MCP_SEND, next(self._ids), McpSendArgs(session=SESSION,
                                                                                          message=message)))
            except OSError:
                pass   # the connection is gone: the reader sees it and ends the link

    def _read(self) -> None:
        reason = "the daemon closed the connection"
        try:
            while True:
                reply = _reply_decoder.decode(recv_frame(self.sock, MAX_FRAME))
                if reply.error is not None:
                    # The session ended (unavailable), or a message was refused (busy): the link is done.
                    reason = f"pirag daemon error ({reply.error.code}): {reply.error.message}"
                    break
                if reply.id == SESSION:
                    self.on_message(_message_decoder.decode(reply.result))
        except EOFError:
            pass
        except (OSError, msgspec.DecodeError, FrameTooLargeError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        finally:
            self.close()
            self.on_end(self, reason)

    def close(self) -> None:
        with self._send_lock:
            if self.closed:
                return
            self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)   # wakes the reader thread
        except OSError:
            pass
        self.sock.close()


class Pump:
    """Host lines to the daemon's session and back; answers by itself while there is no session.

    The host's lines are handled on the calling thread (``run``); the session's messages arrive on the link's
    thread, and late answers on the deadline thread: one lock keeps the state and stdout consistent between them."""

    def __init__(self, settings: PumpSettings, out: BinaryIO):
        self.settings = settings
        self.out = out
        self.lock = threading.RLock()
        self.link: Link | None = None
        self.initialize: dict[str, Any] | None = None   # the host's initialize request, replayed to new sessions
        self.initialized = False                       # the host sent notifications/initialized
        self.pending: dict[str, tuple[Any, str]] = {}  # host requests open on the session: key -> (id, method)
        self.swallow: set[str] = set()                 # answers the host must not see (replays, late initialize)
        self.deadlines: dict[str, float] = {}          # pending key -> when the pump answers it itself
        self._wake = threading.Condition(self.lock)
        self.down_reason = ""                          # the tool error while there is no session
        self._replays = itertools.count(1)

    def run(self, stdin: Iterable[bytes]) -> None:
        threading.Thread(target=self._watch_deadlines, name="pirag-mcp-deadlines", daemon=True).start()
        self.connect(replay=False)   # before the host's first line: the daemon starts loading its MCP server
        try:
            for line in stdin:
                self.handle(line)
        finally:
            with self.lock:
                link, self.link = self.link, None   # the host is gone: nothing is answered any more
            if link is not None:
                link.close()

    def handle(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").strip()
        if not text:
            return
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        method = message.get("method") if isinstance(message, dict) else None
        with self.lock:
            if method == "initialize":
                self.initialize, self.initialized = message, False
            elif method == "notifications/initialized":
                self.initialized = True
        link = self.connect(replay=method != "initialize")
        with self.lock:
            if link is None or link is not self.link:   # no daemon, or the session ended just now
                self.answer_locally(message, self.down_reason)
                return
            if isinstance(message, dict) and "id" in message and isinstance(method, str):
                key = _key(message["id"])
                self.pending[key] = (message["id"], method)
                wait = INITIALIZE_GRACE_S if method == "initialize" else self.stuck_after_s
                self.deadlines[key] = time.monotonic() + wait
                self._wake.notify()
        link.send(text)

    def connect(self, replay: bool) -> Link | None:
        """The current session, or a new one (the host's initialize replayed into it); None if unreachable."""
        with self.lock:
            if self.link is not None:
                return self.link
        try:
            link = Link.open(self.settings, self._from_daemon, self._ended)
        except LinkFailed as exc:
            with self.lock:
                self.down_reason = str(exc)
            log.debug("no MCP session: %s", exc)
            return None
        with self.lock:
            self.link = link
            self.down_reason = mcp_fallback.lost(self.settings.socket, "the session ended")
            initialize, initialized = self.initialize, self.initialized
        link.start()
        log.info("MCP session opened on the daemon at %s", self.settings.socket)
        if replay and initialize is not None:
            replay_id = f"pirag-mcp-replay-{next(self._replays)}"
            with self.lock:
                self.swallow.add(_key(replay_id))
            link.send(json.dumps(dict(initialize, id=replay_id)))
            if initialized:
                link.send(INITIALIZED)
            log.info("replayed the host's initialize to the new session")
        return link

    def _from_daemon(self, message: McpMessage) -> None:
        with self.lock:
            if message.answers is not None:
                key = _key(message.answers)
                if key in self.swallow:
                    self.swallow.discard(key)
                    return
                self.pending.pop(key, None)
                self.deadlines.pop(key, None)
            self.write(message.message)

    def _ended(self, link: Link, reason: str) -> None:
        with self.lock:
            if link is not self.link:
                return
            self.link = None
            log.info("MCP session on %s ended: %s", self.settings.socket, reason)
            failure = (reason if reason.startswith("pirag daemon error")
                       else mcp_fallback.lost(self.settings.socket, reason))
            self.down_reason = failure
            pending, self.pending = self.pending, {}
            self.swallow.clear()
            self.deadlines.clear()
            for request_id, method in pending.values():
                self.answer_locally({"jsonrpc": "2.0", "id": request_id, "method": method}, failure)

    @property
    def stuck_after_s(self) -> float:
        # The daemon answers a tool call that outlived --timeout itself; this is for a daemon that cannot.
        return self.settings.timeout + min(STUCK_MARGIN_S, self.settings.timeout)

    def _watch_deadlines(self) -> None:
        """Answers requests the daemon leaves unanswered: initialize after INITIALIZE_GRACE_S (from the snapshot:
        a daemon still loading its MCP server), anything else after --timeout plus a margin (a stuck daemon)."""
        with self._wake:
            while True:
                now = time.monotonic()
                for key in [key for key, when in self.deadlines.items() if when <= now]:
                    self._answer_late(key)
                nearest = min(self.deadlines.values(), default=None)
                self._wake.wait(None if nearest is None else max(nearest - now, 0.01))

    def _answer_late(self, key: str) -> None:
        del self.deadlines[key]
        request_id, method = self.pending.pop(key)
        self.swallow.add(key)   # the daemon's answer, if it ever comes, is not the host's any more
        if method == "initialize" and self.initialize is not None:
            log.info("the daemon did not answer initialize within %.1f s: answered from the snapshot",
                     INITIALIZE_GRACE_S)
            self.answer_locally(dict(self.initialize, id=request_id), "")
            return
        waited = self.stuck_after_s
        log.warning("the daemon did not answer %s within %.0f s", method, waited)
        self.answer_locally({"jsonrpc": "2.0", "id": request_id, "method": method},
                            f"the pirag daemon did not answer in time: no reply within {waited:g} s "
                            f"(pirag-mcp --timeout {self.settings.timeout:g}); it may be stuck")

    def answer_locally(self, message: Any, tool_error: str) -> None:
        if not isinstance(message, dict):
            self.write(json.dumps(mcp_fallback.error(None, mcp_fallback.PARSE_ERROR, "not a JSON-RPC message")))
            return
        reply = mcp_fallback.answer(message, self.settings.project, tool_error)
        if reply is not None:
            self.write(json.dumps(reply))

    def write(self, line: str) -> None:
        with self.lock:
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
        Pump(settings, protocol_out).run(sys.stdin.buffer)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
