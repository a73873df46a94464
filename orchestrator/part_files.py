"""Files made durable: a download is written to a temporary file beside its final name, hashed
as it is written, then fsync-ed and renamed into place (readers see the old file or the whole
new one), and the directory entry fsync-ed. A failure removes the temporary file; one a killed
run left behind is recognised by its name (:data:`PART_NAME`).

A body small enough to hold in memory is placed by :func:`place_whole`: created, written,
hashed, fsync-ed and renamed in one call (one trip to a worker thread instead of one per step).
The directory's fsync may be left to the caller (``sync_dir=False``), who then calls
:func:`fsync_dir` once for several files of one folder, before recording any of them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
from pathlib import Path

__all__ = ["PART_NAME", "PartFile", "fsync_dir", "hash_file", "place_whole", "prepare_dir"]

#: Our temporary files: ``.<index>.<16 hex digits>.part`` (see :meth:`PartFile.create`).
PART_NAME = re.compile(r"\.[0-9]+\.[0-9a-f]{16}\.part")
_CHUNK = 1024 * 1024


class PartFile:
    """The temporary file a download is written to; hashed as it is written."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd: int | None = fd
        self.size = 0
        self.digest = hashlib.sha256()
        self.committed = False
        #: The file's modification time once committed (as ``os.stat`` gives it).
        self.mtime_ns: int | None = None

    @classmethod
    def create(cls, directory: Path, index: int) -> PartFile:
        path = directory / f".{index}.{secrets.token_hex(8)}.part"  # matches PART_NAME
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        flags |= getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
        # 0o644 before the umask: users open generated files, unlike state and logs.
        return cls(path, os.open(path, flags, 0o644))

    def write(self, chunk: bytes) -> None:
        assert self.fd is not None
        view = memoryview(chunk)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
        self.digest.update(chunk)
        self.size += len(chunk)

    def commit(self, final: Path, *, sync_dir: bool = True) -> None:
        """fsync the data, rename into place, fsync the directory entry (unless ``sync_dir`` is
        False: the caller then syncs the folder before it records the file)."""
        assert self.fd is not None
        os.fsync(self.fd)
        self.mtime_ns = os.fstat(self.fd).st_mtime_ns  # a rename keeps it
        fd, self.fd = self.fd, None
        os.close(fd)
        os.replace(self.path, final)
        self.committed = True
        if sync_dir:
            fsync_dir(final.parent)

    def discard(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            with contextlib.suppress(OSError):
                os.close(fd)
        if not self.committed:
            with contextlib.suppress(OSError):
                os.unlink(self.path)


def place_whole(
    directory: Path, index: int, data: bytes, name: str, *, sync_dir: bool = True
) -> PartFile:
    """``data`` made durable as ``directory/name`` through a part file: the committed part
    (its size, digest and mtime). Nothing is left behind when it raises."""
    part = PartFile.create(directory, index)
    try:
        part.write(data)
        part.commit(directory / name, sync_dir=sync_dir)
    finally:
        part.discard()
    return part


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new entry in ``directory`` durable (best effort: not on Windows, and
    some file systems refuse to fsync a directory)."""
    if os.name == "nt":
        return
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def prepare_dir(directory: Path) -> None:
    if directory.is_dir():
        return
    directory.mkdir(parents=True, exist_ok=True)
    fsync_dir(directory.parent)


def hash_file(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()
