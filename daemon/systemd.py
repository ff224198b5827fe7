"""systemd integration: readiness/status/watchdog notifications, socket activation, and resource facts.

Everything here does nothing outside systemd: without ``NOTIFY_SOCKET`` the :class:`Notifier` is disabled and
every call returns at once; without ``LISTEN_FDS`` :func:`inherited_socket` returns ``None``. Nothing here raises
to the caller: a failed notification is logged (the first failure at WARNING, later ones rate-limited) and the
daemon keeps serving. The watchdog is pinged by the server from its own event-loop tick, so a stalled loop
stops the pings and systemd restarts the daemon (``WatchdogSec=`` in ``systemd/pirag.service``).

Sending goes through the ``sdnotify`` package with ``debug=True``; it otherwise swallows every error
(FINDINGS.md). It does not read ``WATCHDOG_USEC``; :meth:`Notifier.watchdog_interval` does.

A leaf module: anything may import it. Modelled on gunicorn's ``gunicorn/systemd.py`` and nobodd's
``nobodd/systemd.py`` (STYLE.md 5).
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from pathlib import Path

log = logging.getLogger("pirag.systemd")

SD_LISTEN_FDS_START = 3
# After the first failed send, log one failure in this many (a dead NOTIFY_SOCKET and a 10 s watchdog
# would otherwise fill the journal).
_FAILURE_LOG_EVERY = 100


def _one_line(text: str) -> str:
    """A STATUS= value: one line, ASCII (sdnotify encodes as latin-1; systemd wants UTF-8, ASCII is both)."""
    text = " ".join(text.split())
    return text.encode("ascii", "backslashreplace").decode("ascii")


class Notifier:
    """sd_notify(3) for the daemon. ``enabled`` is False (and every method a no-op) outside systemd."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or log
        self._failures = 0
        self._notifier = None
        self.enabled = False
        address = os.environ.get("NOTIFY_SOCKET", "")
        if not address:
            return
        try:
            import sdnotify

            # debug=True: sdnotify raises instead of silently dropping; we catch, log and carry on.
            self._notifier = sdnotify.SystemdNotifier(debug=True)
            self.enabled = True
        except Exception as exc:  # noqa: BLE001 - never raise out of systemd glue
            self._log.warning("systemd: cannot connect to NOTIFY_SOCKET=%s: %s: %s; notifications disabled",
                              address, type(exc).__name__, exc)

    def _send(self, message: str) -> None:
        if not self.enabled or self._notifier is None:
            return
        try:
            self._notifier.notify(message)
        except Exception as exc:  # noqa: BLE001
            self._failures += 1
            if self._failures == 1 or self._failures % _FAILURE_LOG_EVERY == 0:
                first_field = message.split("\n", 1)[0]
                self._log.warning("systemd: sd_notify %r failed (%d failure(s) so far): %s: %s",
                                  first_field, self._failures, type(exc).__name__, exc)
        else:
            if self._failures:
                self._log.info("systemd: sd_notify works again after %d failure(s)", self._failures)
                self._failures = 0

    def ready(self, status: str = "") -> None:
        """The socket listens, the stores are open and the model is warm."""
        message = "READY=1"
        if status:
            message += f"\nSTATUS={_one_line(status)}"
        self._send(message)

    def status(self, text: str) -> None:
        self._send(f"STATUS={_one_line(text)}")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def reloading(self) -> None:
        """Start of a SIGHUP reload; follow with :meth:`ready` when done. MONOTONIC_USEC lets systemd >= 253
        match this message to the reload it asked for; older versions ignore it."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def extend_timeout(self, seconds: float) -> None:
        """Ask for ``seconds`` more from now before the start (or stop) timeout fires."""
        usec = max(1, int(seconds * 1_000_000))
        self._send(f"EXTEND_TIMEOUT_USEC={usec}")

    def watchdog_interval(self) -> float | None:
        """Seconds between pings (half of ``WATCHDOG_USEC``), or None when the watchdog is not ours."""
        if not self.enabled:
            return None
        return watchdog_interval()

    def watchdog_ping(self) -> None:
        self._send("WATCHDOG=1")


def watchdog_interval(env: dict[str, str] | None = None, pid: int | None = None) -> float | None:
    """Half of ``WATCHDOG_USEC`` in seconds when it is set and ``WATCHDOG_PID`` is absent or this process."""
    env = os.environ if env is None else env
    pid = os.getpid() if pid is None else pid
    raw_usec = env.get("WATCHDOG_USEC", "")
    if not raw_usec:
        return None
    watchdog_pid = env.get("WATCHDOG_PID", "")
    try:
        if watchdog_pid and int(watchdog_pid) != pid:
            return None
        usec = int(raw_usec)
    except ValueError:
        log.warning("systemd: ignoring malformed WATCHDOG_USEC=%r / WATCHDOG_PID=%r", raw_usec, watchdog_pid)
        return None
    if usec <= 0:
        return None
    return usec / 2 / 1_000_000


def inherited_socket(name: str | None = None) -> socket.socket | None:
    """The listening socket systemd (or ``systemd-socket-activate``) passed us, else None.

    Taken only when ``LISTEN_PID`` is this process. With ``name`` and ``LISTEN_FDNAMES`` set, the socket of that
    name; otherwise the first passed socket. The ``LISTEN_*`` variables are removed from the environment after
    the call (children must not think the sockets are theirs) and every passed fd gets close-on-exec.
    The caller must never unlink this socket's path: systemd owns it and keeps it across daemon restarts.
    """
    env = os.environ
    listen_pid = env.get("LISTEN_PID", "")
    if not listen_pid.strip().isdigit() or int(listen_pid) != os.getpid():
        return None
    # Ours: take the variables out of the environment whatever happens next.
    raw_count = env.pop("LISTEN_FDS", "0")
    names_raw = env.pop("LISTEN_FDNAMES", "")
    env.pop("LISTEN_PID", None)
    try:
        count = int(raw_count)
    except ValueError:
        log.warning("systemd: ignoring malformed LISTEN_FDS=%r", raw_count)
        return None
    if count <= 0:
        return None
    fds = list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count))
    for fd in fds:
        try:
            flags = fcntl.fcntl(fd, fcntl.F_GETFD)
            fcntl.fcntl(fd, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)
        except OSError as exc:
            log.warning("systemd: passed fd %d is not open: %s", fd, exc)
    names = names_raw.split(":") if names_raw else []
    chosen = fds[0]
    if name is not None and names:
        if name not in names:
            log.warning("systemd: no passed socket named %r (names: %s); not using socket activation",
                        name, ", ".join(names))
            return None
        chosen = fds[names.index(name)]
    try:
        sock = socket.socket(fileno=chosen)
    except OSError as exc:
        log.warning("systemd: passed fd %d is not a socket: %s", chosen, exc)
        return None
    try:
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    except OSError:
        listening = 1
    if not listening:
        log.warning("systemd: passed fd %d is not a listening socket", chosen)
    log.info("systemd: using the activated socket fd %d (%s)", chosen, sock.getsockname() or "unnamed")
    return sock


def memory_cgroup_available() -> bool:
    """True when the memory cgroup controller is enabled, so MemoryMax/MemoryHigh are enforced.

    cgroup v2: ``memory`` in ``/sys/fs/cgroup/cgroup.controllers``. v1/hybrid: the ``memory`` line of
    ``/proc/cgroups`` has enabled = 1. Raspberry Pi kernels disable it unless booted with ``cgroup_enable=memory``.
    """
    controllers = Path("/sys/fs/cgroup/cgroup.controllers")
    try:
        return "memory" in controllers.read_text().split()
    except OSError:
        pass
    try:
        for line in Path("/proc/cgroups").read_text().splitlines():
            fields = line.split()
            if len(fields) >= 4 and fields[0] == "memory":
                return fields[3] == "1"
    except OSError:
        pass
    return False


def cpu_count() -> int:
    """CPUs this process may run on (honours systemd's CPUAffinity=, unlike os.cpu_count())."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
