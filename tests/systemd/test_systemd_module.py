"""Unit tests of pirag.daemon.systemd without systemd: a datagram socket stands in for NOTIFY_SOCKET."""

from __future__ import annotations

import logging
import os
import socket

import pytest

from pirag.daemon import systemd

from sd_helpers import NotifyListener


@pytest.fixture
def listener(monkeypatch):
    with NotifyListener() as notify:
        monkeypatch.setenv("NOTIFY_SOCKET", notify.path)
        yield notify


def test_disabled_outside_systemd(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    notifier = systemd.Notifier(logging.getLogger("test"))
    assert not notifier.enabled
    notifier.ready("x")
    notifier.status("x")
    notifier.watchdog_ping()
    notifier.reloading()
    notifier.extend_timeout(5)
    notifier.stopping()
    assert notifier.watchdog_interval() is None


def test_messages_in_order(listener):
    notifier = systemd.Notifier(logging.getLogger("test"))
    assert notifier.enabled
    notifier.extend_timeout(90)
    notifier.ready("model fake\nwarm ünïcode")
    notifier.status("projects 3")
    notifier.watchdog_ping()
    notifier.reloading()
    notifier.ready()
    notifier.stopping()
    messages = listener.drain(7)
    assert messages[0] == {"EXTEND_TIMEOUT_USEC": "90000000"}
    assert messages[1]["READY"] == "1"
    assert "\n" not in messages[1]["STATUS"] and messages[1]["STATUS"].isascii()
    assert messages[2] == {"STATUS": "projects 3"}
    assert messages[3] == {"WATCHDOG": "1"}
    assert messages[4]["RELOADING"] == "1" and int(messages[4]["MONOTONIC_USEC"]) > 0
    assert messages[5] == {"READY": "1"}
    assert messages[6] == {"STOPPING": "1"}


def test_send_failure_is_logged_not_raised(listener, caplog):
    notifier = systemd.Notifier(logging.getLogger("test.fail"))
    listener.close()  # the receiver disappears: sends now fail
    with caplog.at_level(logging.WARNING, logger="test.fail"):
        for _ in range(3):
            notifier.watchdog_ping()
    warnings = [r for r in caplog.records if "sd_notify" in r.getMessage()]
    assert len(warnings) == 1  # rate-limited


def test_bad_notify_socket_is_logged(monkeypatch, caplog):
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/notify")
    with caplog.at_level(logging.WARNING, logger="test.bad"):
        notifier = systemd.Notifier(logging.getLogger("test.bad"))
    assert not notifier.enabled
    assert any("NOTIFY_SOCKET" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("env, expected", [
    ({}, None),
    ({"WATCHDOG_USEC": "20000000"}, 10.0),
    ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())}, 10.0),
    ({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "junk"}, None),
])
def test_watchdog_interval(env, expected):
    assert systemd.watchdog_interval(env, os.getpid()) == expected


def _pass_socket(monkeypatch, names: list[str] | None, count: int = 1):
    """Put ``count`` listening sockets on fds 3.. as systemd would, and set LISTEN_* for this process."""
    holders = []
    for i in range(count):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(f"\0pirag-test-{os.getpid()}-{i}")
        s.listen()
        holders.append(s)
    saved = []
    for i, s in enumerate(holders):
        target = systemd.SD_LISTEN_FDS_START + i
        try:
            saved.append((target, os.dup(target)))
        except OSError:
            saved.append((target, None))
        os.dup2(s.fileno(), target)
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", str(count))
    if names:
        monkeypatch.setenv("LISTEN_FDNAMES", ":".join(names))
    return holders, saved


def _restore(saved):
    for target, copy in saved:
        if copy is None:
            try:
                os.close(target)
            except OSError:
                pass
        else:
            os.dup2(copy, target)
            os.close(copy)


def test_inherited_socket_by_name(monkeypatch):
    holders, saved = _pass_socket(monkeypatch, ["other", "pirag"], count=2)
    try:
        sock = systemd.inherited_socket("pirag")
        assert sock is not None and sock.fileno() == 4
        assert sock.getsockname() == holders[1].getsockname()
        assert "LISTEN_FDS" not in os.environ and "LISTEN_PID" not in os.environ
        assert "LISTEN_FDNAMES" not in os.environ
        sock.detach()
    finally:
        _restore(saved)
        for h in holders:
            h.close()


def test_inherited_socket_other_pid_is_ignored(monkeypatch):
    monkeypatch.setenv("LISTEN_PID", "1")
    monkeypatch.setenv("LISTEN_FDS", "1")
    assert systemd.inherited_socket() is None
    assert os.environ["LISTEN_FDS"] == "1"  # not ours: left alone


def test_inherited_socket_absent(monkeypatch):
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        monkeypatch.delenv(key, raising=False)
    assert systemd.inherited_socket() is None


def test_resource_facts():
    assert systemd.cpu_count() == len(os.sched_getaffinity(0))
    assert isinstance(systemd.memory_cgroup_available(), bool)
