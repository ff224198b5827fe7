"""The newcomer's path: common options before or after the subcommand, ``status``'s top-level state, and
``pirag status --wait`` against a real daemon that is still importing its model."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from pirag.client import Client
from pirag.client.errors import PiragError

from ..conftest import to_toml

PIRAG = str(Path(sys.executable).with_name("pirag"))


def pirag(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PIRAG, *args], capture_output=True, text=True, timeout=timeout)


def test_common_options_before_and_after_the_subcommand(daemon: Any) -> None:
    socket = str(daemon.socket)
    before = pirag("--socket", socket, "--json", "status")
    after = pirag("status", "--socket", socket, "--json")
    mixed = pirag("--json", "status", "--socket", socket)
    for result in (before, after, mixed):
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["socket"] == socket
    # given in both places, the one after the subcommand wins
    wins = pirag("--socket", "/tmp/pirag-nowhere.sock", "ping", "--socket", socket)
    assert wins.returncode == 0 and socket in wins.stdout
    loses = pirag("--socket", socket, "ping", "--socket", "/tmp/pirag-nowhere.sock")
    assert loses.returncode == 3 and "/tmp/pirag-nowhere.sock" in loses.stderr
    assert pirag("--timeout", "5", "--socket", socket, "version").returncode == 0


def test_status_has_a_top_level_state(daemon: Any) -> None:
    with daemon.client() as client:
        status = client.status()
    assert status.state == "ready" and status.state_detail is None
    human = pirag("status", "--socket", str(daemon.socket))
    assert human.returncode == 0 and "state       ready" in human.stdout


def test_wait_times_out_with_a_clear_line_when_nothing_listens() -> None:
    started = time.monotonic()
    result = pirag("status", "--wait", "--timeout", "1.5", "--socket", "/tmp/pirag-nowhere.sock")
    assert result.returncode == 3
    assert "not ready after 1.5 s" in result.stderr and "not answering" in result.stderr
    assert time.monotonic() - started < 30


@pytest.fixture()
def starting_daemon() -> Any:
    """``pirag serve`` on a fresh state dir: it imports the default model first (seconds), so it is observably
    ``starting`` for a while."""
    root = Path(tempfile.mkdtemp(prefix="pw-", dir="/tmp"))
    socket = root / "s.sock"
    config = root / "pirag.toml"
    config.write_text(to_toml({"state_dir": str(root / "state"), "server": {"socket": str(socket)},
                               "log": {"metrics_interval_s": 0.0}}))
    log = open(root / "log", "wb")
    process = subprocess.Popen([PIRAG, "serve", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT,
                               env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        yield socket, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def test_wait_returns_once_the_daemon_is_ready(starting_daemon: Any) -> None:
    socket, process = starting_daemon
    waiter = subprocess.Popen([PIRAG, "status", "--wait", "--timeout", "240", "--json", "--socket", str(socket)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: list[tuple[str, str | None]] = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with Client(socket, timeout=5) as client:
                status = client.status()
            seen.append((status.state, status.state_detail))
            if status.state == "ready":
                break
            if len(seen) == 1:
                # up but not ready within a short timeout: exit 1 and say what it is doing
                early = pirag("status", "--wait", "--timeout", "0.3", "--socket", str(socket))
                assert early.returncode in (0, 1), early.stderr
                if early.returncode == 1:
                    assert "not ready after 0.3 s: starting (" in early.stderr, early.stderr
        except PiragError:
            pass
        time.sleep(0.02)
    out, err = waiter.communicate(timeout=240)
    assert waiter.returncode == 0, err
    assert json.loads(out)["state"] == "ready"
    starting = [detail for state, detail in seen if state == "starting"]
    assert starting, f"never saw the daemon starting: {seen[:5]}"
    assert all(detail for detail in starting)             # what start-up is doing, e.g. importing the model
    assert seen[-1][0] == "ready"
    quick = pirag("status", "--wait", "--timeout", "2", "--socket", str(socket))
    assert quick.returncode == 0 and "state       ready" in quick.stdout
