"""The arm64 .deb (``packaging/build-deb --arch arm64``, cross-built on x86-64) installed offline in an arm64 Debian
bookworm container booted under qemu-user: systemd starts the daemon (Type=notify: active only after READY=1),
the ``pirag`` command line of the package ingests, searches, remembers and recalls, ``pirag-mcp`` answers one MCP
tool call, and embeddings on the ARM repacked-weight path (``use_extra_bufts`` on) match the numpy reference as
a Pi 5 (``QEMU_CPU=cortex-a76``) and as a Pi 4 (``cortex-a72``).

systemd runs only as PID 1 of ``systemd-nspawn --boot`` on its own unpacked arm64 tree (tests/systemd/sd_nspawn.py;
FINDINGS.md: never on this machine's root); binfmt_misc hands every arm64 program in it, systemd included, to
qemu-aarch64. The package's contents, control data and lintian are checked by tests/systemd/test_systemd_deb.py
(its ``arm64`` case) against the same standard as the amd64 package's.

Speed under emulation is meaningless: only wall times are printed, as emulated. Run with
``sudo .venv/bin/python -m pytest -m arm64 tests/arm64 tests/systemd/test_systemd_deb.py -s``; skipped with the
reason where root, qemu-user-static/binfmt-support, debootstrap, systemd-nspawn or the cross compiler is missing.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ..embed.reference import ReferenceBert
from ..embed.texts import docstring_texts, long_text

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "systemd"))
from sd_nspawn import Container, arm64_asked, arm64_missing, build_or_reuse_deb  # noqa: E402

CHILD = REPO / "tests" / "platform" / "fidelity_child.py"
THRESHOLDS = {"q8_0": 0.995, "q4_k_m": 0.98, "q4_0": 0.98}
# The CPU qemu emulates for each board, and the ggml CPU variant the package must pick for it by itself.
BOARDS = {"pi5": ("cortex-a76", "armv8.2_2"), "pi4": ("cortex-a72", "armv8.0_1")}
# What differs from the unit as shipped, for emulation only (a test drop-in):
# - everything is many times slower than on a Pi: the start timeout and the watchdog are widened;
# - PrivateNetwork=no, PrivateIPC=no: systemd keeps these two namespaces (shareable between units) as fds in a
#   socket pair, and under qemu-user that step fails ("Failed to set up network namespacing: Input/output error",
#   225/NETWORK; then "Failed to set up IPC namespacing: Input/output error", 226/NAMESPACE; measured);
#   RestrictAddressFamilies=AF_UNIX and IPAddressDeny=any stay;
# - the daemon runs as a Pi 5's CPU.
TEST_DROPIN = """[Service]
Environment=QEMU_CPU=cortex-a76
TimeoutStartSec=1800
WatchdogSec=600
PrivateNetwork=no
PrivateIPC=no
"""
TIMINGS: dict[str, float] = {}

pytestmark = [pytest.mark.arm64, pytest.mark.skipif(arm64_missing() is not None, reason=arm64_missing() or "")]


@pytest.fixture(autouse=True, scope="module")
def _only_when_asked(request: pytest.FixtureRequest) -> None:
    if not arm64_asked(request.config):
        pytest.skip("the emulated arm64 check runs only when asked for: pytest -m arm64 tests/arm64")


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """A booted arm64 bookworm container with the arm64 .deb installed offline and pirag started by systemd."""
    deb, seconds = build_or_reuse_deb("arm64")
    if seconds is not None:
        TIMINGS["deb_build_s"] = seconds
    started = time.monotonic()
    with Container(tmp_path_factory.mktemp("arm64") / "container.log", arch="arm64", boot_timeout=900) as box:
        assert box.root is not None
        (box.root / "root" / deb.name).write_bytes(deb.read_bytes())
        box.boot()
        TIMINGS.update({f"emulated_{key}": value for key, value in box.timings.items()})
        assert box.run("uname", "-m").stdout.strip() == "aarch64"
        # policy-rc.d: postinst enables the units; the test starts them itself, after its drop-in.
        box.write("/usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n")
        box.run("chmod", "755", "/usr/sbin/policy-rc.d")
        installed = time.monotonic()
        box.run("dpkg", "-i", f"/root/{deb.name}", timeout=3600)   # the container has no network
        TIMINGS["emulated_dpkg_install_s"] = time.monotonic() - installed
        box.run("rm", "/usr/sbin/policy-rc.d")
        yield box
    TIMINGS["emulated_container_total_s"] = time.monotonic() - started
    print("arm64 timings (emulated except deb_build_s):",
          json.dumps({key: round(value, 1) for key, value in TIMINGS.items()}))


def pirag(box: Container, *args: str, timeout: float = 900) -> object:
    """The package's own command line, in the container, with --json."""
    return json.loads(box.run("pirag", *args, "--json", "--timeout", str(timeout), timeout=timeout + 60).stdout)


