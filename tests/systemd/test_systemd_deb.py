"""The .deb from packaging/build-deb: its contents, its control data, and lintian (errors fail; every
warning must be listed with its reason in docs/INSTALL.md).

Each test runs on this machine's package and, when asked for with ``pytest -m arm64``, on the arm64 package
cross-built here (``packaging/build-deb --arch arm64``): the same standard for both."""

from __future__ import annotations

import hashlib
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from sd_helpers import REPO, require_root, require_tools
from sd_nspawn import arm64_asked, arm64_missing, build_or_reuse_deb

pytestmark = [
    pytest.mark.systemd,
    require_root(),
    require_tools("debootstrap", "systemd-nspawn", "dpkg-deb"),
]


HOST_ARCH = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
# ELF e_machine of each Debian architecture: every shared object in a package must be built for it.
ELF_MACHINES = {"amd64": 62, "arm64": 183}


@pytest.fixture(scope="module", params=[HOST_ARCH, pytest.param("arm64", marks=pytest.mark.arm64)],
                ids=["host", "arm64"])
def arch(request: pytest.FixtureRequest) -> str:
    if request.param != HOST_ARCH:
        if not arm64_asked(request.config):
            pytest.skip("the arm64 package is checked only when asked for: pytest -m arm64")
        if arm64_missing():
            pytest.skip(arm64_missing())
    return request.param


@pytest.fixture(scope="module")
def deb(arch: str) -> Path:
    path, seconds = build_or_reuse_deb(None if arch == HOST_ARCH else arch)
    if seconds is not None:
        print(f"{arch} .deb built in {seconds:.0f} s")
    return path


def test_name_and_control(deb: Path, arch: str):
    version = re.search(r'^version = "(.+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    assert deb.name == f"pirag_{version}_{arch}.deb"
    control = subprocess.run(["dpkg-deb", "-f", str(deb)], capture_output=True, text=True, check=True).stdout
    assert f"Version: {version}" in control and f"Architecture: {arch}" in control
    depends = re.search(r"^Depends: (.*)$", control, re.M).group(1)
    assert "python3 (>= 3.11)" in depends and "python3 (<< 3.12)" in depends, depends
    assert "init-system-helpers" in depends


def test_contents(deb: Path, arch: str):
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    paths = {line.split()[5].lstrip(".") for line in listing.splitlines()}
    for expected in ("/opt/pirag/bin/pirag", "/opt/pirag/bin/python3", "/lib/systemd/system/pirag.service",
                     "/lib/systemd/system/pirag.socket", "/usr/lib/sysusers.d/pirag.conf",
                     "/usr/lib/tmpfiles.d/pirag.conf", "/etc/pirag/pirag.toml", "/usr/bin/pirag",
                     "/usr/share/doc/pirag/copyright", "/usr/share/lintian/overrides/pirag"):
        assert expected in paths, expected
    # The default model's files come along: installing needs no network.
    assert any("all_minilm_l6_v2/model.zip" in path for path in paths)
    assert not any("__pycache__" in path for path in paths)
    # Everything is root's (dpkg-deb --root-owner-group).
    assert all(line.split()[1] == "root/root" for line in listing.splitlines())
    conffiles = subprocess.run(["dpkg-deb", "-I", str(deb), "conffiles"], capture_output=True, text=True,
                               check=True).stdout.split()
    assert conffiles == ["/etc/pirag/pirag.toml"]
    packaged = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout
    assert packaged  # readable
    config = subprocess.run(
        f"dpkg-deb --fsys-tarfile {deb} | tar -xOf - ./etc/pirag/pirag.toml", shell=True,
        capture_output=True, check=True).stdout
    assert config == (REPO / "configs" / "pirag.toml").read_bytes()


def lintian_output(deb: Path) -> str:
    """lintian's findings for this exact .deb. lintian needs minutes for the venv's ~10,000 files, so its
    output is kept next to the cached .deb, keyed by the .deb's hash and lintian's version."""
    version = subprocess.run(["lintian", "--version"], capture_output=True, text=True).stdout.strip().split()[-1]
    digest = hashlib.sha256()
    with open(deb, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    cached = deb.with_name(f"{deb.name}.lintian-{version}-{digest.hexdigest()[:16]}.txt")
    if cached.exists():
        return cached.read_text()
    result = subprocess.run(["lintian", "--tag-display-limit", "0", "--display-info", str(deb)],
                            capture_output=True, text=True, timeout=1800)
    if result.returncode not in (0, 2):  # 2: it found errors (checked by the caller); 1: it could not run
        raise AssertionError(f"lintian failed ({result.returncode}): {result.stderr[-2000:]}")
    try:
        cached.write_text(result.stdout)
    except OSError:
        pass
    return result.stdout


@require_tools("lintian")
def test_lintian(deb: Path):
    output = lintian_output(deb)
    lines = [line for line in output.splitlines() if re.match(r"^[EWIX]: ", line)]
    errors = [line for line in lines if line.startswith("E: ")]
    assert not errors, "\n".join(errors)
    warned = sorted({line.split()[2] for line in lines if line.startswith("W: ")})
    print("lintian warnings:", warned or "none")
    documented = (REPO / "docs" / "INSTALL.md").read_text()
    missing = [tag for tag in warned if f"`{tag}`" not in documented]
    assert not missing, f"lintian warnings not explained in docs/INSTALL.md: {missing}"


def test_every_shared_object_is_for_the_package_architecture(deb: Path, arch: str):
    """A wheel of the wrong architecture (an x86-64 one in the arm64 package) would install and then fail to
    load on the Pi: every ELF file's e_machine must be the package's."""
    wrong, elf_count = [], 0
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as unpack:
        with tarfile.open(fileobj=unpack.stdout, mode="r|") as archive:  # streamed: the tree is ~600 MB
            for member in archive:
                if not member.isfile() or member.size < 64:
                    continue
                head = archive.extractfile(member).read(20)
                if head[:4] != b"\x7fELF":
                    continue
                elf_count += 1
                if int.from_bytes(head[18:20], "little") != ELF_MACHINES[arch]:
                    wrong.append(member.name)
        unpack.stdout.read()  # the archive's trailing blocks: dpkg-deb must finish, not die of a closed pipe
    assert unpack.returncode == 0
    assert elf_count > 20, elf_count  # llama.cpp, numpy, chromadb, onnxruntime, ...
    assert not wrong, wrong[:20]
    if arch == "arm64":
        # One package for both Pis: ggml's run-time CPU variants for the Pi 4 (armv8.0) and the Pi 5 (dotprod).
        listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
        for variant in ("armv8.0_1", "armv8.2_2"):
            assert f"libggml-cpu-{variant}.so" in listing, variant
