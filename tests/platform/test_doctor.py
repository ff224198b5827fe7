"""``pirag doctor`` against the real daemon (its model, its state dir), with and without the AMX switch; and the
imported default model's context length as llama.cpp reads it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

PIRAG = str(Path(sys.executable).with_name("pirag"))


def doctor(socket: Path, **env: str) -> tuple[int, dict[str, Any], str]:
    result = subprocess.run([PIRAG, "doctor", "--json", "--socket", str(socket)], capture_output=True, text=True,
                            timeout=120, env=dict(os.environ, **env))
    return result.returncode, json.loads(result.stdout), result.stderr


def test_doctor_reports_what_the_daemon_uses(real_daemon: Any) -> None:
    code, report, err = doctor(real_daemon.socket, PIRAG_CPU_AMX="")
    assert code == 0, (report["problems"], err)
    with real_daemon.client() as client:
        status = client.status()
    embed = status.components["embed"]
    assert report["daemon"]["pid"] == status.pid and report["daemon"]["state"] == "ready"
    assert report["model"]["path"] == embed["model"]["path"] and report["model"]["source"] == "the running daemon"
    assert report["model"]["quantization"].lower() == "q8_0" and report["model"]["dims"] == 384
    assert report["state_dir"]["path"] == status.state_dir and report["state_dir"]["free_bytes"] > 0
    lib = report["llama_cpp"]
    assert lib["system_info"].startswith("CPU :") and lib["version"]
    if lib["cpu_variants"]:
        assert lib["cpu_variant_loaded"] in lib["cpu_variants"]
    # the doctor's AMX decision is the one the daemon took
    assert report["amx"]["use_extra_bufts"] is embed["extra_buffer_types"]
    assert isinstance(report["memory_cgroup"]["controller_enabled"], bool)
    human = subprocess.run([PIRAG, "doctor", "--socket", str(real_daemon.socket)], capture_output=True, text=True,
                           timeout=120)
    for label in ("cpu flags", "llama.cpp", "system info", "amx", "memory cgroup", "model", "state dir"):
        assert label in human.stdout, label


def test_doctor_shows_the_amx_switch(real_daemon: Any) -> None:
    code, report, _ = doctor(real_daemon.socket, PIRAG_CPU_AMX="1")
    assert code == 0
    assert report["amx"]["env"] == "1" and report["amx"]["treated_as_amx"] is True
    assert report["amx"]["use_extra_bufts"] is False
    code, report, _ = doctor(real_daemon.socket, PIRAG_CPU_AMX="sometimes")
    assert code == 1 and any("PIRAG_CPU_AMX" in problem for problem in report["problems"])


def test_doctor_without_a_daemon(tmp_path: Path) -> None:
    code, report, _ = doctor(tmp_path / "none.sock", PIRAG_CPU_AMX="")
    assert report["daemon"] is None
    assert any("no daemon answered" in warning for warning in report["warnings"])
    assert code in (0, 1) and (code == 1) == bool(report["problems"])


def test_imported_model_carries_its_context_length(real_daemon: Any) -> None:
    """The importer writes bert.context_length (max_position_embeddings), so llama.cpp's n_ctx_train is 512, not 0."""
    from pirag.daemon.embed.llama import LlamaModel

    with real_daemon.client() as client:
        path = client.status().components["embed"]["model"]["path"]
    model = LlamaModel(path)
    try:
        assert model.meta("bert.context_length") == "512"
        import llama_cpp

        assert llama_cpp.llama_model_n_ctx_train(model.handle) == 512
    finally:
        model.close()
