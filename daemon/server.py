"""The server: frames in, dispatch, frames out, with limits, peers and a lifecycle.

The server only decodes frames, checks limits and peers, calls a handler from the application's table and
encodes the reply (DESIGN.md: layers). Each connection has one reader coroutine; every request runs as its
own task, so replies may leave out of order and a slow search never holds up a ping on the same socket.

Failure policy, per frame:
- length over ``max_frame_bytes``: ``frame_too_large`` error frame, connection closed before the body is read;
- bytes that are not msgpack: ``malformed_frame`` error frame, connection closed;
- valid msgpack with an unknown op: ``unknown_op``; wrong or missing fields: ``invalid_argument`` naming the
  field; the connection stays open (the stream is still in sync);
- too many requests in flight: ``busy`` for that request; too many connections: ``busy``, then closed;
- a peer outside ``allowed_uids/gids``: ``forbidden``, logged, closed;
- a frame begun and not finished within ``frame_timeout_s``, or no request for ``idle_timeout_s``: closed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from pirag.client import errors
from pirag.client.framing import HEADER
from pirag.client.protocol import OPS, PROTOCOL_VERSION, Envelope, ErrorBody, Reply, request_union
from pirag.client.protocol.core import HelloResult, LatencySummary, PingResult, StatusResult
from pirag.client.version import __version__

from . import memtrim, systemd
from .gcpause import GcMonitor
from .metrics import LAG_PROBE_S, Metrics, rss_bytes
from .app import App, RequestContext
from .config import RELOADABLE, Config, ConfigError, load_config, summary
from .connection import Connection
from .endpoint import Endpoint, adopt_endpoint, bind_endpoint
from .log import RequestLog, metric_line, set_level
from .mcp.sessions import McpSessions

log = logging.getLogger("pirag.server")

_request_decoder = msgspec.msgpack.Decoder(request_union())
_encoder = msgspec.msgpack.Encoder()
CORE_OPS = ("hello", "ping", "status")
TICK_S = 0.25
STATUS_EVERY_S = 5.0


def encode_frame(message: Any) -> bytes:
    """One frame: length header, then the msgpack body, encoded in place without a copy of the body."""
    buffer = bytearray(HEADER.size)
    _encoder.encode_into(message, buffer, HEADER.size)
    HEADER.pack_into(buffer, 0, len(buffer) - HEADER.size)
    return bytes(buffer)


def error_frame(request_id: int | None, code: str, message: str, details: dict[str, Any] | None = None) -> bytes:
    return encode_frame(Reply(id=request_id, error=ErrorBody(code=code, message=message, details=details or {})))


def explain_decode_failure(body: bytes, exc: msgspec.ValidationError) -> tuple[int | None, str, str]:
    """Why a well-formed frame is not a valid request: (id, code, message)."""
    try:
        envelope = msgspec.msgpack.decode(body, type=Envelope)
    except Exception:  # any shape that is not even a map with string keys
        return None, errors.INVALID_ARGUMENT, f"a request must be a map with id, op and args: {exc}"
    request_id = envelope.id if isinstance(envelope.id, int) and 0 <= envelope.id < 1 << 63 else None
    if not isinstance(envelope.op, str):
        return request_id, errors.INVALID_ARGUMENT, "the request has no op (a string naming the operation)"
    if envelope.op not in OPS:
        return request_id, errors.UNKNOWN_OP, f"unknown op {envelope.op!r}"
    return request_id, errors.INVALID_ARGUMENT, f"bad arguments for {envelope.op}: {exc}"


class Server:
    """Owns the lifecycle: bind, start components, serve, reload, drain and stop."""

    def __init__(self, config: Config, app: App, *, config_path: str | Path | None = None,
                 overrides: dict[str, str | None] | None = None):
        self.config = config
        self.app = app
        self.config_path = config_path
        self.overrides = overrides or {}
        self.metrics = Metrics()
        self.request_log = RequestLog(enabled=config.log.requests)
        self.notifier = systemd.Notifier(log)
        self.connections: set[Connection] = set()
        self.inflight = 0
        self.started_at = time.time()
        self.ready = False
        self.starting_message = "starting"
        self.endpoint: Endpoint | None = None
        self._server: asyncio.base_events.Server | None = None
        self._stop = asyncio.Event()
        self._reload_requested = False
        self._tick_task: asyncio.Task[None] | None = None
        self._probe_task: asyncio.Task[None] | None = None
        self._unexpected: list[BaseException] = []
        self.log = log
        self.heap_tracer: Any = None  # heapdebug.HeapTracer when PIRAG_TRACEMALLOC is set (leak hunts)
        self.malloc_trims = 0
        self.gc = GcMonitor()
        self._trimming: asyncio.Future[bool] | None = None
        self._last_trim = time.monotonic()
        self._pong = PingResult()
        self._inline: dict[str, Callable[[], Any]] = {"ping": lambda: self._pong, "hello": self._hello,
                                                      "status": self._status}
        # Ops that stream on their connection (MCP sessions): handed the connection, they answer themselves.
        self.mcp = McpSessions(self)
        self._streams = self.mcp.ops()

    # ----- lifecycle -------------------------------------------------------------------------------------

    async def run(self, components: list[Any]) -> int:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(self._loop_exception)
        self.gc.install()
        self._bind()
        assert self.endpoint is not None
        # create_unix_server(sock=...) calls listen() again, with backlog=100 unless told: pass ours, or a burst
        # of connects while the model loads is refused with EAGAIN (FINDINGS: Unix sockets).
        self._server = await loop.create_unix_server(lambda: Connection(self), sock=self.endpoint.sock,
                                                     backlog=self.config.server.listen_backlog)
        log.info("listening on %s (pid %d, protocol %d, version %s)", self.endpoint.path, os.getpid(),
                 PROTOCOL_VERSION, __version__)
        self._install_signals()
        self._tick_task = asyncio.create_task(self._tick())
        self._probe_task = asyncio.create_task(self._probe_lag())
        if not systemd.memory_cgroup_available():
            log.warning("the memory cgroup controller is not enabled: MemoryHigh/MemoryMax limits are ignored "
                        "(on a Raspberry Pi add cgroup_enable=memory to /boot/firmware/cmdline.txt)")
        try:
            await self.app.start(components, on_start=self._component_starting)
        except Exception as exc:
            log.error("start-up failed: %s", exc, exc_info=not isinstance(exc, (OSError, ValueError)))
            await self._shutdown()
            return 1
        if self._stop.is_set():  # SIGTERM arrived while the components were starting
            await self._shutdown()
            return 0
        if self.config.server.gc_freeze:  # start-up's objects out of every later collection's walk (gcpause.py)
            log.info("garbage collector: %d start-up objects frozen", self.gc.freeze())
        self.ready = True
        self.notifier.ready(self._status_line())
        log.info("ready in %.2f s", time.time() - self.started_at)
        await self._stop.wait()
        await self._shutdown()
        return 0

    def _bind(self) -> None:
        inherited = systemd.inherited_socket("pirag.socket")
        if inherited is not None:
            self.endpoint = adopt_endpoint(inherited)
            log.info("using the socket passed by systemd: %s", self.endpoint.path)
        else:
            self.endpoint = bind_endpoint(self.config.socket_path, self.config.server.socket_mode,
                                          self.config.server.listen_backlog)

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self.request_stop, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, self._request_reload)
        loop.add_signal_handler(signal.SIGUSR2, self._debug_stall)

    def request_stop(self, reason: str = "request") -> None:
        """Signal handlers only change state; the main coroutine does the work."""
        if not self._stop.is_set():
            log.info("%s: stopping", reason)
            self.notifier.stopping()
            self._stop.set()

    def _request_reload(self) -> None:
        self._reload_requested = True

    def _debug_stall(self) -> None:
        seconds = self.config.debug.stall_on_sigusr2_s
        if seconds > 0:
            log.warning("debug: blocking the event loop for %.1f s (debug.stall_on_sigusr2_s)", seconds)
            time.sleep(seconds)  # deliberately blocks the loop: the watchdog test needs a stalled loop

    async def _shutdown(self) -> None:
        self.gc.uninstall()
        if self._server is not None:
            self._server.close()  # stop accepting
        deadline = time.monotonic() + self.config.server.shutdown_timeout_s
        while self.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self.inflight:
            log.warning("shutdown: %d requests still running after %.0f s; closing anyway", self.inflight,
                        self.config.server.shutdown_timeout_s)
        for connection in list(self.connections):
            for task in connection.tasks:
                task.cancel()
            connection.close()
        await self.mcp.close()
        await self.app.close()
        for task in (self._tick_task, self._probe_task):
            if task is not None:
                task.cancel()
        if self.endpoint is not None:
            self.endpoint.close()
        self.request_log.flush()
        log.info("stopped")

    def _component_starting(self, name: str) -> None:
        self.starting_message = f"starting {name}"

    @property
    def state(self) -> str:
        """``starting`` (components loading; non-core ops answer ``unavailable``), ``ready``, ``stopping``."""
        if self._stop.is_set():
            return "stopping"
        return "ready" if self.ready else "starting"

    def progress(self, message: str) -> None:
        """Start-up progress from a component (model import): logged, shown in status and to systemd."""
        self.starting_message = message
        log.info("start-up: %s", message)
        self.notifier.extend_timeout(90)
        self.notifier.status(message)

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exception = context.get("exception")
        if exception is not None:
            self._unexpected.append(exception)
        log.error("event loop: %s", context.get("message"), exc_info=exception)

    # ----- periodic work -----------------------------------------------------------------------------------

    async def _probe_lag(self) -> None:
        """How late the loop wakes: anything that holds it (a slow callback, the GIL elsewhere) shows here."""
        while True:
            expected = time.perf_counter() + LAG_PROBE_S  # perf_counter: uvloop's loop.time() has 1 ms steps
            await asyncio.sleep(LAG_PROBE_S)
            self.metrics.lag.add(time.perf_counter() - expected)

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        watchdog = self.notifier.watchdog_interval()
        last_ping = last_status = last_metrics = loop.time()
        while True:
            await asyncio.sleep(TICK_S)
            now = loop.time()
            self.request_log.flush()
            self._check_timeouts()
            if watchdog is not None and now - last_ping >= watchdog:
                self.notifier.watchdog_ping()  # from the loop itself: a stalled loop stops the pings
                last_ping = now
            if self._reload_requested:
                self._reload_requested = False
                self._reload()
            if self.ready and now - last_status >= STATUS_EVERY_S:
                self.notifier.status(self._status_line(now - last_status))
                last_status = now
            self._maybe_trim(loop)
            if self.heap_tracer is not None and self.ready:  # baseline once ready: start-up is not growth
                self.heap_tracer.tick(now)
            interval = self.config.log.metrics_interval_s
            if interval and now - last_metrics >= interval:
                metric_line(self._metric_figures())
                last_metrics = now

    def _maybe_trim(self, loop: asyncio.AbstractEventLoop) -> None:
        """Every ``server.malloc_trim_interval_s``: give freed heap memory back (memtrim.py), on a worker thread."""
        interval = self.config.server.malloc_trim_interval_s
        if not interval or not memtrim.available or (self._trimming is not None and not self._trimming.done()):
            return
        now = time.monotonic()
        if now - self._last_trim < interval:
            return
        self._last_trim = now
        self.malloc_trims += 1
        self._trimming = loop.run_in_executor(None, memtrim.trim)

    def _check_timeouts(self) -> None:
        limits = self.config.server
        now = time.monotonic()
        for connection in list(self.connections):
            reason = connection.check_timeouts(now, limits.idle_timeout_s, limits.frame_timeout_s)
            if reason == "frame_timeout":  # idle closes are normal housekeeping, not errors
                log.warning("closed %s: a frame did not arrive whole within %.1f s", connection.label,
                            limits.frame_timeout_s)
                self.metrics.errors_by_code[reason] += 1

    def _status_line(self, elapsed: float | None = None) -> str:
        rate = self.metrics.requests_since_last() / elapsed if elapsed else 0.0
        parts = [f"{rate:.1f} req/s", f"{len(self.connections)} conns"]
        for name, figures in self.app.stats().items():
            line = figures.get("status_line") if isinstance(figures, dict) else None
            if line:
                parts.append(str(line))
        return "ready: " + ", ".join(parts)

    def _metric_figures(self) -> dict[str, Any]:
        return {
            "requests": dict(self.metrics.requests_by_op), "errors": dict(self.metrics.errors_by_code),
            "connections": len(self.connections), "inflight": self.inflight,
            "loop_lag": self.metrics.lag.summary(), "rss_bytes": rss_bytes(),
        }

    def _reload(self) -> None:
        self.notifier.reloading()
        try:
            new = load_config(self.config_path, **self.overrides)
        except ConfigError as exc:
            log.error("reload refused, keeping the running config: %s", exc)
            self.notifier.ready(self._status_line())
            return
        old_dict, new_dict = msgspec.to_builtins(self.config), msgspec.to_builtins(new)
        changed = [f"{section}.{key}" for section, values in new_dict.items() if isinstance(values, dict)
                   for key, value in values.items() if old_dict.get(section, {}).get(key) != value]
        applied = [key for key in changed if key.split(".")[0] in RELOADABLE]
        ignored = [key for key in changed if key not in applied]
        merged = msgspec.structs.replace(self.config, **{section: getattr(new, section) for section in RELOADABLE})
        self.config = merged
        set_level(merged.log.level)
        self.request_log.enabled = merged.log.requests
        self.app.reload(merged)
        log.info("reloaded config: applied %s; needs a restart: %s", applied or "nothing",
                 ignored or "nothing")
        self.notifier.ready(self._status_line())

    # ----- requests -------------------------------------------------------------------------------------

    def connection_error(self, connection: Connection, code: str, message: str,
                         details: dict[str, Any] | None = None) -> None:
        self.metrics.errors_by_code[code] += 1
        self.request_log.record(connection.label, "-", None, 0.0, code)
        connection.send(error_frame(None, code, message, details))

    def dispatch(self, connection: Connection, body: bytes) -> bool:
        """Decode one frame and answer or start it; False when the connection must close."""
        try:
            request = _request_decoder.decode(body)
        except msgspec.ValidationError as exc:
            request_id, code, message = explain_decode_failure(body, exc)
            self.metrics.errors_by_code[code] += 1
            self.request_log.record(connection.label, "-", request_id, 0.0, code)
            connection.send(error_frame(request_id, code, message))
            return True
        except (msgspec.DecodeError, UnicodeDecodeError, ValueError) as exc:
            # msgspec reports invalid UTF-8 in a string as UnicodeDecodeError, not DecodeError
            connection.refuse(errors.MALFORMED_FRAME, f"the frame is not valid msgpack: {exc}")
            return False
        op = type(request).__struct_config__.tag
        stream = self._streams.get(op)
        if stream is not None:
            self.metrics.requests_by_op[op] += 1
            outcome = stream(connection, request)
            if outcome != "ok":
                self.metrics.errors_by_code[outcome] += 1
            self.request_log.record(connection.label, op, request.id, 0.0, outcome)
            return True
        inline = self._inline.get(op)
        if inline is not None:  # core ops are answered at once: no task, no await
            self.metrics.requests_by_op[op] += 1
            connection.send(encode_frame(Reply(id=request.id, result=inline())))
            self.request_log.record(connection.label, op, request.id, 0.0, "ok")
            return True
        limits = self.config.server
        if len(connection.tasks) >= limits.max_inflight_per_connection or self.inflight >= limits.max_inflight_total:
            self.metrics.errors_by_code[errors.BUSY] += 1
            self.request_log.record(connection.label, op, request.id, 0.0, errors.BUSY)
            connection.send(error_frame(request.id, errors.BUSY,
                                        f"too many requests in flight (max {limits.max_inflight_per_connection} "
                                        f"per connection, {limits.max_inflight_total} in all)"))
            return True
        self.inflight += 1
        task = asyncio.get_running_loop().create_task(self._run(connection, op, request))
        connection.tasks.add(task)
        task.add_done_callback(connection.tasks.discard)
        return True

    async def _run(self, connection: Connection, op: str, request: Any) -> None:
        started = time.perf_counter()
        outcome = "ok"
        try:
            try:
                result = await self._call(connection, op, request)
                data = encode_frame(Reply(id=request.id, result=result))
            except errors.PiragError as exc:
                outcome = exc.code
                data = error_frame(request.id, exc.code, exc.message, exc.details)
            except asyncio.CancelledError:
                outcome = "cancelled"
                raise
            except Exception as exc:
                outcome = errors.INTERNAL
                log.exception("%s (id %s) failed", op, request.id)
                data = error_frame(request.id, errors.INTERNAL, f"{op} failed: {type(exc).__name__}: {exc}")
            connection.send(data)
        finally:
            self.inflight -= 1
            self.metrics.requests_by_op[op] += 1
            if outcome != "ok":
                self.metrics.errors_by_code[outcome] += 1
            self.request_log.record(connection.label, op, request.id, (time.perf_counter() - started) * 1000,
                                    outcome)

    async def _call(self, connection: Connection, op: str, request: Any) -> Any:
        handler = self.app.handlers.get(op)
        if handler is None:
            if not self.ready:
                raise errors.Unavailable(f"the daemon is starting ({self.starting_message}); retry shortly")
            raise errors.Unavailable(f"{op} is not available: no component of this daemon serves it")
        context = RequestContext(request_id=request.id, op=op, peer=connection.peer, app=self.app)
        return await handler(request.args, context)

    def _hello(self) -> HelloResult:
        limits = self.config.server
        return HelloResult(
            protocol=PROTOCOL_VERSION, server_version=__version__, pid=os.getpid(),
            capabilities=sorted(set(CORE_OPS) | set(self.app.handlers) | set(self._streams)),
            limits={"max_frame_bytes": limits.max_frame_bytes,
                    "max_inflight_per_connection": limits.max_inflight_per_connection})

    def _status(self) -> StatusResult:
        lag = self.metrics.lag.summary()
        components = self.app.stats()
        components["memtrim"] = {"available": memtrim.available, "trims": self.malloc_trims,
                                 "arenas": memtrim.arena_count(), "arena_max": self.config.server.malloc_arena_max,
                                 "interval_s": self.config.server.malloc_trim_interval_s}
        components["server"] = {"ready": self.ready, "starting": None if self.ready else self.starting_message,
                                "unexpected_loop_errors": len(self._unexpected),
                                "tasks": len(asyncio.all_tasks())}
        components["mcp"] = self.mcp.stats()
        components["gc"] = self.gc.stats()
        return StatusResult(
            version=__version__, protocol=PROTOCOL_VERSION, pid=os.getpid(),
            uptime_s=round(time.time() - self.started_at, 3), connections=len(self.connections),
            connections_total=self.metrics.connections_total, inflight=self.inflight,
            requests_by_op=dict(self.metrics.requests_by_op), errors_by_code=dict(self.metrics.errors_by_code),
            loop_lag=LatencySummary(**lag), rss_bytes=rss_bytes(),
            socket=str(self.endpoint.path if self.endpoint else self.config.socket_path),
            state_dir=str(self.config.state_path), config=summary(self.config), components=components,
            state=self.state, state_detail=self.starting_message if self.state == "starting" else None)

