"""Shared helpers of the systemd tests (tests/conftest.py belongs to the daemon core).

- :class:`NotifyListener`: a datagram socket posing as systemd's ``NOTIFY_SOCKET``; a thread records every
  sd_notify message with its arrival time, so gaps (a stalled loop) can be measured.
- :func:`daemon_env`, :func:`write_config`: run the real ``pirag serve`` as its own process.
- :func:`require_tools`, :func:`require_root`: skip with a reason on machines that cannot run a test.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
PIRAG = str(Path(sys.executable).with_name("pirag"))


def parse_notify(datagram: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in datagram.decode("utf-8", "replace").split("\n"):
        if "=" in line:
            key, value = line.split("=", 1)
            fields[key] = value
    return fields


class NotifyListener:
    """Collects sd_notify datagrams in arrival order as ``(monotonic_time, fields)``."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="pn-", dir="/tmp")  # short: Unix socket paths are <= 107 bytes
        self.path = os.path.join(self._dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._cursor = 0
        self._changed = threading.Condition()
        self._running = True
        self._thread = threading.Thread(target=self._receive, name="notify-listener", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while self._running:
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            with self._changed:
                self.messages.append((time.monotonic(), parse_notify(data)))
                self._changed.notify_all()

    def __enter__(self) -> "NotifyListener":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=2)
        self.sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def next(self, timeout: float) -> dict[str, str] | None:
        """The next message not yet returned, or None after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._cursor >= len(self.messages):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._changed.wait(remaining)
            message = self.messages[self._cursor][1]
            self._cursor += 1
            return message

    def drain(self, count: int, timeout: float = 5.0) -> list[dict[str, str]]:
        """Exactly ``count`` further messages (fails if they do not arrive within ``timeout``)."""
        deadline = time.monotonic() + timeout
        got = []
        while len(got) < count:
            message = self.next(deadline - time.monotonic())
            if message is None:
                raise AssertionError(f"only {len(got)} of {count} notifications arrived: {got}")
            got.append(message)
        return got

    def wait_for(self, key: str, timeout: float, value: str | None = None) -> tuple[float, dict[str, str]]:
        """Skip to the next message carrying ``key`` (with ``value`` if given); returns (arrival, fields)."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.next(deadline - time.monotonic())
            if message is None:
                seen = [m for _, m in self.messages][-10:]
                raise AssertionError(f"no {key}= notification within {timeout}s; last ones: {seen}")
            if key in message and (value is None or message[key] == value):
                return self.messages[self._cursor - 1][0], message

    def times_of(self, key: str, since: float = 0.0) -> list[float]:
        with self._changed:
            return [at for at, message in self.messages if key in message and at >= since]

    def events(self, keys: tuple[str, ...]) -> list[str]:
        """The sequence of the given keys, in arrival order (a message may carry several)."""
        with self._changed:
            return [key for _, message in self.messages for key in keys if key in message]


def short_tmpdir(prefix: str) -> Path:
    """A directory under /tmp whose socket paths stay under the 107-byte limit."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def write_config(directory: Path, values: dict[str, dict[str, Any]], top: dict[str, Any] | None = None) -> Path:
    lines = [f"{key} = {json.dumps(value)}" for key, value in (top or {}).items()]
    for section, entries in values.items():
        lines.append(f"[{section}]")
        for key, value in entries.items():
            lines.append(f"{key} = {json.dumps(value)}")  # JSON scalars/strings/lists are valid TOML here
    path = directory / "pirag.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def daemon_env(**extra: str) -> dict[str, str]:
    """The test process's environment without anything systemd-ish that could leak in, plus ``extra``."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_PID", "LISTEN_FDS",
                          "LISTEN_FDNAMES", "PIRAG_SOCKET", "RUNTIME_DIRECTORY", "STATE_DIRECTORY")}
    env.update(extra)
    return env


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} unreadable)"


def require_tools(*tools: str) -> pytest.MarkDecorator:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)} (not installed)")


def require_root() -> pytest.MarkDecorator:
    return pytest.mark.skipif(os.geteuid() != 0, reason="needs root (debootstrap, systemd-nspawn)")
