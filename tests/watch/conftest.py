"""Fixtures of the watch tests: a daemon (fake embedder: plumbing) allowed to read one directory tree."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from xprocess import ProcessStarter

from tests.conftest import FAKE_MODEL, PIRAG, DaemonHandle, merge, to_toml

FAST_WATCH = {"quiet_ms": 200, "retry_interval_s": 0.5, "rescan_interval_s": 1.0}


@pytest.fixture(scope="module")
def tree_root(short_tmp: Path, request: pytest.FixtureRequest) -> Path:
    root = short_tmp / f"tree-{request.module.__name__.rsplit('.', 1)[-1][:12]}"
    root.mkdir()
    return root


def watch_config(root: Path, **watch: Any) -> dict[str, Any]:
    return merge(FAKE_MODEL, {"ingest": {"allowed_roots": [str(root)]}, "watch": {**FAST_WATCH, **watch}})


@pytest.fixture(scope="module")
def watch_daemon(daemon_factory: Any, tree_root: Path) -> Any:
    return daemon_factory("watch", watch_config(tree_root))


@pytest.fixture
def wclient(watch_daemon: Any) -> Iterator[Any]:
    with watch_daemon.client() as client:
        yield client


def start_wrapped(xprocess: Any, name: str, root: Path, tree: Path, shell: str) -> DaemonHandle:
    """A fake-embedder daemon allowed to read ``tree``, started by ``shell`` (a command line ending in ``exec
    {pirag}``, where ``{pirag}`` becomes ``pirag serve --config ...``): run as another user, in a user namespace...
    Every wrapper execs in place, so the pid xprocess keeps is the daemon's."""
    config = merge({"state_dir": str(root / "state"), "server": {"socket": str(root / "s.sock")},
                    "log": {"metrics_interval_s": 0.0}}, watch_config(tree))
    (root / "pirag.toml").write_text(to_toml(config))
    command = shell.format(pirag=f"{PIRAG} serve --config {root / 'pirag.toml'}")

    class Starter(ProcessStarter):
        args = ["sh", "-c", command]
        pattern = r"ready in|start-up failed"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        terminate_on_interrupt = True
        timeout = 120

    _, log_file = xprocess.ensure(name, Starter, restart=True)
    return DaemonHandle(name=name, root=root, socket=root / "s.sock", state_dir=root / "state",
                        config_path=root / "pirag.toml", log_path=Path(log_file), xprocess=xprocess, config=config)
