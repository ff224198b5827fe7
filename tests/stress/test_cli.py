"""``pirag-stress`` without a daemon: one line that says where it looked, exit code 2, no traceback."""

from __future__ import annotations

import pytest

from pirag.stress import cli


@pytest.mark.parametrize("command", ["compare", "ping", "quality"])
def test_a_missing_daemon_is_one_clear_line(command: str, tmp_path, capsys) -> None:  # noqa: ANN001
    socket = tmp_path / "absent.sock"
    assert cli.main([command, "--socket", str(socket)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pirag-stress: connection_failed:") and str(socket) in err and "Traceback" not in err
