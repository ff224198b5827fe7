"""The portable x86-64 llama.cpp build (packaging/llama-build-args amd64: GGML_BACKEND_DL + every CPU variant)
embeds as the numpy reference says on every CPU level: each variant forced in turn on this machine, and the
whole engine run under ``qemu-x86_64 -cpu SandyBridge`` (AVX, no AVX2/FMA: a 2011 CPU), where ggml must pick its
sandybridge variant by itself. (Westmere, SSE4.2 without AVX, is below what the rest of the stack runs on:
numpy's own import dies there with SIGILL, so the sse42 and x64 variants are checked by forcing them.)

The libraries come from the installed llama-cpp-python when it is a portable build (quickstart.sh installs one),
else from the portable wheel in packaging/llama-wheel's cache; without either the tests skip and say so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ..embed.reference import ReferenceBert
from ..embed.texts import docstring_texts, long_text

REPO = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("fidelity_child.py")
Q8_0_MIN_COSINE = 0.995


def installed_lib_dir() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    lib = Path(list(spec.submodule_search_locations)[0]) / "lib"
    return lib if any(lib.glob("libggml-cpu-*.so")) else None


@pytest.fixture(scope="module")
def portable_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lib = installed_lib_dir()
    if lib is not None:
        return lib
    cache = Path(subprocess.run([str(REPO / "packaging/llama-wheel"), "--dir"], capture_output=True, text=True,
                                check=True).stdout.strip())
    wheels = sorted(cache.glob("llama-cpp-python-*-amd64-*/llama_cpp_python-*.whl"))
    if not wheels:
        pytest.skip(f"no portable llama.cpp build: the installed one is for one CPU and {cache} has no amd64 "
                    "wheel (quickstart.sh or packaging/llama-wheel amd64 builds it, ~15-30 min on 2 cores)")
    root = tmp_path_factory.mktemp("portable")
    with zipfile.ZipFile(wheels[-1]) as wheel:
        for name in wheel.namelist():
            if name.startswith("llama_cpp/lib/"):
                wheel.extract(name, root)
    return root / "llama_cpp" / "lib"


@pytest.fixture(scope="module")
def model_and_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ReferenceBert]:
    from pirag.daemon.embed.default_model import ensure_default_model, find_archive

    root = tmp_path_factory.mktemp("fidelity")
    model = ensure_default_model(root / "state")                      # the daemon's default: Q8_0
    with zipfile.ZipFile(find_archive()) as bundle:
        bundle.extractall(root / "checkpoint")
    checkpoint = next(p.parent for p in sorted((root / "checkpoint").rglob("config.json"))
                      if (p.parent / "model.safetensors").exists())
    return model, ReferenceBert(checkpoint)


@pytest.fixture(scope="module")
def texts_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("texts") / "texts.json"
    path.write_text(json.dumps(docstring_texts(8) + [long_text()]))
    return path


def run_child(lib: Path, model: Path, texts: Path, *, prefix: list[str] = (), timeout: float = 600,
              **env: str) -> dict[str, Any]:
    environment = dict(os.environ, LLAMA_CPP_LIB_PATH=str(lib), PIRAG_CPU_AMX="", **env)
    process = subprocess.run([*prefix, sys.executable, str(CHILD), str(model), str(texts)], capture_output=True,
                             text=True, timeout=timeout, env=environment)
    assert process.returncode == 0, process.stderr[-3000:]
    return json.loads(process.stdout.strip().splitlines()[-1])


def assert_matches_reference(result: dict[str, Any], reference: ReferenceBert, texts: Path) -> float:
    expected = reference.embed(json.loads(texts.read_text()))
    vectors = np.asarray(result["vectors"], dtype=np.float32)
    cosines = (vectors * expected).sum(axis=1)
    assert cosines.min() >= Q8_0_MIN_COSINE, f"variant {result['variant']}: worst cosine {cosines.min():.5f}"
    return float(cosines.min())


def test_variants_are_in_the_build(portable_lib: Path) -> None:
    names = {path.name for path in portable_lib.glob("libggml-cpu-*.so")}
    for variant in ("x64", "sse42", "haswell", "skylakex", "sapphirerapids"):
        assert f"libggml-cpu-{variant}.so" in names, sorted(names)


@pytest.mark.parametrize("variant", ["x64", "sse42", "haswell", None])
def test_each_cpu_level_matches_the_reference(variant: str | None, portable_lib: Path, model_and_reference: Any,
                                              texts_file: Path) -> None:
    model, reference = model_and_reference
    env = {"PIRAG_GGML_CPU_VARIANT": variant} if variant else {"PIRAG_GGML_CPU_VARIANT": ""}
    result = run_child(portable_lib, model, texts_file, **env)
    assert Path(result["library_dir"]) == portable_lib
    if variant:
        assert result["variant"] == variant
    else:
        assert result["variant"] not in (None, "x64", "sse42")      # this machine has AVX2 at least
    if variant in ("x64", "sse42"):
        assert "AVX2 = 1" not in result["system_info"], result["system_info"]
    if variant == "haswell":
        assert "AVX2 = 1" in result["system_info"] and "AVX512 = 1" not in result["system_info"]
    cosine = assert_matches_reference(result, reference, texts_file)
    print(f"variant {result['variant']}: worst cosine {cosine:.5f}; {result['system_info']}")


@pytest.mark.slow
def test_under_qemu_on_a_cpu_without_avx2(portable_lib: Path, model_and_reference: Any, texts_file: Path) -> None:
    qemu = shutil.which("qemu-x86_64") or shutil.which("qemu-x86_64-static")
    if qemu is None:
        pytest.skip("qemu-x86_64 is not installed (Debian: apt-get install qemu-user)")
    model, reference = model_and_reference
    result = run_child(portable_lib, model, texts_file, prefix=[qemu, "-cpu", "SandyBridge"], timeout=1800,
                       PIRAG_GGML_CPU_VARIANT="")
    assert result["variant"] == "sandybridge", result                # ggml chose by itself
    assert "AVX = 1" in result["system_info"] and "AVX2 = 1" not in result["system_info"]
    cosine = assert_matches_reference(result, reference, texts_file)
    print(f"qemu -cpu SandyBridge: variant {result['variant']}, worst cosine {cosine:.5f}")
