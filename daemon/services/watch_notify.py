"""inotify for one watched directory: a ``watchfiles`` notifier on a thread of its own, its limits made visible.

``watchfiles`` (its Rust ``notify`` backend uses inotify on Linux) groups the raw events; its thread sleeps in
steps of ``STEP_MS`` with the GIL released, so an idle watch costs a few wake-ups a second and no scanning. The
changed paths are handed to the event loop with ``call_soon_threadsafe``; the watch service decides what to sync.

The kernel's limits are the trap. ``fs.inotify.max_user_instances`` (one per watch here) or
``fs.inotify.max_user_watches`` (one per directory) reached while starting raises at once; but a directory
created later, past the watch limit, is silently left unwatched by ``notify``. ``unwatched()`` therefore counts,
from ``/proc/self/fdinfo``, the directories a walk visited that the kernel does not watch. ``notify`` also loses
the watches of a directory renamed inside the tree now and then (seen in the tests): the watch service first
starts a fresh notifier (it walks the whole tree), and only when that one is short too does it fall back to
periodic rescans and say so in ``status`` (``inotify_limit``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable

from pirag.client.protocol.watch import INOTIFY_LIMIT, PATH_MISSING, PATH_UNREADABLE

log = logging.getLogger("pirag.watch")

STEP_MS = 100        # watchfiles' poll of its event set: a burst ends after one quiet step
DEBOUNCE_MS = 1000   # ... or after this long, whatever keeps coming


class NotifyUnavailable(Exception):
    """inotify could not be had for this directory (``code``: a watch error code)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def classify(exc: BaseException) -> NotifyUnavailable:
    """A watchfiles/notify error -> a watch error code and a message for people."""
    text = str(exc)
    lowered = text.lower()
    if "watch limit" in lowered or "no space left" in lowered:
        return NotifyUnavailable(INOTIFY_LIMIT, "the inotify watch limit is reached (fs.inotify.max_user_watches = "
                                 f"{read_limit('max_user_watches')}): rescanning periodically instead ({text})")
    if "too many open files" in lowered or getattr(exc, "errno", None) == 24:
        return NotifyUnavailable(INOTIFY_LIMIT, "no inotify instance left (fs.inotify.max_user_instances = "
                                 f"{read_limit('max_user_instances')}): rescanning periodically instead ({text})")
    if isinstance(exc, FileNotFoundError) or "no such file" in lowered or "not found" in lowered:
        return NotifyUnavailable(PATH_MISSING, text)
    if isinstance(exc, PermissionError) or "permission denied" in lowered:
        return NotifyUnavailable(PATH_UNREADABLE, text)
    return NotifyUnavailable(INOTIFY_LIMIT if isinstance(exc, OSError) else PATH_UNREADABLE, text)


def read_limit(name: str) -> int | None:
    for path in (f"/proc/sys/user/max_inotify_{name.removeprefix('max_user_')}", f"/proc/sys/fs/inotify/{name}"):
        try:
            with open(path) as handle:
                return int(handle.read().strip())
        except (OSError, ValueError):
            continue
    return None


class TreeWatcher:
    """One inotify notifier for ``path`` (recursive), feeding ``on_changes(paths)`` on the event loop."""

    def __init__(self, path: str, loop: asyncio.AbstractEventLoop, on_changes: Callable[[set[str]], None],
                 on_failure: Callable[[NotifyUnavailable], None]):
        self.path = path
        self._loop = loop
        self._on_changes = on_changes
        self._on_failure = on_failure
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._notify = None
        self._fds: set[int] = set()

    def start(self) -> None:
        """Create the notifier (blocking: it walks the tree to add the kernel watches); raises
        ``NotifyUnavailable``. Call it on a worker thread."""
        from watchfiles._rust_notify import RustNotify  # watchfiles' own entry under watch()/awatch()

        before = _inotify_fds()
        try:
            # no polling fallback inside notify (it would stat the whole tree every few hundred ms); denied
            # subdirectories are left out instead of failing the whole watch (the walk reports them)
            self._notify = RustNotify([self.path], False, False, 300, True, True)
        except Exception as exc:
            raise classify(exc) from exc
        self._fds = _inotify_fds() - before
        self._thread = threading.Thread(target=self._run, name="pirag-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and release the inotify instance (blocking up to one step)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._notify is not None:
            self._notify.close()
            self._notify = None

    def unwatched(self, directories: set[tuple[int, int]]) -> int:
        """How many of ``directories`` (``(st_dev, st_ino)``) the kernel does not watch for this notifier;
        0 when that cannot be read (no fdinfo)."""
        watched: set[int] = set()
        for fd in self._fds:
            try:
                with open(f"/proc/self/fdinfo/{fd}") as handle:
                    for line in handle:
                        if line.startswith("inotify wd:"):
                            for part in line.split():
                                if part.startswith("ino:"):
                                    watched.add(int(part[4:], 16))
            except (OSError, ValueError):
                return 0
        if not self._fds:
            return 0
        return sum(1 for _, inode in directories if inode not in watched)

    def _run(self) -> None:
        notify = self._notify
        while not self._stop.is_set() and notify is not None:
            try:
                changes = notify.watch(DEBOUNCE_MS, STEP_MS, 0, self._stop)
            except Exception as exc:  # notify's own thread failed (e.g. the watched tree vanished)
                failure = classify(exc)
                log.warning("watch %s: inotify stopped: %s", self.path, failure)
                self._call(self._on_failure, failure)
                return
            if isinstance(changes, set) and changes:
                self._call(self._on_changes, {path for _, path in changes})

    def _call(self, callback: Callable[..., None], value: object) -> None:
        try:
            self._loop.call_soon_threadsafe(callback, value)
        except RuntimeError:  # the loop is closed: the daemon is stopping
            pass


def _inotify_fds() -> set[int]:
    found = set()
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return found
    for name in names:
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "anon_inode:inotify":
                found.add(int(name))
        except (OSError, ValueError):
            continue
    return found
