"""Shared helpers of the systemd tests (tests/conftest.py belongs to the daemon core)."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import pytest


def parse_notify(datagram: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in datagram.decode("utf-8", "replace").split("\n"):
        if "=" in line:
            key, value = line.split("=", 1)
            fields[key] = value
    return fields


class NotifyListener:
    """A datagram socket posing as systemd's NOTIFY_SOCKET; collects sd_notify messages in arrival order."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="pn-", dir="/tmp")  # short: Unix socket paths are <= 107 bytes
        self.path = os.path.join(self._dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[tuple[float, dict[str, str]]] = []

    def __enter__(self) -> "NotifyListener":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.sock.close()
        for path in (self.path,):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        try:
            os.rmdir(self._dir)
        except OSError:
            pass

    def poll(self, timeout: float) -> dict[str, str] | None:
        """The next message, or None after ``timeout`` seconds."""
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(65536)
        except (TimeoutError, socket.timeout):
            return None
        message = parse_notify(data)
        self.messages.append((time.monotonic(), message))
        return message

    def drain(self, count: int, timeout: float = 5.0) -> list[dict[str, str]]:
        """Exactly ``count`` messages (fails if they do not arrive within ``timeout``)."""
        deadline = time.monotonic() + timeout
        got = []
        while len(got) < count:
            message = self.poll(deadline - time.monotonic())
            if message is None:
                raise AssertionError(f"only {len(got)} of {count} notifications arrived: {got}")
            got.append(message)
        return got

    def wait_for(self, key: str, timeout: float, value: str | None = None) -> dict[str, str]:
        """Read messages until one carries ``key`` (with ``value`` if given)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [m for _, m in self.messages]
                raise AssertionError(f"no {key}= notification within {timeout}s; got {seen[-10:]}")
            message = self.poll(remaining)
            if message is not None and key in message and (value is None or message[key] == value):
                return message


REPO = Path(__file__).resolve().parents[2]


def require_tools(*tools: str) -> pytest.MarkDecorator:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)} (not installed)")
