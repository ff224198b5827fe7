"""The real daemon's systemd protocol, without systemd.

A datagram socket stands in for NOTIFY_SOCKET and records what ``pirag serve`` says: READY (with STATUS),
periodic STATUS, WATCHDOG at half of WATCHDOG_USEC, RELOADING + MONOTONIC_USEC then READY around SIGHUP,
STOPPING on SIGTERM, in that order; while the loop is stalled (SIGUSR2 with debug.stall_on_sigusr2_s) no ping
arrives. Then ``/usr/bin/systemd-socket-activate`` starts the daemon with an activated socket, the client works
through it, and the socket file survives the daemon's exit. The fake embedder is used: the model is not the
point here (the nspawn test uses the real one).
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from pirag.client import Client

from sd_helpers import PIRAG, NotifyListener, daemon_env, require_tools, short_tmpdir, tail, write_config

WATCHDOG_USEC = 1_000_000     # pings every 0.5 s
STALL_S = 3.0


@pytest.fixture
def workdir():
    path = short_tmpdir("psd-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def stop(process: subprocess.Popen, timeout: float = 30) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


def test_notify_sequence_and_stalled_loop(workdir: Path):
    config = write_config(workdir, {
        "embed": {"model": "fake"},
        "log": {"metrics_interval_s": 0.0},
        "debug": {"stall_on_sigusr2_s": STALL_S},
    }, top={"state_dir": str(workdir / "state")})
    sock_path = workdir / "pirag.sock"
    log_path = workdir / "daemon.log"
    with NotifyListener() as notify, open(log_path, "wb") as log_file:
        env = daemon_env(NOTIFY_SOCKET=notify.path, WATCHDOG_USEC=str(WATCHDOG_USEC), PIRAG_SOCKET=str(sock_path))
        process = subprocess.Popen([PIRAG, "serve", "--config", str(config)], env=env,
                                   stdout=log_file, stderr=subprocess.STDOUT)
        env["WATCHDOG_PID"] = str(process.pid)
        try:
            _, ready = notify.wait_for("READY", timeout=60)
            assert ready["READY"] == "1"
            assert ready.get("STATUS", "").startswith("ready"), ready
            with Client(sock_path, timeout=10) as client:
                client.ping()

            # Pings at about half of WATCHDOG_USEC, from the running loop.
            notify.wait_for("WATCHDOG", timeout=3)
            first, _ = notify.wait_for("WATCHDOG", timeout=3)
            second, _ = notify.wait_for("WATCHDOG", timeout=3)
            assert 0.2 <= second - first <= 1.0, second - first

            # A live summary every few seconds.
            _, status = notify.wait_for("STATUS", timeout=10)
            assert "req/s" in status["STATUS"], status

            # A stalled loop sends no ping for the whole stall; pings come back after it.
            stalled_at = time.monotonic()
            process.send_signal(signal.SIGUSR2)
            time.sleep(STALL_S + 1.5)
            pings = notify.times_of("WATCHDOG", since=stalled_at)
            during = [at for at in pings if stalled_at + 0.6 <= at <= stalled_at + STALL_S - 0.2]
            after = [at for at in pings if at > stalled_at + STALL_S]
            assert during == [], f"pings during the stall at +{[round(at - stalled_at, 2) for at in during]}"
            assert after, "pings did not resume after the stall"
            gap = max(b - a for a, b in zip([stalled_at] + pings, pings))
            assert gap >= STALL_S - 0.6, gap

            # SIGHUP: RELOADING=1 with MONOTONIC_USEC, then READY=1 again.
            process.send_signal(signal.SIGHUP)
            _, reloading = notify.wait_for("RELOADING", timeout=5)
            usec = int(reloading["MONOTONIC_USEC"])
            assert abs(usec / 1e6 - time.clock_gettime(time.CLOCK_MONOTONIC)) < 10
            notify.wait_for("READY", timeout=5)

            # SIGTERM: STOPPING=1 and a clean exit.
            process.send_signal(signal.SIGTERM)
            notify.wait_for("STOPPING", timeout=5)
            assert process.wait(30) == 0, tail(log_path)
        except BaseException:
            print(tail(log_path))
            raise
        finally:
            if process.poll() is None:
                stop(process)
        order = [key for key in notify.events(("READY", "RELOADING", "STOPPING"))]
        assert order == ["READY", "RELOADING", "READY", "STOPPING"], order
        assert not sock_path.exists(), "the daemon's own socket should be removed at exit"


@require_tools("systemd-socket-activate")
def test_socket_activation(workdir: Path):
    config = write_config(workdir, {
        "embed": {"model": "fake"}, "log": {"metrics_interval_s": 0.0},
    }, top={"state_dir": str(workdir / "state")})
    sock_path = workdir / "activated.sock"
    log_path = workdir / "daemon.log"
    env = daemon_env()
    passed = ["PATH", "HOME", "LANG", "VIRTUAL_ENV"]
    with NotifyListener() as notify, open(log_path, "wb") as log_file:
        argv = ["systemd-socket-activate", "--listen", str(sock_path),
                *[f"--setenv={key}" for key in passed if key in env],
                f"--setenv=NOTIFY_SOCKET={notify.path}",
                # A different path than the activated one: the daemon must use the passed socket, not bind.
                f"--setenv=PIRAG_SOCKET={workdir / 'not-used.sock'}",
                PIRAG, "serve", "--config", str(config)]
        process = subprocess.Popen(argv, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 10
            while not sock_path.exists():
                assert process.poll() is None, tail(log_path)
                assert time.monotonic() < deadline, "systemd-socket-activate did not create the socket"
                time.sleep(0.05)
            # The first connection launches the daemon; the client waits in the backlog until it accepts.
            with Client(sock_path, timeout=60) as client:
                client.ping()
                status = client.status()
            assert status is not None
            notify.wait_for("READY", timeout=30)
            assert "using the socket passed by systemd" in log_path.read_text(), tail(log_path)
            assert not (workdir / "not-used.sock").exists()
            assert stop(process) == 0, tail(log_path)
        except BaseException:
            print(tail(log_path))
            raise
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert "STOPPING" in notify.events(("STOPPING",))
    # systemd owns the socket file: the daemon must not have unlinked it.
    assert sock_path.exists() and stat.S_ISSOCK(os.stat(sock_path).st_mode), "the activated socket was unlinked"
