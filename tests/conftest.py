"""Shared fixtures: the real daemon, started as its own process with pytest-xprocess.

- ``daemon_factory(name, config)`` starts ``pirag serve --config FILE`` on a short socket path under /tmp
  (pytest's tmp paths can exceed the 107-byte socket limit) and returns a ``DaemonHandle``.
- ``daemon``: a module-scoped daemon with the fake embedder (plumbing tests: fast, deterministic).
- ``real_daemon``: a session-scoped daemon with the real embedded default model (behaviour tests).

At teardown each daemon's log is checked: an exception that reached the event loop's exception handler,
or a traceback, fails the test run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from xprocess import ProcessStarter

from pirag.client import Client
from pirag.client.errors import PiragError

REPO = Path(__file__).resolve().parent.parent
PIRAG = str(Path(sys.executable).with_name("pirag"))


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def to_toml(config: dict[str, Any]) -> str:
    """A small TOML writer for test configs: top-level scalars, then one table per section."""
    lines = [f"{key} = {toml_value(value)}" for key, value in config.items() if not isinstance(value, dict)]
    for section, values in config.items():
        if isinstance(values, dict):
            lines.append(f"\n[{section}]")
            lines.extend(f"{key} = {toml_value(value)}" for key, value in values.items())
    return "\n".join(lines) + "\n"


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = {key: dict(value) if isinstance(value, dict) else value for key, value in base.items()}
    for key, value in extra.items():
        if isinstance(value, dict):
            merged.setdefault(key, {}).update(value)
        else:
            merged[key] = value
    return merged


@dataclass
class DaemonHandle:
    name: str
    root: Path
    socket: Path
    state_dir: Path
    config_path: Path
    log_path: Path
    xprocess: Any
    config: dict[str, Any] = field(default_factory=dict)

    def client(self, **kwargs: Any) -> Client:
        return Client(self.socket, **kwargs)

    @property
    def pid(self) -> int:
        with self.client() as client:
            return client.status().pid

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def is_running(self) -> bool:
        info = self.xprocess.getinfo(self.name)
        return info.isrunning()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        info = self.xprocess.getinfo(self.name)
        if not info.isrunning():
            return
        os.kill(info.pid, sig)
        deadline = time.monotonic() + timeout
        while info.isrunning() and time.monotonic() < deadline:
            time.sleep(0.05)
        if info.isrunning():
            info.terminate()

    def kill9(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: no shutdown code runs."""
        self.stop(signal.SIGKILL, timeout=10)

    def restart(self) -> None:
        self.stop()
        start_daemon(self.xprocess, self.name, self.root, self.config)

    def assert_clean_log(self) -> None:
        text = self.log_text()
        offending = [line for line in text.splitlines()
                     if "| pirag.server | event loop:" in line or line.startswith("Traceback")]
        assert not offending, f"daemon {self.name} logged unexpected errors:\n" + "\n".join(offending[:20])


def start_daemon(xprocess: Any, name: str, root: Path, config: dict[str, Any], timeout: float = 300) -> DaemonHandle:
    socket_path = root / "s.sock"
    state_dir = root / "state"
    config = merge({"state_dir": str(state_dir), "server": {"socket": str(socket_path)},
                    "log": {"metrics_interval_s": 0.0}}, config)
    config_path = root / "pirag.toml"
    config_path.write_text(to_toml(config))

    class Starter(ProcessStarter):
        args = [PIRAG, "serve", "--config", str(config_path)]
        pattern = r"ready in|start-up failed"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        terminate_on_interrupt = True
        max_read_lines = 100_000

    Starter.timeout = timeout
    shutil.rmtree(Path(xprocess.rootdir) / name, ignore_errors=True)  # names repeat across runs: drop old logs
    _, log_file = xprocess.ensure(name, Starter, restart=True)
    handle = DaemonHandle(name=name, root=root, socket=socket_path, state_dir=state_dir, config_path=config_path,
                          log_path=Path(log_file), xprocess=xprocess, config=config)
    if "start-up failed" in handle.log_text().split("listening on")[-1]:
        raise RuntimeError(f"daemon {name} failed to start:\n{handle.log_text()[-4000:]}")
    return handle


@pytest.fixture(scope="session")
def short_tmp() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="pt-", dir="/tmp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def daemon_factory(xprocess: Any, short_tmp: Path) -> Iterator[Any]:
    started: list[DaemonHandle] = []
    counter = iter(range(1_000_000))

    def factory(name: str, config: dict[str, Any] | None = None, timeout: float = 300) -> DaemonHandle:
        root = short_tmp / f"{name[:20]}{next(counter)}"
        root.mkdir()
        # short_tmp is unique per session: concurrent pytest runs sharing .pytest_cache never share a name
        handle = start_daemon(xprocess, f"pirag-{short_tmp.name}-{root.name}", root, config or {}, timeout)
        started.append(handle)
        return handle

    yield factory
    failures = []
    for handle in started:
        handle.stop()
        try:
            handle.assert_clean_log()
        except AssertionError as exc:
            failures.append(str(exc))  # its log stays in .pytest_cache/d/.xprocess for a look
        else:
            shutil.rmtree(Path(xprocess.rootdir) / handle.name, ignore_errors=True)
    assert not failures, "\n\n".join(failures)


FAKE_MODEL = {"embed": {"model": "fake"}}


@pytest.fixture(scope="module")
def daemon(daemon_factory: Any) -> DaemonHandle:
    """A daemon with the fake embedder, shared by the tests of one module."""
    return daemon_factory("fake", FAKE_MODEL)


@pytest.fixture(scope="session")
def real_daemon(daemon_factory: Any) -> DaemonHandle:
    """A daemon with the real embedded default model, shared by the whole session."""
    return daemon_factory("real", {})


@pytest.fixture
def client(daemon: DaemonHandle) -> Iterator[Client]:
    with daemon.client() as client:
        yield client


def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns a truthy value; the value, or AssertionError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except PiragError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
