"""``pirag serve``: load the config, set up logging, run the server on uvloop until it is told to stop."""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import sys

from .components import build_components
from .config import ConfigError, load_config
from .endpoint import EndpointError
from .log import setup_logging

log = logging.getLogger("pirag.serve")


def serve(config_path: str | None, socket: str | None, state_dir: str | None) -> int:
    """Run the daemon in the foreground; returns the process exit code."""
    try:
        config = load_config(config_path, socket=socket, state_dir=state_dir)
    except ConfigError as exc:
        print(f"pirag: config error: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log.level)
    from . import memtrim
    memtrim.limit_arenas(config.server.malloc_arena_max)   # before any thread exists (memtrim.py)
    sys.setswitchinterval(config.server.gil_switch_interval_ms / 1000.0)
    # A watchdog kill (SIGABRT) or a crash in native code then leaves the Python stacks in the journal.
    faulthandler.enable()
    try:
        config.state_path.mkdir(parents=True, exist_ok=True, mode=0o750)
    except OSError as exc:
        log.error("cannot create the state directory %s: %s", config.state_path, exc.strerror)
        return 1

    from .app import App
    from .server import Server

    from . import heapdebug

    async def main() -> int:
        tracer = heapdebug.from_env(config.state_path)  # first: the components' allocations are traced too
        app = App(config)
        server = Server(config, app, config_path=config_path, overrides={"socket": socket, "state_dir": state_dir})
        server.heap_tracer = tracer
        try:
            components = build_components(config, server.progress)
        except (ConfigError, ValueError, OSError) as exc:
            log.error("cannot build the daemon's components: %s", exc)
            return 1
        try:
            return await server.run(components)
        except EndpointError as exc:
            log.error("%s", exc)
            return 1

    try:
        import uvloop
    except ImportError:  # uvloop is a dependency; this only keeps a broken install debuggable
        return asyncio.run(main())
    return uvloop.run(main())