def test_installed_units_and_user(box: Container) -> None:
    enabled = box.run("systemctl", "is-enabled", "pirag.socket", "pirag.service").stdout.split()
    assert enabled == ["enabled", "enabled"]
    assert box.run("getent", "passwd", "pirag").stdout.startswith("pirag:")
    assert box.run("dpkg-query", "-W", "-f=${Conffiles}", "pirag").stdout.strip().startswith("/etc/pirag/pirag.toml")
    assert "aarch64" in box.run("/opt/pirag/bin/python3", "-c", "import platform; print(platform.machine())").stdout


def test_systemd_starts_the_daemon_only_after_ready(box: Container) -> None:
    box.write("/etc/systemd/system/pirag.service.d/emulated.conf", TEST_DROPIN)
    box.run("systemctl", "daemon-reload")
    box.run("systemctl", "start", "pirag.socket")
    props, states, TIMINGS["emulated_first_start_s"] = box.start_and_watch("pirag.service", timeout=1800, poll=0.5)
    journal = box.journal("pirag.service")
    assert props["ActiveState"] == "active", f"{props}\n{journal[-4000:]}"
    assert "activating" in states, f"never seen activating: {states[:5]}"
    assert props["StatusText"].startswith("ready"), props      # STATUS= came with READY=1
    status = pirag(box, "status")
    assert status["state"] == "ready", status
    # ARM: the repacked-weight path stays on (only x86 AMX CPUs turn it off).
    assert status["components"]["embed"]["extra_buffer_types"] is True, status["components"]["embed"]


def test_ingest_search_remember_recall_through_the_package(box: Container) -> None:
    started = time.monotonic()
    box.write("/root/docs/pi.txt", "The Raspberry Pi 5 has four Cortex-A76 cores with the dot product extension. "
                                   "llama.cpp repacks Q4_0 weights for them at load time.\n")
    box.write("/root/docs/garden.txt", "Tomatoes need six hours of sun and a deep weekly watering.\n")
    # --upload: the sandboxed daemon cannot read /root (ProtectHome=yes); the client sends the contents.
    pirag(box, "ingest", "/root/docs", "--project", "arm", "--upload", "--quiet")
    hits = pirag(box, "search", "which cores does the Pi 5 have", "--project", "arm", "-k", "2")["hits"]
    assert hits and "Cortex-A76" in hits[0]["text"], hits
    pirag(box, "remember", "the emulated Pi test stores this fact", "--project", "arm", "--tag", "emulated")
    facts = pirag(box, "recall", "what does the emulated test store", "--project", "arm")["facts"]
    assert facts and "emulated Pi test" in facts[0]["fact"]["content"], facts
    TIMINGS["emulated_ingest_search_remember_recall_s"] = time.monotonic() - started


