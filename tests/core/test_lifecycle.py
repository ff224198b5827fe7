"""Start, refuse, take over, reload and stop: the daemon's lifecycle with the real process."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pirag.client import AsyncClient, Client

from ..conftest import PIRAG, DaemonHandle, to_toml, wait_until

FAKE = {"embed": {"model": "fake"}}


def test_socket_and_directory_modes(daemon: DaemonHandle) -> None:
    assert stat.S_IMODE(os.stat(daemon.socket).st_mode) == 0o660
    assert stat.S_ISSOCK(os.stat(daemon.socket).st_mode)


def test_second_daemon_on_the_same_socket_is_refused(daemon: DaemonHandle) -> None:
    result = subprocess.run([PIRAG, "serve", "--config", str(daemon.config_path)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    assert "another pirag daemon" in result.stderr and str(daemon.pid) in result.stderr
    with daemon.client() as client:  # the first one is untouched
        assert client.ping().pong


def test_stale_socket_file_is_taken_over(short_tmp: Path) -> None:
    root = short_tmp / "stale"
    root.mkdir()
    path = root / "s.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # a socket file nobody listens on, as a killed daemon leaves it
    config = root / "c.toml"
    config.write_text(to_toml({"state_dir": str(root / "state"), "server": {"socket": str(path)}, **FAKE}))
    process = subprocess.Popen([PIRAG, "serve", "--config", str(config)], stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: Client(path, connect_timeout=1).ping(), timeout=30).pong
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert not path.exists(), "the daemon removes the socket file it created"


def test_a_regular_file_at_the_socket_path_is_not_replaced(short_tmp: Path) -> None:
    root = short_tmp / "notsock"
    root.mkdir()
    path = root / "s.sock"
    path.write_text("precious")
    config = root / "c.toml"
    config.write_text(to_toml({"state_dir": str(root / "state"), "server": {"socket": str(path)}, **FAKE}))
    result = subprocess.run([PIRAG, "serve", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "is not a socket" in result.stderr
    assert path.read_text() == "precious"


def test_bad_config_stops_start_up_naming_file_and_key(short_tmp: Path) -> None:
    config = short_tmp / "bad.toml"
    config.write_text("[server]\nmax_frame_bytes = 'big'\n")
    result = subprocess.run([PIRAG, "serve", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert str(config) in result.stderr and "server.max_frame_bytes" in result.stderr


def test_sigterm_finishes_in_flight_requests_and_exits_zero(daemon_factory) -> None:
    handle = daemon_factory("term", FAKE)
    import asyncio

    async def main() -> list[object]:
        async with AsyncClient(handle.socket) as client:
            await client.ping()
            pending = [asyncio.ensure_future(client.status()) for _ in range(50)]
            await asyncio.sleep(0.005)  # the frames are on the wire
            os.kill(client_pid, signal.SIGTERM)
            return await asyncio.gather(*pending, return_exceptions=True)

    client_pid = handle.pid
    results = asyncio.run(main())
    # Requests that reached the daemon before SIGTERM were answered; none hung.
    assert any(getattr(result, "pid", None) == client_pid for result in results)
    from pirag.client.errors import ConnectionFailed

    assert all(getattr(r, "pid", None) == client_pid or isinstance(r, ConnectionFailed) for r in results)
    wait_until(lambda: not handle.is_running(), timeout=30)
    assert not handle.socket.exists()
    assert "SIGTERM: stopping" in handle.log_text() and "stopped" in handle.log_text()


def test_sighup_reloads_the_reloadable_part_and_logs_the_rest(daemon_factory) -> None:
    handle = daemon_factory("hup", FAKE)
    text = handle.config_path.read_text()
    text = text.replace('[log]\n', '[log]\nlevel = "debug"\n').replace("[server]\n", "[server]\nmax_connections = 7\n")
    handle.config_path.write_text(text)
    os.kill(handle.pid, signal.SIGHUP)
    wait_until(lambda: "reloaded config" in handle.log_text(), timeout=10)
    line = [line for line in handle.log_text().splitlines() if "reloaded config" in line][-1]
    assert "log.level" in line.split("needs a restart")[0]
    assert "server.max_connections" in line.split("needs a restart")[1]
    handle.config_path.write_text("[server\n")  # a broken file is refused; the running config stays
    os.kill(handle.pid, signal.SIGHUP)
    wait_until(lambda: "reload refused" in handle.log_text(), timeout=10)
    with handle.client() as client:
        assert client.ping().pong


def test_cli_exit_codes_and_json(daemon: DaemonHandle, short_tmp: Path) -> None:
    ok = subprocess.run([PIRAG, "status", "--json", "--socket", str(daemon.socket)], capture_output=True, text=True)
    assert ok.returncode == 0
    import json

    status = json.loads(ok.stdout)
    for key in ("version", "uptime_s", "pid", "connections", "requests_by_op", "errors_by_code", "loop_lag",
                "rss_bytes", "config"):
        assert key in status
    assert {"p50_ms", "p99_ms", "histogram"} <= set(status["loop_lag"])
    assert sum(status["loop_lag"]["histogram"]) == status["loop_lag"]["samples"] > 0   # the probe runs
    human = subprocess.run([PIRAG, "status", "--socket", str(daemon.socket)], capture_output=True, text=True)
    assert human.returncode == 0 and "loop lag" in human.stdout
    down = subprocess.run([PIRAG, "ping", "--socket", str(short_tmp / "none.sock")], capture_output=True, text=True)
    assert down.returncode == 3
    assert len(down.stderr.strip().splitlines()) == 1 and "cannot connect" in down.stderr
    version = subprocess.run([PIRAG, "version", "--json", "--socket", str(daemon.socket)], capture_output=True,
                             text=True)
    assert json.loads(version.stdout)["daemon"] == json.loads(version.stdout)["client"]


def test_socket_path_too_long_is_a_clear_error(short_tmp: Path) -> None:
    long_socket = "/tmp/" + "x" * 120 + ".sock"
    result = subprocess.run([PIRAG, "serve", "--socket", long_socket, "--state-dir", str(short_tmp / "st")],
                            capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, PIRAG_SOCKET=""))
    assert result.returncode == 1 and "107 bytes" in result.stderr


@pytest.mark.parametrize("missing", ["PIRAG_SOCKET"])
def test_environment_socket_is_honoured(daemon: DaemonHandle, missing: str) -> None:
    result = subprocess.run([PIRAG, "ping", "--json"], capture_output=True, text=True,
                            env=dict(os.environ, PIRAG_SOCKET=str(daemon.socket)))
    assert result.returncode == 0 and str(daemon.socket) in result.stdout


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
