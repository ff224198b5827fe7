"""The listen backlog reaches the kernel: a connect storm while the daemon starts is queued, not refused.

``loop.create_unix_server(sock=...)`` calls ``listen()`` again with its own backlog (100 unless told), which
undid the daemon's ``listen(1024)``: 300 connects at start-up got 89 EAGAIN refusals (FINDINGS.md). Here the
daemon is started on a fresh state directory with the real default model, so the model import is running;
once it logs "listening on" (after create_unix_server) it is frozen with SIGSTOP, the worst case of a busy
start-up (nothing accepts), and 300 non-blocking connects are made. Every one must be queued by the kernel
and, once the daemon runs again, answered. The same storm against ``listen_backlog = 100`` must see
refusals: the test can tell the two apart.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from pirag.client.framing import frame

from ..conftest import to_toml

PIRAG = str(Path(sys.executable).with_name("pirag"))
STORM = 300


def start_and_freeze(root: Path, config: dict) -> subprocess.Popen[bytes]:
    """``pirag serve``, stopped with SIGSTOP as soon as it listens (the log says so)."""
    config_path = root / "pirag.toml"
    config_path.write_text(to_toml(config))
    log_path = root / "daemon.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([PIRAG, "serve", "--config", str(config_path)], stdout=log,
                                   stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    deadline = time.monotonic() + 120
    while "listening on" not in log_path.read_text(errors="replace"):
        assert process.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, "the daemon never listened"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGSTOP)
    return process


def storm(path: str) -> tuple[list[socket.socket], int]:
    """STORM non-blocking connects in a burst: (connected sockets, refusals)."""
    connected, refused = [], 0
    for _ in range(STORM):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(path)
        except OSError as exc:
            assert exc.errno in (errno.EAGAIN, errno.ECONNREFUSED), exc
            refused += 1
            sock.close()
            continue
        connected.append(sock)
    return connected, refused


def answered(sockets: list[socket.socket]) -> int:
    """Send each a ping; count the sockets that get a reply frame (pong, or an error such as busy)."""
    ping = frame(msgspec.msgpack.encode({"id": 1, "op": "ping", "args": {}}))
    replies = 0
    for sock in sockets:
        sock.setblocking(True)
        sock.settimeout(60)
        try:
            sock.sendall(ping)
            header = sock.recv(4)
            if len(header) == 4 and struct.unpack(">I", header)[0] > 0:
                replies += 1
        except OSError:
            pass
        finally:
            sock.close()
    return replies


@pytest.mark.slow
@pytest.mark.parametrize("backlog, model", [(None, ""), (100, "fake")], ids=["default-real-import", "backlog-100"])
def test_connect_storm_while_starting(short_tmp: Path, backlog: int | None, model: str) -> None:
    root = short_tmp / f"storm{backlog or 'default'}"
    root.mkdir()
    server = {"socket": str(root / "s.sock"), "max_connections": 2 * STORM}
    if backlog is not None:
        server["listen_backlog"] = backlog
    config = {"state_dir": str(root / "state"), "server": server, "log": {"requests": False}}
    if model:
        config["embed"] = {"model": model}
    process = start_and_freeze(root, config)
    try:
        # a fresh state directory: the model import is part of this start and has not finished
        assert model or not list((root / "state").glob("models/*.gguf"))
        sockets, refused = storm(str(root / "s.sock"))
        os.kill(process.pid, signal.SIGCONT)
        replies = answered(sockets)
        if backlog is None:
            assert refused == 0, f"{refused} of {STORM} connects refused with the default backlog"
            assert replies == STORM
        else:
            assert refused >= STORM - backlog - 5, f"backlog {backlog}: only {refused} refusals"
            assert replies == STORM - refused
    finally:
        os.kill(process.pid, signal.SIGCONT)
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
