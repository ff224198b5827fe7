"""An unreadable watched directory, for real: the daemon runs as ``nobody`` (root reads everything, so the
permission check needs another user), the folder is made unreadable under a live watch, then readable again.
Fake embedder: plumbing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_until

from .conftest import start_wrapped
from .helpers import the_watch, wait_idle, wait_sources, write

NOBODY = 65534


def test_an_unreadable_directory_is_reported_and_retried(xprocess: Any, short_tmp: Path) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv(1) to run the daemon as another user")
    probe = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", sys.executable,
                            "-c", "import subprocess, sys; subprocess.run([sys.executable, '-c', 'import pirag.daemon'], check=True)"],
                           capture_output=True, text=True, timeout=120)   # as the daemon starts its index worker
    if probe.returncode != 0:   # e.g. a checkout under a 0700 directory: nobody cannot even start the daemon
        pytest.skip(f"user nobody cannot run {sys.executable}: {probe.stderr.strip()[-200:]}")
    root = Path(tempfile.mkdtemp(prefix="pw-", dir="/tmp"))   # short_tmp is 0700: nobody could not enter it
    try:
        root.chmod(0o755)
        tree = root / "tree"
        base = tree / "private"
        write(base / "a.md", "alpha\n")
        (root / "state").mkdir()
        for path in (root, root / "state", tree, base, base / "a.md"):
            os.chown(path, NOBODY, NOBODY)
        handle = start_wrapped(xprocess, f"pirag-{short_tmp.name}-nobody", root, tree,
                               f"exec setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups {{pirag}}")
        try:
            with handle.client() as client:
                client.watch_add("private", [str(base)], wait=True)
                assert the_watch(client, base).files == 1
                base.chmod(0o000)
                info = wait_until(lambda: (lambda w: w if w.error_code == "path_unreadable" else None)(
                    the_watch(client, base)), timeout=20)
                assert info.state == "missing" and "ermission denied" in info.error
                assert client.ping() is not None
                base.chmod(0o755)
                write(base / "b.md", "beta, once readable again\n")
                os.chown(base / "b.md", NOBODY, NOBODY)
                wait_sources(client, "private", {str(base / "a.md"), str(base / "b.md")}, timeout=30)
                info = wait_idle(client, base)
                assert info.error_code == "" and info.error == ""
        finally:
            handle.stop()
            handle.assert_clean_log()
    finally:
        shutil.rmtree(root, ignore_errors=True)