def test_one_mcp_tool_call_through_the_package(box: Container) -> None:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    assert box.pid1 is not None

    async def call() -> str:
        # The host's MCP client speaks to the package's pirag-mcp inside the container over stdio.
        params = StdioServerParameters(command="nsenter", args=["-t", str(box.pid1), "-a", "env", "-i",
                                                                "PATH=/usr/bin:/bin", "LANG=C.UTF-8",
                                                                "/usr/bin/pirag-mcp"])
        async with stdio_client(params) as (read_stream, write_stream):
            async with ClientSession(read_stream, write_stream) as session:
                await asyncio.wait_for(session.initialize(), 600)
                result = await asyncio.wait_for(session.call_tool("recall", {"query": "emulated Pi test",
                                                                             "project": "arm"}), 600)
                assert not result.isError, result
                return "".join(getattr(block, "text", "") for block in result.content)

    started = time.monotonic()
    text = asyncio.run(call())
    assert "emulated Pi test" in text, text
    TIMINGS["emulated_mcp_initialize_and_recall_s"] = time.monotonic() - started


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pirag.daemon.embed.default_model import find_archive

    root = tmp_path_factory.mktemp("ckpt")
    with zipfile.ZipFile(find_archive()) as bundle:
        bundle.extractall(root)
    return next(p.parent for p in sorted(root.rglob("config.json")) if (p.parent / "model.safetensors").exists())


@pytest.mark.parametrize("board", ["pi5", "pi4"])
@pytest.mark.parametrize("quant", ["q8_0", "q4_k_m", "q4_0"])
def test_embeddings_on_the_repacked_path_match_the_reference(box: Container, checkpoint: Path, quant: str,
                                                            board: str) -> None:
    from pirag.daemon.embed.importer import import_checkpoint, quantize

    assert box.root is not None
    # The model files are made here (the importer is architecture-independent); the package embeds with them.
    models = box.root / "root" / "models"
    models.mkdir(exist_ok=True)
    f16 = models / "m.f16.gguf"
    if not f16.exists():
        import_checkpoint(checkpoint, f16, quant="f16")
    model = models / f"m.{quant}.gguf"
    if not model.exists():
        quantize(f16, model, quant)
    texts = docstring_texts(6) + [long_text()]
    (box.root / "root" / "texts.json").write_text(json.dumps(texts))
    (box.root / "root" / "fidelity_child.py").write_bytes(CHILD.read_bytes())
    cpu, variant = BOARDS[board]
    started = time.monotonic()
    # QEMU_CPU reaches the qemu-aarch64 that binfmt_misc starts for the python below: the CPU it emulates.
    out = box.run(f"QEMU_CPU={cpu}", "PIRAG_CPU_AMX=", "/opt/pirag/bin/python", "/root/fidelity_child.py",
                  f"/root/models/{model.name}", "/root/texts.json", timeout=1800).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["variant"] == variant, result["system_info"]          # ggml chose it by itself
    # the Pi 5's variant uses the dot-product instructions, the Pi 4's (Cortex-A72 has none) does not
    assert ("DOTPROD = 1" in result["system_info"]) == (board == "pi5"), result["system_info"]
    assert result["use_extra_bufts"] is True
    expected = ReferenceBert(checkpoint).embed(texts)
    cosines = (np.asarray(result["vectors"], dtype=np.float32) * expected).sum(axis=1)
    seconds = time.monotonic() - started
    TIMINGS[f"emulated_fidelity_{board}_{quant}_s"] = seconds
    print(f"emulated {board} ({cpu}, variant {variant}) {quant}: worst cosine {cosines.min():.5f}, "
          f"repacked buffers {result['repacked']}, {seconds:.0f} s; {result['system_info']}")
    assert cosines.min() >= THRESHOLDS[quant], f"worst cosine {cosines.min():.5f}"
    if quant == "q4_0":
        # the path use_extra_bufts keeps on: llama.cpp's log names CPU_REPACK buffers (measured on both boards'
        # variants; the Pi 5's kernels for them use dotprod)
        assert result["repacked"], f"Q4_0 on the {board}'s CPU must use llama.cpp's repacked weights"
