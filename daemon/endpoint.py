"""The listening Unix socket: where it lives, who may hold it, and who is on the other end.

- A lock file beside the socket (``pirag.sock.lock``, flock) says a live daemon owns the path. A second
  daemon refuses to start; a socket file left by a dead daemon (no lock holder) is taken over.
- The socket is bound under an explicit umask, then given its configured mode (0660) inside a 0750 directory.
- A socket passed by systemd (socket activation) is used as it is and never unlinked: systemd owns it.
- Peer credentials come from SO_PEERCRED (pid, uid, gid) and SO_PEERGROUPS (supplementary groups).
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

from .app import Peer

SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
MAX_SOCKET_PATH = 107


class EndpointError(Exception):
    """The socket cannot be set up; the message says why and what to do."""


@dataclass
class Endpoint:
    path: Path
    sock: socket.socket
    owned: bool              # True: we created the file and remove it at exit; False: systemd owns it
    lock_fd: int | None

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
        if self.owned:
            try:
                if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                    os.unlink(self.path)
            except FileNotFoundError:
                pass
        if self.lock_fd is not None:
            os.close(self.lock_fd)  # releases the flock; the lock file itself stays (harmless, reused)
            self.lock_fd = None


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _acquire_lock(path: Path) -> int:
    lock_path = _lock_path(path)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EACCES):
            raise EndpointError(
                f"another pirag daemon (pid {holder}) is already serving on {path}; "
                "stop it first (`systemctl stop pirag` or kill it), or use another --socket") from exc
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def bind_endpoint(path: Path, mode: int = 0o660, backlog: int = 1024) -> Endpoint:
    """Create the directory (0750), take the lock, remove a stale socket, bind and listen."""
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise EndpointError(f"socket path {path} is longer than {MAX_SOCKET_PATH} bytes (the Unix limit)")
    directory = path.parent
    if not directory.exists():
        directory.mkdir(mode=0o750, parents=True, exist_ok=True)
        os.chmod(directory, 0o750)  # mkdir's mode is filtered by the umask
    lock_fd = _acquire_lock(path)
    try:
        try:
            existing = os.lstat(path)
        except FileNotFoundError:
            existing = None
        if existing is not None:
            if not stat.S_ISSOCK(existing.st_mode):
                raise EndpointError(f"{path} exists and is not a socket; refusing to replace it")
            os.unlink(path)  # stale: we hold the lock, so no live daemon owns it
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o777 & ~mode)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old_umask)
        os.chmod(path, mode)
        sock.listen(backlog)  # the server passes the same backlog again: create_unix_server re-listens
        sock.setblocking(False)
    except BaseException:
        os.close(lock_fd)
        raise
    return Endpoint(path=path, sock=sock, owned=True, lock_fd=lock_fd)


def adopt_endpoint(sock: socket.socket) -> Endpoint:
    """Wrap a socket inherited from systemd: never unlinked by us, no lock (systemd serializes starts)."""
    sock.setblocking(False)
    name = sock.getsockname()
    path = Path(name if isinstance(name, str) else name.decode())
    return Endpoint(path=path, sock=sock, owned=False, lock_fd=None)


def peer_of(sock: socket.socket | None) -> Peer:
    if sock is None:
        return Peer(None, None, None)
    try:
        pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                            struct.calcsize("3i")))
    except OSError:
        return Peer(None, None, None)
    return Peer(pid, uid, gid)


def peer_groups(sock: socket.socket) -> set[int]:
    """Supplementary groups of the peer (SO_PEERGROUPS, Linux >= 4.13); empty when unsupported."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * 256)
    except OSError:
        return set()
    return set(struct.unpack(f"{len(raw) // 4}I", raw))


def peer_allowed(sock: socket.socket | None, peer: Peer, allowed_uids: list[int], allowed_gids: list[int]) -> bool:
    """The daemon's own uid and root are always allowed; then the lists, by uid, primary gid or any group."""
    if peer.uid is None:
        return False
    if peer.uid in (0, os.getuid()) or peer.uid in allowed_uids:
        return True
    if not allowed_gids:
        return False
    if peer.gid in allowed_gids:
        return True
    return sock is not None and bool(peer_groups(sock) & set(allowed_gids))
