"""The arm64 .deb (``packaging/build-deb --arch arm64``, cross-built on x86-64) installed in an arm64 Debian bookworm
tree and run under qemu-user: the daemon reaches READY, embeddings on the ARM repacked-weight path
(``use_extra_bufts`` on) match the numpy reference on the Pi 5's and the Pi 4's CPU models, and ingest, search,
remember, recall and an MCP tool call work through the emulated package.

The daemon runs as a process in the tree (chroot), not under systemd: qemu-user emulates one process, not a
machine, and systemd as PID 1 of an emulated container is outside what qemu-user provides (the amd64 package's
systemd behaviour is tested with a real booted systemd in tests/systemd). Speed under emulation is meaningless:
only wall times are printed, as emulated.

Needs root, qemu-user-static + binfmt-support (qemu-aarch64 registered), debootstrap, gcc-aarch64-linux-gnu
(to build the .deb, unless ``$PIRAG_ARM64_DEB`` names one). Run with ``pytest -m arm64``; skipped with the reason
where something is missing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pirag.client import Client
from pirag.client.protocol.documents import DocumentIn

from ..embed.reference import ReferenceBert
from ..embed.texts import docstring_texts, long_text

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("PIRAG_CACHE", "/var/cache/pirag"))
CHILD = REPO / "tests" / "platform" / "fidelity_child.py"
THRESHOLDS = {"q8_0": 0.995, "q4_k_m": 0.98, "q4_0": 0.98}
# The CPUs qemu emulates for the two boards, and the ggml CPU variant each must get.
BOARDS = {"pi5": ("cortex-a76", "armv8.2_2"), "pi4": ("cortex-a72", "armv8.0_1")}
DEB_INPUTS = ("pyproject.toml", "client", "daemon", "stress", "configs", "systemd", "packaging", "docs/INSTALL.md")


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (chroot, mounts, debootstrap)"
    binfmt = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    if not binfmt.exists() or "enabled" not in binfmt.read_text():
        return ("qemu-aarch64 is not registered with binfmt_misc (apt-get install qemu-user-static binfmt-support; "
                "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; update-binfmts --enable qemu-aarch64)")
    for tool in ("debootstrap", "systemd-nspawn", "dpkg-deb"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not os.environ.get("PIRAG_ARM64_DEB") and shutil.which("aarch64-linux-gnu-g++") is None:
        return "g++-aarch64-linux-gnu is not installed (needed to build the arm64 .deb)"
    return None


pytestmark = [pytest.mark.arm64, pytest.mark.skipif(_missing() is not None, reason=_missing() or "")]


@pytest.fixture(autouse=True, scope="module")
def _only_when_asked(request: pytest.FixtureRequest) -> None:
    # An hour of cross-building and emulation must not start inside a plain `pytest` of the whole suite.
    if "arm64" not in (request.config.option.markexpr or ""):
        pytest.skip("the emulated arm64 check runs only when asked for: pytest -m arm64 tests/arm64")


def fingerprint() -> str:
    digest = hashlib.sha256()
    for top in DEB_INPUTS:
        base = REPO / top
        paths = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for path in paths:
            if "__pycache__" not in path.parts and path.suffix != ".pyc":
                digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


@pytest.fixture(scope="module")
def arm64_deb() -> Path:
    if os.environ.get("PIRAG_ARM64_DEB"):
        return Path(os.environ["PIRAG_ARM64_DEB"])
    out = CACHE / "debs-arm64" / fingerprint()
    found = sorted(out.glob("pirag_*_arm64.deb"))
    if found:
        return found[-1]
    started = time.monotonic()
    result = subprocess.run([str(REPO / "packaging" / "build-deb"), "--arch", "arm64", str(out)], capture_output=True,
                            text=True, timeout=5400)
    assert result.returncode == 0, result.stderr[-6000:]
    print(f"arm64 .deb built in {time.monotonic() - started:.0f} s")
    return Path(result.stdout.strip().splitlines()[-1])


class Tree:
    """An arm64 bookworm tree with the .deb installed; commands run in it by chroot (binfmt runs them in qemu)."""

    def __init__(self, root: Path):
        self.root = root
        self.mounts: list[Path] = []

    def mount(self) -> None:
        for source, target, args in (("proc", "proc", ["-t", "proc"]), ("/dev", "dev", ["--bind"]),
                                     ("/dev/pts", "dev/pts", ["--bind"]), ("sysfs", "sys", ["-t", "sysfs"])):
            path = self.root / target
            path.mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", *args, source, str(path)], check=True)
            self.mounts.append(path)

    def unmount(self) -> None:
        for path in reversed(self.mounts):
            subprocess.run(["umount", "-l", str(path)], check=False)
        self.mounts.clear()

    def argv(self, *command: str) -> list[str]:
        return ["chroot", str(self.root), *command]

    def run(self, *command: str, timeout: float = 900, env: dict[str, str] | None = None) -> str:
        result = subprocess.run(self.argv(*command), capture_output=True, text=True, timeout=timeout,
                                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", **(env or {})})
        assert result.returncode == 0, f"{command}: {result.stdout[-2000:]}\n{result.stderr[-4000:]}"
        return result.stdout


@pytest.fixture(scope="module")
def tree(arm64_deb: Path) -> Iterator[Tree]:
    work = CACHE / "work"
    work.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="arm64.", dir=work)) / "root"
    started = time.monotonic()
    subprocess.run([str(REPO / "packaging" / "rootfs.sh"), "boot", str(root)], check=True, timeout=3600,
                   env=dict(os.environ, PIRAG_ARCH="arm64"))
    assert "aarch64" in subprocess.run(["file", "-L", str(root / "usr/bin/python3")], capture_output=True,
                                       text=True).stdout or (root / "lib/ld-linux-aarch64.so.1").exists()
    tree = Tree(root)
    tree.mount()
    try:
        shutil.copy(arm64_deb, root / "tmp" / "pirag.deb")
        install_started = time.monotonic()
        tree.run("dpkg", "-i", "/tmp/pirag.deb", timeout=3600)
        print(f"emulated: tree {install_started - started:.0f} s, dpkg -i {time.monotonic() - install_started:.0f} s")
        yield tree
    finally:
        tree.unmount()
        shutil.rmtree(root.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pirag.daemon.embed.default_model import find_archive

    root = tmp_path_factory.mktemp("ckpt")
    with zipfile.ZipFile(find_archive()) as bundle:
        bundle.extractall(root)
    return next(p.parent for p in sorted(root.rglob("config.json")) if (p.parent / "model.safetensors").exists())


@pytest.fixture(scope="module")
def daemon(tree: Tree) -> Iterator[Path]:
    """``pirag serve`` of the installed package, in the tree, with READY captured from its sd_notify socket."""
    sys.path.insert(0, str(REPO / "tests" / "systemd"))
    from sd_helpers import NotifyListener

    run_dir = tree.root / "run" / "pirag"
    run_dir.mkdir(parents=True, exist_ok=True)
    (tree.root / "var/lib/pirag").mkdir(parents=True, exist_ok=True)
    notify_dir = tree.root / "run" / "notify"
    notify_dir.mkdir(parents=True, exist_ok=True)
    listener = NotifyListener()
    # the listener's socket lives on the host; a bind mount puts it where the emulated daemon can reach it
    subprocess.run(["mount", "--bind", listener._dir, str(notify_dir)], check=True)
    tree.mounts.append(notify_dir)
    log = open(tree.root / "tmp" / "serve.log", "wb")
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PIRAG_SOCKET": "/run/pirag/pirag.sock",
           "STATE_DIRECTORY": "/var/lib/pirag", "NOTIFY_SOCKET": "/run/notify/notify", "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    process = subprocess.Popen(tree.argv("/usr/bin/pirag", "serve", "--config", "/etc/pirag/pirag.toml"),
                               stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        _, message = listener.wait_for("READY", timeout=1800, value="1")
        print(f"emulated: READY after {time.monotonic() - started:.0f} s ({message.get('STATUS', '')})")
        yield run_dir / "pirag.sock"
    finally:
        process.terminate()
        try:
            process.wait(120)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        listener.close()
        print((tree.root / "tmp" / "serve.log").read_text(errors="replace")[-3000:])


def test_the_package_is_arm64(arm64_deb: Path) -> None:
    control = subprocess.run(["dpkg-deb", "-f", str(arm64_deb)], capture_output=True, text=True, check=True).stdout
    assert "Architecture: arm64" in control
    listing = subprocess.run(["dpkg-deb", "-c", str(arm64_deb)], capture_output=True, text=True, check=True).stdout
    for variant in ("armv8.0_1", "armv8.2_2"):
        assert f"libggml-cpu-{variant}.so" in listing, variant
    conffiles = subprocess.run(["dpkg-deb", "-I", str(arm64_deb), "conffiles"], capture_output=True, text=True,
                               check=True).stdout.split()
    assert conffiles == ["/etc/pirag/pirag.toml"]


def test_daemon_serves_through_the_package(daemon: Path) -> None:
    started = time.monotonic()
    with Client(daemon, timeout=600) as client:
        status = client.status()
        assert status.state == "ready"
        embed = status.components["embed"]
        assert embed["extra_buffer_types"] is True              # ARM: the repacked-weight path stays on
        result = client.ingest("arm", documents=[DocumentIn(source="pi.txt", text=(
            "The Raspberry Pi 5 has four Cortex-A76 cores with the dot product extension. "
            "llama.cpp repacks Q4_0 weights for them at load time."))])
        assert result is not None
        deadline = time.monotonic() + 600
        hits = []
        while time.monotonic() < deadline and not hits:
            hits = client.search("which cores does the Pi 5 have", "arm", k=3).hits
            time.sleep(1)
        assert hits and "Cortex-A76" in hits[0].text
        client.remember("the emulated Pi test stores this fact", project="arm")
        facts = client.recall("what does the emulated test store", project="arm").facts
        assert facts and "emulated Pi test" in facts[0].content
    print(f"emulated: ingest, search, remember, recall {time.monotonic() - started:.0f} s")


def test_one_mcp_tool_call_through_the_package(tree: Tree, daemon: Path) -> None:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    async def call() -> str:
        params = StdioServerParameters(command="chroot", args=[str(tree.root), "/usr/bin/pirag-mcp", "--socket",
                                                               "/run/pirag/pirag.sock"],
                                       env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
        async with stdio_client(params) as (read_stream, write_stream):
            async with ClientSession(read_stream, write_stream) as session:
                await asyncio.wait_for(session.initialize(), 600)
                result = await asyncio.wait_for(session.call_tool("recall", {"query": "emulated Pi test",
                                                                             "project": "arm"}), 600)
                assert not result.isError, result
                return "".join(getattr(block, "text", "") for block in result.content)

    started = time.monotonic()
    text = asyncio.run(call())
    assert "emulated Pi test" in text
    print(f"emulated: MCP initialize + recall {time.monotonic() - started:.0f} s")


@pytest.mark.parametrize("board", ["pi5", "pi4"])
@pytest.mark.parametrize("quant", ["q8_0", "q4_k_m", "q4_0"])
def test_embeddings_on_the_repacked_path_match_the_reference(tree: Tree, checkpoint: Path, quant: str, board: str,
                                                            tmp_path: Path) -> None:
    from pirag.daemon.embed.importer import import_checkpoint, quantize

    models = tree.root / "tmp" / "models"
    models.mkdir(exist_ok=True)
    f16 = models / "m.f16.gguf"
    if not f16.exists():
        import_checkpoint(checkpoint, f16, quant="f16")
    model = models / f"m.{quant}.gguf"
    if not model.exists():
        quantize(f16, model, quant)
    texts = docstring_texts(6) + [long_text()]
    (tree.root / "tmp" / "texts.json").write_text(json.dumps(texts))
    shutil.copy(CHILD, tree.root / "tmp" / "fidelity_child.py")
    cpu, variant = BOARDS[board]
    started = time.monotonic()
    out = tree.run("/opt/pirag/bin/python", "/tmp/fidelity_child.py", f"/tmp/models/{model.name}", "/tmp/texts.json",
                   env={"QEMU_CPU": cpu, "PIRAG_CPU_AMX": ""}, timeout=1800)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["variant"] == variant, result["system_info"]
    assert result["use_extra_bufts"] is True
    expected = ReferenceBert(checkpoint).embed(texts)
    cosines = (np.asarray(result["vectors"], dtype=np.float32) * expected).sum(axis=1)
    print(f"emulated {board} ({cpu}, variant {variant}) {quant}: worst cosine {cosines.min():.5f}, "
          f"repacked buffers {result['repacked']}, {time.monotonic() - started:.0f} s")
    assert cosines.min() >= THRESHOLDS[quant]
    if quant == "q4_0" and board == "pi5":
        # ggml repacks Q4_0 for ARM CPUs with dotprod (the Pi 4's Cortex-A72 has none: plain Q4_0 there)
        assert result["repacked"], "Q4_0 on the Pi 5's CPU must use llama.cpp's repacked weights"
