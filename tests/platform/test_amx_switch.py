"""The AMX decision (``$PIRAG_CPU_AMX`` over /proc/cpuinfo) and how llama.cpp peers take the daemon's model
parameters (``pirag.stress.llama_peer``)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pirag.daemon.embed import llama
from pirag.stress import llama_peer


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("0", False), ("on", True), ("off", False)])
def test_env_forces_the_amx_decision(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv("PIRAG_CPU_AMX", value)
    assert llama.cpu_has_amx() is expected


def test_without_the_env_cpuinfo_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIRAG_CPU_AMX", raising=False)
    with open("/proc/cpuinfo") as cpuinfo:
        flags = next((line for line in cpuinfo if line.startswith("flags")), "")
    assert llama.cpu_has_amx() is (" amx" in flags)


def test_a_bad_value_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIRAG_CPU_AMX", "maybe")
    with pytest.raises(ValueError, match="PIRAG_CPU_AMX"):
        llama.cpu_has_amx()


def test_daemon_model_params_come_from_status() -> None:
    assert llama_peer.daemon_model_params({"extra_buffer_types": False}) == {"use_extra_bufts": False}
    with pytest.raises(RuntimeError, match="extra_buffer_types"):
        llama_peer.daemon_model_params({"extra_buffer_types": None})


@pytest.mark.parametrize("use_extra_bufts", [False, True])
def test_apply_model_params_reaches_llama_cpp_python(use_extra_bufts: bool) -> None:
    # In a child: the patch is process-wide, as it is in a peer process.
    code = ("from pirag.stress import llama_peer\n"
            f"llama_peer.apply_model_params({use_extra_bufts})\n"
            "import llama_cpp, llama_cpp.llama as high\n"
            "print(llama_cpp.llama_model_default_params().use_extra_bufts,"
            " high.llama_cpp.llama_model_default_params().use_extra_bufts)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == [str(use_extra_bufts)] * 2


def test_server_launcher_argv() -> None:
    argv = llama_peer.server_argv("/py", False, ["--model", "m.gguf"])
    assert argv == ["/py", "-m", "pirag.stress.llama_peer", "--use-extra-bufts", "0", "--", "--model", "m.gguf"]
