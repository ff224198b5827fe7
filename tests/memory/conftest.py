"""Fixtures of the memory tests: a real daemon (`pirag serve`) serving the memory ops."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from xprocess import ProcessStarter

from tests.conftest import PIRAG, DaemonHandle, merge, to_toml

FAKE = {"embed": {"model": "fake"}, "memory": {"timezone": "UTC"}}


class MemoryDaemon(DaemonHandle):
    def restart(self) -> None:
        self.stop()
        launch(self.xprocess, self.name, self.root, self.config)

    def kill9(self) -> None:
        import signal

        info = self.xprocess.getinfo(self.name)
        os.kill(info.pid, signal.SIGKILL)
        import time

        deadline = time.monotonic() + 10
        while info.isrunning() and time.monotonic() < deadline:
            time.sleep(0.02)


def launch(xprocess: Any, name: str, root: Path, config: dict[str, Any], timeout: float = 300) -> MemoryDaemon:
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
    _, log_file = xprocess.ensure(name, Starter, restart=True)
    handle = MemoryDaemon(name=name, root=root, socket=socket_path, state_dir=state_dir, config_path=config_path,
                          log_path=Path(log_file), xprocess=xprocess, config=config)
    if "start-up failed" in handle.log_text().split("listening on")[-1]:
        raise RuntimeError(f"daemon {name} failed to start:\n{handle.log_text()[-4000:]}")
    return handle


@pytest.fixture(scope="session")
def memory_daemon_factory(xprocess: Any, short_tmp: Path) -> Iterator[Any]:
    started: list[MemoryDaemon] = []
    counter = iter(range(1_000_000))

    def factory(name: str, config: dict[str, Any] | None = None) -> MemoryDaemon:
        root = short_tmp / f"m{name[:12]}{next(counter)}"
        root.mkdir()
        handle = launch(xprocess, f"pirag-{root.name}", root, merge(FAKE, config or {}))
        started.append(handle)
        return handle

    yield factory
    failures = []
    for handle in started:
        handle.stop()
        try:
            handle.assert_clean_log()
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, "\n\n".join(failures)


@pytest.fixture(scope="module")
def memory_daemon(memory_daemon_factory: Any) -> MemoryDaemon:
    return memory_daemon_factory("mem")
