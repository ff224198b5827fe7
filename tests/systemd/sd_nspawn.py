"""A real systemd, booted as PID 1 of a systemd-nspawn container with its own bookworm root (FINDINGS.md).

DANGER (FINDINGS.md): systemd must never be started on this machine's own root, not even in ``unshare``.
This module only ever boots it with ``systemd-nspawn --boot -D <a freshly unpacked debootstrap tree>``; it
refuses a directory that is ``/`` or is not below the cache's work directory.

The tree comes from ``packaging/rootfs.sh boot`` (cached tarball); the container has no network
(``--private-network``), so the .deb is proven to install offline. Commands run inside with
``nsenter -t <container PID 1> -a``.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from sd_helpers import REPO

CACHE = Path(os.environ.get("PIRAG_CACHE", "/var/cache/pirag"))
CONTAINER_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

# The inputs of the .deb: a change in any of them means a new build; otherwise the cached one is reused.
DEB_INPUTS = ("pyproject.toml", "client", "daemon", "stress", "configs", "systemd", "packaging", "docs/INSTALL.md")


def source_fingerprint() -> str:
    digest = hashlib.sha256()
    for top in DEB_INPUTS:
        base = REPO / top
        paths = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file()) if base.exists() else []
        for path in paths:
            if "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def arm64_missing() -> str | None:
    """Why this machine cannot build and run the arm64 package under emulation, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (debootstrap, systemd-nspawn)"
    binfmt = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    try:
        registered = "enabled" in binfmt.read_text()
    except OSError:
        registered = False
    if not registered:
        return ("qemu-aarch64 is not registered with binfmt_misc (apt-get install qemu-user-static binfmt-support; "
                "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; update-binfmts --enable qemu-aarch64)")
    for tool in ("debootstrap", "systemd-nspawn", "nsenter", "dpkg-deb"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not os.environ.get("PIRAG_ARM64_DEB") and shutil.which("aarch64-linux-gnu-g++") is None:
        return "g++-aarch64-linux-gnu is not installed (needed to build the arm64 .deb)"
    return None


def arm64_asked(config) -> bool:
    """The arm64 package's checks (a cross build of half an hour, then emulation) run only when asked for with
    ``pytest -m arm64``, never inside a plain run of the whole suite."""
    return "arm64" in (config.option.markexpr or "")


def build_or_reuse_deb(arch: str | None = None) -> tuple[Path, float | None]:
    """The .deb for the current source (built with packaging/build-deb unless cached); (path, build seconds).
    ``arch``: None for this machine's architecture, or ``arm64`` (cross-built on x86-64; PIRAG_ARM64_DEB=path
    takes a given one)."""
    given = os.environ.get("PIRAG_ARM64_DEB" if arch else "PIRAG_DEB")
    if given:
        return Path(given), None
    out = CACHE / (f"debs-{arch}" if arch else "debs") / source_fingerprint()
    out.parent.mkdir(parents=True, exist_ok=True)
    # One build at a time: a second test process waits for the first one's .deb instead of building it again.
    with open(out.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = sorted(out.glob("pirag_*.deb"))
        if found:
            return found[-1], None
        started = time.monotonic()
        # A cross build compiles llama.cpp for aarch64 and lays out the venv under qemu-user: far slower.
        command = [str(REPO / "packaging" / "build-deb"), *(["--arch", arch] if arch else []), str(out)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=5400 if arch else 1800)
        if result.returncode != 0:
            raise RuntimeError(f"packaging/build-deb failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
        # Keep the cache from growing: the two newest builds stay.
        builds = sorted((d for d in out.parent.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime)
        for stale in builds[:-2]:
            shutil.rmtree(stale, ignore_errors=True)
        return Path(result.stdout.strip().splitlines()[-1]), time.monotonic() - started


class Container:
    """One booted bookworm container. Use as a context manager; it powers off and is deleted at exit."""

    def __init__(self, log_path: Path, arch: str | None = None, boot_timeout: float = 60) -> None:
        """``arch``: a Debian architecture other than this machine's (``arm64``: its tree runs under qemu-user,
        booting takes minutes, hence ``boot_timeout``)."""
        self.log_path = log_path
        self.arch = arch
        self.boot_timeout = boot_timeout
        self.root: Path | None = None
        self.process: subprocess.Popen | None = None
        self.pid1: int | None = None
        self.timings: dict[str, float] = {}

    # ----- life cycle ----------------------------------------------------------------------------------------

    def __enter__(self) -> "Container":
        work = CACHE / "work"
        work.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="boot.", dir=work)) / "root"
        started = time.monotonic()
        subprocess.run([str(REPO / "packaging" / "rootfs.sh"), "boot", str(self.root)], check=True,
                       capture_output=True, timeout=900,
                       env=dict(os.environ, PIRAG_ARCH=self.arch) if self.arch else None)
        self.timings["unpack_tree_s"] = time.monotonic() - started
        return self

    def boot(self) -> None:
        assert self.root is not None
        root = self.root.resolve()
        # The DANGER rule, enforced: only a tree of our own, never the machine's root.
        if root == Path("/") or (CACHE / "work").resolve() not in root.parents or not (root / "etc/os-release").exists():
            raise RuntimeError(f"refusing to boot systemd on {root}")
        started = time.monotonic()
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            ["systemd-nspawn", "-q", "-D", str(root), "--boot", "--register=no", "--keep-unit",
             "--private-network", "--console=pipe"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + self.boot_timeout
        while self.pid1 is None:
            if self.process.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no systemd in the container after {self.boot_timeout} s: {self.log_tail()}")
            self.pid1 = self._find_systemd(self.process.pid)
            time.sleep(0.05)
        state = ""
        while not state:  # until PID 1's private bus is up, systemctl cannot even ask
            state = self.run("systemctl", "is-system-running", "--wait", timeout=max(120, self.boot_timeout),
                             check=False).stdout.strip()
            if not state:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        if state not in ("running", "degraded"):
            raise RuntimeError(f"container state {state!r}: {self.log_tail()}")
        self.timings["boot_s"] = time.monotonic() - started

    @staticmethod
    def _find_systemd(ancestor: int) -> int | None:
        """The descendant of ``ancestor`` whose comm is ``systemd`` (the container's PID 1)."""
        children: dict[int, list[int]] = {}
        comms: dict[int, str] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(entry))
            comms[int(entry)] = comm
        stack = list(children.get(ancestor, []))
        while stack:
            pid = stack.pop()
            if comms.get(pid) == "systemd":
                return pid
            stack.extend(children.get(pid, []))
        return None

    def __exit__(self, *exc: object) -> None:
        try:
            if self.process is not None and self.process.poll() is None:
                if self.pid1 is not None:
                    self.run("systemctl", "poweroff", "--no-block", check=False, timeout=30)
                try:
                    self.process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(self.process.pid, signal.SIGKILL)
                    self.process.wait(timeout=30)
        finally:
            if self.root is not None and os.environ.get("PIRAG_KEEP_CONTAINER") != "1":
                shutil.rmtree(self.root.parent, ignore_errors=True)

    # ----- inside ----------------------------------------------------------------------------------------------

    def run(self, *argv: str, check: bool = True, timeout: float = 120,
            user: str | None = None) -> subprocess.CompletedProcess:
        """Run ``argv`` inside the booted container (as ``user`` through runuser when given)."""
        assert self.pid1 is not None, "container not booted"
        if user is not None:
            argv = ("runuser", "-u", user, "--", *argv)
        command = ["nsenter", "-t", str(self.pid1), "-a", "env", "-i", f"PATH={CONTAINER_PATH}",
                   "LANG=C.UTF-8", "HOME=/root", *argv]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} -> {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result

    def sh(self, script: str, **kwargs) -> subprocess.CompletedProcess:
        return self.run("sh", "-ec", script, **kwargs)

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        output = self.run("systemctl", "show", unit, "-p", ",".join(properties)).stdout
        return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)

    def start_and_watch(self, unit: str, timeout: float, poll: float = 0.02) -> tuple[dict[str, str], list[str], float]:
        """``systemctl start --no-block unit``, then its ActiveState polled until active or failed (or
        ``timeout``): (last properties, every state seen, seconds taken). Type=notify: active only after READY=1."""
        started = time.monotonic()
        self.run("systemctl", "start", "--no-block", unit)
        states = []
        while True:
            props = self.show(unit, "ActiveState", "SubState", "StatusText")
            states.append(props["ActiveState"])
            if props["ActiveState"] in ("active", "failed") or time.monotonic() - started > timeout:
                return props, states, time.monotonic() - started
            time.sleep(poll)

    def journal(self, unit: str) -> str:
        return self.run("journalctl", "--no-pager", "-o", "short-monotonic", "-u", unit, check=False).stdout

    def write(self, path: str, text: str) -> None:
        assert self.root is not None
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
