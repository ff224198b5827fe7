"""MCP sessions over a socket passed by systemd (``systemd-socket-activate``, the same mechanism as
``pirag.socket``): the session op needs nothing of its own from the socket, so activation keeps working."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pirag.client import Client

from ..conftest import PIRAG, to_toml
from .helpers import bridge_session, call_ok

pytestmark = [pytest.mark.anyio,
              pytest.mark.skipif(shutil.which("systemd-socket-activate") is None,
                                 reason="systemd-socket-activate is not installed (package systemd)")]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pma-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_a_session_through_an_activated_socket(workdir: Path) -> None:
    config = workdir / "pirag.toml"
    config.write_text(to_toml({"state_dir": str(workdir / "state"), "embed": {"model": "fake"},
                               "log": {"metrics_interval_s": 0.0}}))
    socket_path = workdir / "activated.sock"
    log_path = workdir / "daemon.log"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PIRAG_", "LISTEN_"))}
    argv = ["systemd-socket-activate", "--listen", str(socket_path),
            *[f"--setenv={key}" for key in ("PATH", "HOME", "LANG", "VIRTUAL_ENV") if key in env],
            PIRAG, "serve", "--config", str(config)]
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(argv, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while not socket_path.exists():
            assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        with Client(socket_path, timeout=60) as client:   # the first connection starts the daemon
            while not client.status().components["server"]["ready"]:
                assert time.monotonic() < deadline + 120, log_path.read_text()
                time.sleep(0.1)
        async with bridge_session(socket_path, "--project", "activated") as session:
            text, data = await call_ok(session, "remember", content="Activated sockets carry MCP sessions too.")
            assert data["created"]
            _, data = await call_ok(session, "recall", query="activated sockets")
            assert "Activated sockets carry MCP sessions too." in {fact["content"] for fact in data["facts"]}
        assert "using the socket passed by systemd" in log_path.read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert "Traceback" not in log_path.read_text(), log_path.read_text()[-3000:]
