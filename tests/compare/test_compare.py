"""``pirag-stress compare --quick`` against a real daemon: the JSON it writes has every peer, each either measured
or skipped with a reason (never silently dropped). Figures are printed, never asserted on (shared machines)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pirag.stress.compare import PEER_NAMES
from pirag.stress.peers import SENTENCE_TRANSFORMERS, chroma_executable, llama_server_missing, module_available

STRESS = str(Path(sys.executable).with_name("pirag-stress"))
SMALL = ["--texts", "6", "--collection", "30", "--queries", "5", "--pings", "200", "--rounds", "1"]

# Makes modules look uninstalled in the compare process and its children, the way a fresh install without
# the optional extras looks: importlib.util.find_spec and import both fail.
BLOCKER = '''
import importlib.abc, sys
BLOCKED = set({blocked!r})
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (hidden by the test)", name=name)
        return None
sys.meta_path.insert(0, _Block())
'''


def run_compare(socket: Path, out: Path, *extra: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    process = subprocess.run([STRESS, "compare", "--quick", "--socket", str(socket), "--json", str(out), *SMALL,
                              *extra], capture_output=True, text=True, timeout=900, env=env)
    print(process.stdout[-6000:])
    assert process.returncode == 0, process.stderr[-4000:]
    assert "pirag vs peers" in process.stdout
    return json.loads(out.read_text())


def check_structure(report: dict[str, Any]) -> None:
    assert report["command"].startswith("pirag-stress compare")
    for key in ("time", "machine", "model", "threads", "corpus", "sizes"):
        assert report[key], key
    assert report["model"]["path"] and report["threads"]["peers"] >= 1
    assert 100 <= report["corpus"]["tokens_mean"] <= 250
    assert set(report["peers"]) == set(PEER_NAMES)
    for name, peer in report["peers"].items():
        assert peer["status"] in ("ok", "skipped"), name
        if peer["status"] == "ok":
            assert peer["figures"], name
        else:
            assert isinstance(peer["reason"], str) and peer["reason"].strip(), name
    pirag = report["pirag"]
    for key in ("embed_1_client", "embed_20_clients", "embed_bulk_64"):
        assert pirag[key]["texts_per_s"] > 0, key
    for key in ("search_miss", "search_vector_cached", "search_hit"):
        assert pirag[key]["queries"] >= 1 and pirag[key]["p50_ms"] > 0, key
    assert pirag["search_hit"]["last_cached"] is True
    assert pirag["search_miss"]["last_cached"] is False
    assert pirag["embed_cache_hits_during_embedding"] == 0
    for name, target in report["targets"].items():
        assert "target" in target and "measured" in target and "met" in target, name
        if target["measured"] is None:
            assert target.get("reason"), name


def assert_runnable_peers_ran(report: dict[str, Any]) -> None:
    """A peer this machine can run must have run (on an AMX host too); one it cannot is skipped with its reason."""
    peers = report["peers"]
    assert peers["echo_floor"]["status"] == "ok", peers["echo_floor"]
    assert peers["llama_cpp_naive"]["status"] == "ok", peers["llama_cpp_naive"]
    if llama_server_missing() is None:
        assert peers["llama_cpp_server"]["status"] == "ok", peers["llama_cpp_server"]
        assert report["ratios"]["embed_pirag_over_server_20_clients"] > 0
    else:
        assert peers["llama_cpp_server"]["reason"] == llama_server_missing()
    if chroma_executable() is not None:
        assert peers["chroma_server"]["status"] == "ok", peers["chroma_server"]
        assert peers["chroma_server"]["figures"]["collection_count"] == 30
    # compare installs the torch peer's venv when it is missing: only an install this machine cannot do may skip it
    if (module_available("torch") and module_available("sentence_transformers")) or SENTENCE_TRANSFORMERS.installed:
        assert peers["sentence_transformers"]["status"] == "ok", peers["sentence_transformers"]
        assert peers["sentence_transformers"]["figures"]["cosine_vs_pirag_min"] > 0.95
    else:
        assert "installing sentence-transformers" in peers["sentence_transformers"]["reason"]


def assert_peers_share_model_params(report: dict[str, Any], use_extra_bufts: bool) -> None:
    assert report["peer_model_params"]["use_extra_bufts"] is use_extra_bufts
    naive = report["peers"]["llama_cpp_naive"]["figures"]
    assert naive["use_extra_bufts"] is use_extra_bufts          # read back from llama-cpp-python's model params
    assert naive["one_thread"]["use_extra_bufts"] is use_extra_bufts
    server = report["peers"]["llama_cpp_server"]
    if server["status"] == "ok":
        assert server["model_params"]["use_extra_bufts"] is use_extra_bufts
        assert f"--use-extra-bufts {int(use_extra_bufts)}" in server["argv"]


def test_compare_quick(real_daemon: Any, tmp_path: Path) -> None:
    report = run_compare(real_daemon.socket, tmp_path / "compare.json")
    check_structure(report)
    assert_runnable_peers_ran(report)
    with real_daemon.client() as client:
        daemon_value = client.status().components["embed"]["extra_buffer_types"]
    assert_peers_share_model_params(report, daemon_value)


def test_forced_amx_reaches_every_llama_peer(daemon_factory: Any, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """PIRAG_CPU_AMX=1 makes the daemon decide as on an Intel AMX host (extra buffer types off) and every llama.cpp
    peer gets the same parameters: on a real AMX host that is what keeps them from dying with SIGILL."""
    monkeypatch.setenv("PIRAG_CPU_AMX", "1")
    forced = daemon_factory("amx-forced", {})
    monkeypatch.delenv("PIRAG_CPU_AMX")
    with forced.client() as client:
        assert client.status().components["embed"]["extra_buffer_types"] is False
    report = run_compare(forced.socket, tmp_path / "compare.json", "--chroma", str(tmp_path / "no-chroma"))
    assert_peers_share_model_params(report, False)
    assert report["peers"]["llama_cpp_naive"]["status"] == "ok"
    forced.stop()


def test_unavailable_peers_are_skipped_with_a_reason(real_daemon: Any, tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(BLOCKER.format(blocked=["torch", "sentence_transformers", "fastapi"]))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    report = run_compare(real_daemon.socket, tmp_path / "compare.json", "--chroma", str(tmp_path / "no-chroma"),
                         env=env)
    check_structure(report)
    peers = report["peers"]
    assert peers["sentence_transformers"]["status"] == "skipped"
    assert "torch" in peers["sentence_transformers"]["reason"]
    assert peers["llama_cpp_server"]["status"] == "skipped"
    assert "fastapi" in peers["llama_cpp_server"]["reason"] and "pirag[compare]" in peers["llama_cpp_server"]["reason"]
    assert peers["chroma_server"]["status"] == "skipped"
    assert "chroma" in peers["chroma_server"]["reason"]
    assert report["targets"]["embed_throughput_vs_llama_server_20_clients"]["met"] is None
    assert report["targets"]["search_miss_p50_vs_chroma_http"]["met"] is None
    assert peers["llama_cpp_naive"]["status"] == "ok"      # still measured: nothing was dropped
