"""Run locks: an exclusive ``flock`` on a file, held for a run, that notices its file going.

A ``flock`` is on the open file, not on its name: a lock file deleted (or replaced) while a run
holds it leaves the run locked on a file no one else can see, and the next run creates a new
one and locks that: two runs at once. :meth:`RunLock.still_held` tells: the file at the path is
still ours, or it was recreated and locked again; False when another run has taken the path
meanwhile, and the caller must stop.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import IO

from orchestrator.layout import owner_only


class Held(Exception):
    """Another process holds the lock; ``holder`` is its pid as it wrote it (may be empty)."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is held" + (f" by pid {holder}" if holder else ""))
        self.path = path
        self.holder = holder

    @property
    def who(self) -> str:
        return f" (pid {self.holder})" if self.holder else ""


def _take(path: Path) -> IO[str]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    owner_only(fd)
    handle = os.fdopen(fd, "r+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = handle.read().strip()
        handle.close()
        raise Held(path, holder) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


class RunLock:
    """Held from construction (raises :class:`Held`) until :meth:`release`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: IO[str] | None = _take(path)

    def still_held(self) -> bool:
        """Whether this process still holds the lock on the file at the path: a removed or
        replaced file is created (or opened) and locked again; False when another process got
        it first. An error that says nothing about the lock is not a reason to stop: True."""
        handle = self._handle
        if handle is None:
            return False
        try:
            if os.stat(self.path).st_ino == os.fstat(handle.fileno()).st_ino:
                return True
        except FileNotFoundError:
            pass
        except OSError:
            return True
        try:
            self._handle = _take(self.path)
        except Held:
            self._handle = None
            return False
        except OSError:
            return True
        with contextlib.suppress(OSError):
            handle.close()
        return True

    def release(self) -> None:
        handle, self._handle = self._handle, None
        if handle is None:
            return
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        finally:
            handle.close()


def holder(path: Path) -> Held | None:
    """Who holds the lock at ``path`` (a :class:`Held`), or None when no process does; looks
    only: the file is neither created nor written, and the lock is not kept."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None  # no lock file: no run holds it
    with os.fdopen(fd, "r") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return Held(path, handle.read().strip())
        except OSError:
            return None
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return None
